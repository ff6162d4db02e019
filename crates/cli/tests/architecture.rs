//! ARCHITECTURE.md's dependency table is the workspace's: every crate's pinnersage
//! dependencies, as `cargo metadata` reports them, are the ones the table lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// The crate's directory name under `crates/` for a package name.
fn short(package: &str) -> String {
    match package {
        "pinnersage" => "cli".into(),
        other => other.trim_start_matches("pinnersage-").into(),
    }
}

/// `crate -> pinnersage dependencies` from the table under "Code map".
fn documented(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    text.lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let name = cells[0].trim_matches('`').to_owned();
            let deps = match cells[2] {
                "none" => BTreeSet::new(),
                list => list.split(',').map(|d| d.trim().to_owned()).collect(),
            };
            (name, deps)
        })
        .collect()
}

/// `crate -> pinnersage dependencies` (normal ones, not dev or build) from `cargo metadata`.
fn actual(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut crates = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let deps = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null() && d["path"].is_string())
            .map(|d| short(d["name"].as_str().unwrap()))
            .collect();
        crates.insert(short(package["name"].as_str().unwrap()), deps);
    }
    crates
}

#[test]
fn the_documented_dependency_table_is_the_workspace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let documented = documented(&text);
    assert!(
        documented.len() >= 10,
        "no dependency table found: {documented:?}"
    );
    assert_eq!(documented, actual(&root));
}
