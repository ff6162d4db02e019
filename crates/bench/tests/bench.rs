//! `pinnersage-bench` runs as its own binary.

use std::process::Command;

use pinnersage_catalog::npy;
use serde_json::Value;

#[test]
fn bench_cluster_reports_one_row_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let x = [
        1.0, 0.0, 0.0, 1.0, 0.995, 0.0998, 0.0998, 0.995, 0.995, -0.0998,
    ];
    let path = dir.path().join("x.npy");
    npy::write_f32_matrix(&path, &x, 5, 2).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pinnersage-bench"))
        .args(["cluster", path.to_str().unwrap(), "--repeat", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["m"], 5);
    assert!(v["profile_ms"].as_f64().unwrap() > 0.0);
    // A bad input is an input error: exit code 2.
    let out = Command::new(env!("CARGO_BIN_EXE_pinnersage-bench"))
        .args(["cluster", path.to_str().unwrap(), "--repeat", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
