#!/usr/bin/env bash
# The Python package's tests: installs the package from source into a venv with the pinned test
# requirements, builds the CLI the tests compare against, and runs pytest. The Spark tests run
# PySpark in local mode and need Java 17 (Debian: openjdk-17-jre-headless); without Java they are
# skipped, with PINNERSAGE_REQUIRE_SPARK=1 (CI) they fail instead. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PINNERSAGE_PY_VENV:-target/py-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
venv=$(realpath "$venv")
"$venv/bin/pip" install -q -r crates/python/requirements-test.txt
# The documented install command: maturin builds the extension in release mode.
"$venv/bin/pip" install -q ./crates/python
cargo build --release --locked --bin pinnersage
export PINNERSAGE_BIN="$PWD/target/release/pinnersage"
# Run from the tests' directory so that `import pinnersage` is the installed package.
cd crates/python/tests
"$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore::FutureWarning "$@" .
# The types: the package checked by mypy, and the native module's stub (_native.pyi) against
# the compiled module by stubtest (names, signatures, constants).
cd ..
"$venv/bin/python" -m mypy --config-file pyproject.toml python/pinnersage
"$venv/bin/python" -m mypy.stubtest --mypy-config-file pyproject.toml pinnersage._native
