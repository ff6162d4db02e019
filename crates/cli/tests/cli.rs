//! The `pinnersage` binary as users call it.

use std::path::{Path, PathBuf};
use std::process::Output;

use pinnersage_catalog::npy;
use serde_json::Value;

mod common;
use common::{RunningServer, Scratch, bin, http};

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

/// A fresh scratch directory per test, removed when the test ends.
fn scratch(name: &str) -> Scratch {
    Scratch::new(&format!("cli-{name}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Two tight groups of actions on the unit circle: rows 0,2,4 near east, 1,3 near north.
fn two_interests(dir: &Path) -> (PathBuf, PathBuf) {
    let x = [
        1.0, 0.0, 0.0, 1.0, 0.995, 0.0998, 0.0998, 0.995, 0.995, -0.0998,
    ];
    let day = 86_400;
    let t = [0, 10 * day, 20 * day, 30 * day, 40 * day];
    let (xp, tp) = (dir.join("x.npy"), dir.join("t.npy"));
    npy::write_f32_matrix(&xp, &x, 5, 2).unwrap();
    npy::write_i64_vector(&tp, &t).unwrap();
    (xp, tp)
}

#[test]
fn cluster_prints_the_documented_json() {
    let dir = scratch("json");
    let (x, t) = two_interests(&dir);
    let v = succeeds_json(&[
        "cluster",
        "--embeddings",
        s(&x),
        "--times",
        s(&t),
        "--alpha",
        "0.5",
        "--json",
    ]);
    let clusters = v["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    let first = clusters[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["importance", "medoid", "members", "size"]);
    assert_eq!(clusters[0]["members"], serde_json::json!([0, 2, 4]));
    assert_eq!(clusters[0]["medoid"], 0);
    assert_eq!(clusters[0]["size"], 3);
    assert_eq!(clusters[1]["members"], serde_json::json!([1, 3]));
    // now = latest time (day 40); ages 40, 20, 0 days and 30, 10 days; lambda 0.01.
    let imp = |ages: &[f64]| ages.iter().map(|a| (-0.01 * a).exp()).sum::<f64>();
    assert!((clusters[0]["importance"].as_f64().unwrap() - imp(&[40.0, 20.0, 0.0])).abs() < 1e-12);
    assert!((clusters[1]["importance"].as_f64().unwrap() - imp(&[30.0, 10.0])).abs() < 1e-12);
}

#[test]
fn without_times_every_action_counts_as_now_and_linkage_is_optional() {
    let dir = scratch("now");
    let (x, _) = two_interests(&dir);
    let v = succeeds_json(&[
        "cluster",
        "--embeddings",
        s(&x),
        "--alpha",
        "0.5",
        "--json",
        "--linkage",
    ]);
    assert_eq!(v["clusters"][0]["importance"], 3.0);
    assert_eq!(v["clusters"][1]["importance"], 2.0);
    let linkage = v["linkage"].as_array().unwrap();
    assert_eq!(linkage.len(), 4);
    assert_eq!(linkage[3][3], 5);

    let table = run(&["cluster", "--embeddings", s(&x), "--alpha", "0.5"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.starts_with("2 interests from 5 actions x 2 dims"),
        "{text}"
    );
}

#[test]
fn cluster_matches_scipy_on_a_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scipy");
    let name = "normalized_m500_d64";
    let alphas = npy::read(dir.join(format!("{name}.alphas.npy")))
        .unwrap()
        .to_f64_vec();
    let labels = npy::read(dir.join(format!("{name}.labels.npy")))
        .unwrap()
        .to_f64_vec();
    let x = dir.join(format!("{name}.X.npy"));
    let m = 500;
    for (a, alpha) in alphas.iter().enumerate() {
        let v = succeeds_json(&[
            "cluster",
            "--embeddings",
            s(&x),
            "--alpha",
            &alpha.to_string(),
            "--json",
        ]);
        let mut ours = vec![usize::MAX; m];
        for (k, c) in v["clusters"].as_array().unwrap().iter().enumerate() {
            for r in c["members"].as_array().unwrap() {
                ours[r.as_u64().unwrap() as usize] = k;
            }
        }
        // Same partition: rows share a cluster here exactly when they share one in scipy.
        let theirs = &labels[a * m..(a + 1) * m];
        for i in 0..m {
            for j in (i + 1..m).step_by(7) {
                assert_eq!(
                    ours[i] == ours[j],
                    theirs[i] == theirs[j],
                    "alpha {alpha}: rows {i}, {j}"
                );
            }
        }
    }
}

/// Runs a command that must succeed; its stdout as text.
fn succeeds(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must succeed; its stdout as JSON.
fn succeeds_json(args: &[&str]) -> Value {
    serde_json::from_str(&succeeds(args)).unwrap()
}

/// Runs a failing command and returns its single stderr line.
fn fails_with_code_2(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());
    err
}

#[test]
fn malformed_inputs_get_one_line_naming_file_and_problem() {
    let dir = scratch("errors");
    let (x, t) = two_interests(&dir);
    let missing = dir.join("missing.npy");
    let err = fails_with_code_2(&["cluster", "--embeddings", s(&missing)]);
    assert!(
        err.starts_with(&format!("error: {}: cannot read", missing.display())),
        "{err}"
    );

    let text = dir.join("text.npy");
    std::fs::write(&text, "1,2,3\n").unwrap();
    let err = fails_with_code_2(&["cluster", "--embeddings", s(&text)]);
    assert!(err.contains("text.npy: not an NPY file"), "{err}");

    let nan = dir.join("nan.npy");
    npy::write_f32_matrix(&nan, &[1.0, 2.0, f32::NAN, 4.0], 2, 2).unwrap();
    let err = fails_with_code_2(&["cluster", "--embeddings", s(&nan)]);
    assert!(
        err.contains("nan.npy: value at row 1, column 0 is not finite"),
        "{err}"
    );

    let short = dir.join("short.npy");
    npy::write_i64_vector(&short, &[1, 2]).unwrap();
    let err = fails_with_code_2(&["cluster", "--embeddings", s(&x), "--times", s(&short)]);
    assert!(err.contains("short.npy: has 2 times but"), "{err}");

    let err = fails_with_code_2(&["cluster", "--embeddings", s(&t)]);
    assert!(err.contains("t.npy: expected a 2-D array"), "{err}");

    let err = fails_with_code_2(&["cluster", "--embeddings", s(&x), "--alpha", "-1"]);
    assert!(err.contains("alpha must be finite and >= 0"), "{err}");

    let huge = dir.join("huge.npy");
    npy::write_f32_matrix(&huge, &[1e20, 0.0], 1, 2).unwrap();
    let err = fails_with_code_2(&["cluster", "--embeddings", s(&huge)]);
    assert!(err.contains("huge.npy: embedding row 0, column 0"), "{err}");
}

#[test]
fn help_teaches_usage() {
    let out = run(&["cluster", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--embeddings",
        "--times",
        "--alpha",
        "--lambda",
        "--max-actions",
        "Example:",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    // Every format an import reads is named in its help.
    for (command, formats) in [
        ("events", &[".parquet", ".csv/.tsv", ".jsonl"][..]),
        ("items", &[".parquet", ".npy", ".csv"][..]),
    ] {
        let out = run(&["import", command, "--help"]);
        let text = String::from_utf8(out.stdout).unwrap();
        for format in formats {
            assert!(
                text.contains(format),
                "import {command}: {format} in:\n{text}"
            );
        }
    }
}

/// The shipped binary carries no benchmark (they are `pinnersage-bench`, crates/bench).
#[test]
fn the_shipped_binary_has_no_bench_command() {
    let dir = scratch("bench");
    let (x, _) = two_interests(&dir);
    let out = run(&["bench", "cluster", s(&x)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn import_items_then_look_them_up() {
    let dir = scratch("import");
    let data = dir.join("data");
    let items = dir.join("items.csv");
    std::fs::write(&items, "id,a,b\nm1,3,4\nm2,1,0\n").unwrap();
    let text = succeeds(&[
        "import",
        "items",
        "--data-dir",
        s(&data),
        "--normalize",
        s(&items),
    ]);
    assert!(
        text.starts_with("imported 2 items x 2 dims, L2-normalised into"),
        "{text}"
    );

    let v = succeeds_json(&["catalog", "--data-dir", s(&data), "--id", "m1", "--json"]);
    assert_eq!(v["meta"]["rows"], 2);
    assert_eq!(v["items"][0]["row"], 0);
    assert!((v["items"][0]["norm"].as_f64().unwrap() - 1.0).abs() < 1e-6);

    // Unknown ids and a bad re-import exit 2; the catalog stays as it was.
    let out = run(&["catalog", "--data-dir", s(&data), "--id", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "m1,1,2\nm1,3,4\n").unwrap();
    let err = fails_with_code_2(&["import", "items", "--data-dir", s(&data), s(&bad)]);
    assert!(
        err.contains("bad.csv: line 2: item id \"m1\" duplicates item 0"),
        "{err}"
    );
    let out = run(&["catalog", "--data-dir", s(&data), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["meta"]["source"], s(&items));

    let empty = dir.join("empty-data");
    let err = fails_with_code_2(&["catalog", "--data-dir", s(&empty)]);
    assert!(err.contains("no item catalog in"), "{err}");
}

#[test]
fn a_config_file_sets_what_flags_and_variables_do_not() {
    let dir = scratch("config");
    let items = dir.join("items.csv");
    std::fs::write(&items, "id,a,b\nm1,3,4\nm2,1,0\n").unwrap();
    let config = dir.join("pinnersage.toml");
    let from_file = dir.join("from-file");
    std::fs::write(
        &config,
        format!(
            "# shared by every command\ndata_dir = {:?}\n\n[import.items]\nnormalize = true\n\n[serve]\ncache_mb = 64\nnats = \"nats://app:s3cret@127.0.0.1:4222\"\n",
            s(&from_file)
        ),
    )
    .unwrap();
    let catalog_rows = |data: &Path| {
        let v = succeeds_json(&["catalog", "--data-dir", s(data), "--json"]);
        v["meta"]["rows"].as_u64().unwrap()
    };

    // The file's data_dir and normalize.
    let text = succeeds(&["import", "items", "--config", s(&config), s(&items)]);
    assert!(text.contains("L2-normalised into"), "{text}");
    assert_eq!(catalog_rows(&from_file), 2);

    // A variable beats the file, a flag beats both; PINNERSAGE_CONFIG names the file.
    let from_env = dir.join("from-env");
    let out = bin()
        .args(["import", "items", s(&items)])
        .env("PINNERSAGE_CONFIG", &config)
        .env("PINNERSAGE_DATA_DIR", &from_env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(catalog_rows(&from_env), 2);
    let from_flag = dir.join("from-flag");
    let out = bin()
        .args([
            "import",
            "items",
            "--data-dir",
            s(&from_flag),
            "--config",
            s(&config),
            s(&items),
        ])
        .env("PINNERSAGE_DATA_DIR", &from_env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(catalog_rows(&from_flag), 2);

    // `config show` names each value's source and prints no secret.
    let out = bin()
        .args([
            "config",
            "show",
            "serve",
            "--config",
            s(&config),
            "--seed",
            "7",
        ])
        .env(
            "PINNERSAGE_TOKENS",
            "tok-abc123 read;tok-def456 write,admin",
        )
        .env("PINNERSAGE_ONLINE_USERS", "5000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    for expected in [
        format!("data_dir = {:?}  # {}:2", s(&from_file), s(&config)),
        format!("cache_mb = 64  # {}:8", s(&config)),
        "seed = 7  # flag".to_string(),
        "online_users = 5000  # env PINNERSAGE_ONLINE_USERS".to_string(),
        "addr = \"127.0.0.1:8080\"  # default".to_string(),
        "nats = \"nats://app:***@127.0.0.1:4222\"".to_string(),
        "# API tokens: 2 entries from PINNERSAGE_TOKENS (never printed)".to_string(),
    ] {
        assert!(shown.contains(&expected), "{expected} in:\n{shown}");
    }
    for secret in ["tok-abc123", "tok-def456", "s3cret"] {
        assert!(!shown.contains(secret), "{secret} printed:\n{shown}");
    }

    // An unknown key is exit 2 naming the file, the line and the key; nothing runs.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[import.items]\nnormalise = true\n").unwrap();
    let elsewhere = dir.join("never");
    let err = fails_with_code_2(&[
        "import",
        "items",
        "--config",
        s(&bad),
        "--data-dir",
        s(&elsewhere),
        s(&items),
    ]);
    assert!(
        err.contains(&format!(
            "{}:2: `import.items.normalise`: unknown key",
            s(&bad)
        )),
        "{err}"
    );
    assert!(!elsewhere.exists());
}

#[test]
fn embed_learns_item_embeddings_from_events_alone() {
    let dir = scratch("embed");
    let data = dir.join("data");
    // Users 0-9 engage items a0-a4, users 10-19 items b0-b4; one user also "rare".
    let mut csv = String::from("user,item,timestamp\n");
    for u in 0..20 {
        let group = if u < 10 { "a" } else { "b" };
        for i in 0..5 {
            csv.push_str(&format!("u{u},{group}{i},{}\n", 1_700_000_000 + u * 60 + i));
        }
    }
    csv.push_str("u0,rare,1700000500\n");
    let events = dir.join("events.csv");
    std::fs::write(&events, csv).unwrap();
    let out = run(&["import", "events", "--data-dir", s(&data), s(&events)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let embed = |out_dir: &Path, method: &str| {
        run(&[
            "embed",
            "--data-dir",
            s(&data),
            "--out",
            s(out_dir),
            "--method",
            method,
            "--dim",
            "4",
            "--now",
            "1700002000",
        ])
    };
    for (method, name) in [("svd", "truncated SVD"), ("als", "implicit ALS")] {
        let learned = dir.join(method);
        let out = embed(&learned, method);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!(
                "learned 10 items x 4 dims ({name}) from 100 engagements of 20 users (1 rarer"
            )),
            "{text}"
        );
        let ids = std::fs::read_to_string(learned.join("ids.txt")).unwrap();
        let ids: Vec<&str> = ids.lines().collect();
        assert_eq!(ids.len(), 10);
        assert!(!ids.contains(&"rare"));
        let m = npy::read(learned.join("items.npy"))
            .unwrap()
            .into_f32_matrix()
            .unwrap();
        assert_eq!((m.rows, m.cols), (10, 4));
        let row = |id: &str| {
            let r = ids.iter().position(|x| *x == id).unwrap();
            &m.data[r * 4..(r + 1) * 4]
        };
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(cos(row("a0"), row("a3")) > 0.99, "{method}: same community");
        assert!(
            cos(row("a0"), row("b0")).abs() < 0.1,
            "{method}: other community"
        );
        // Deterministic.
        let again = dir.join(format!("{method}-again"));
        assert!(embed(&again, method).status.success());
        assert_eq!(
            std::fs::read(learned.join("items.npy")).unwrap(),
            std::fs::read(again.join("items.npy")).unwrap()
        );
    }
    // What `import items` reads.
    let learned = dir.join("als");
    succeeds(&[
        "import",
        "items",
        "--data-dir",
        s(&data),
        "--ids",
        s(&learned.join("ids.txt")),
        s(&learned.join("items.npy")),
    ]);
    // A window without engagements is an input error (after the progress lines).
    let out = run(&[
        "embed",
        "--data-dir",
        s(&data),
        "--out",
        s(&dir.join("none")),
        "--now",
        "1600000000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no item in the window"), "{err}");
    let out = run(&[
        "embed",
        "--data-dir",
        s(&data),
        "--out",
        s(&dir.join("bad")),
        "--method",
        "als",
        "--regularization",
        "nan",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--regularization"), "{err}");
}

#[test]
fn events_batch_profile_end_to_end() {
    let dir = scratch("batch");
    let data = dir.join("data");
    let items = dir.join("items.csv");
    std::fs::write(
        &items,
        "id,a,b,c\nsun,1,0,0\nstar,0.99,0.1,0\nsea,0,1,0\nlake,0,0.99,0.1\n",
    )
    .unwrap();
    assert!(
        run(&[
            "import",
            "items",
            "--data-dir",
            s(&data),
            "--normalize",
            s(&items)
        ])
        .status
        .success()
    );
    let events = dir.join("events.csv");
    std::fs::write(
        &events,
        "userId,movieId,ts\nann,sun,2023-11-14T00:00:00Z\nann,star,2023-11-13T00:00:00Z\nann,sea,2023-11-01T00:00:00Z\nann,ghost,2023-11-01T00:00:00Z\n",
    )
    .unwrap();
    let cols = [
        "--user-col",
        "userId",
        "--item-col",
        "movieId",
        "--time-col",
        "ts",
    ];
    let mut args = vec!["import", "events", "--data-dir", s(&data)];
    args.extend(cols);
    args.push(s(&events));
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "4 new events, 0 already stored, 0 invalid skipped, 1 on items not in the catalog"
        ),
        "{text}"
    );

    let now = "1699920000"; // 2023-11-14T00:00:00Z
    let table = dir.join("profiles.parquet");
    let text = succeeds(&[
        "batch",
        "--data-dir",
        s(&data),
        "--now",
        now,
        "--alpha",
        "0.5",
        "--out",
        s(&table),
    ]);
    assert!(
        text.starts_with("batch: 1 users, 3 actions, clusters per user mean 2.0"),
        "{text}"
    );
    assert!(
        text.contains("skipped 1 events on items not in the catalog"),
        "{text}"
    );
    // Variants: the same clusters cut at other alphas, for experiment arms.
    let batch = |variants: &'static str| {
        let flags = [
            "batch",
            "--data-dir",
            s(&data),
            "--now",
            now,
            "--alpha",
            "0.5",
        ];
        let mut args = flags.to_vec();
        args.extend(["--variant-alpha", variants]);
        args
    };
    let text = succeeds(&batch("10,0.001"));
    assert!(
        text.contains("variant alpha 10: clusters per user mean 1.0")
            && text.contains("variant alpha 0.001: clusters per user mean 3.0"),
        "{text}"
    );
    let err = fails_with_code_2(&batch("2e12"));
    assert!(
        err.contains("variant alpha") && err.contains("1e12"),
        "{err}"
    );

    let out = run(&["profile", "--data-dir", s(&data), "--user", "ann", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let clusters = v["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert_eq!(clusters[0]["size"], 2);
    assert!(["sun", "star"].contains(&clusters[0]["medoid"].as_str().unwrap()));
    assert_eq!(clusters[1]["medoid"], "sea");

    let err = fails_with_code_2(&["profile", "--data-dir", s(&data), "--user", "bob"]);
    assert!(err.contains("no profile for user \"bob\""), "{err}");
    let err = fails_with_code_2(&["batch", "--data-dir", s(&data), "--now", "0"]);
    assert!(err.contains("no events between"), "{err}");
    // A bad flag value is a usage error (clap: exit 2, message plus a hint).
    let out = run(&["batch", "--data-dir", s(&data), "--shard", "3/3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be I/N with 0 <= I < N"));
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "user,item,timestamp\nann,sun,soon\n").unwrap();
    let err = fails_with_code_2(&["import", "events", "--data-dir", s(&data), s(&bad)]);
    assert!(err.contains("bad.csv: line 2: timestamp"), "{err}");
    // The batch's profile table published again, as a Spark job's would be; a file that is not
    // a profile table is refused with exit code 2.
    let import = |file: &Path| {
        run(&[
            "import",
            "profiles",
            "--data-dir",
            s(&data),
            "--now",
            now,
            "--alpha",
            "0.5",
            s(file),
        ])
    };
    let out = import(&table);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("published 1 profiles (2 clusters) from 1 file(s)"),
        "{text}"
    );
    let err = fails_with_code_2(&[
        "import",
        "profiles",
        "--data-dir",
        s(&data),
        "--now",
        now,
        s(&events),
    ]);
    assert!(
        err.contains("events.csv") && err.contains("Parquet"),
        "{err}"
    );
    let out = run(&["profile", "--data-dir", s(&data), "--user", "ann", "--json"]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["clusters"], v["clusters"]);
}

#[test]
fn index_build_and_serve_until_sigterm() {
    let dir = scratch("serve");
    let data = dir.join("data");
    let d = s(&data);
    let err = fails_with_code_2(&["index", "build", "--data-dir", d]);
    assert!(err.contains("import items"), "{err}");
    let items = dir.join("items.csv");
    std::fs::write(
        &items,
        "id,a,b,c\nsun,1,0,0\nstar,0.99,0.1,0\nsea,0,1,0\nlake,0,0.99,0.1\nsky,0.7,0.7,0\n",
    )
    .unwrap();
    assert!(
        run(&["import", "items", "--data-dir", d, s(&items)])
            .status
            .success()
    );
    let err = fails_with_code_2(&["serve", "--data-dir", d, "--addr", "127.0.0.1:0"]);
    assert!(err.contains("run `pinnersage index build"), "{err}");
    let err = fails_with_code_2(&["index", "build", "--data-dir", d, "--connectivity", "1"]);
    assert!(
        err.contains("connectivity (M) must be in 2..=256, got 1"),
        "{err}"
    );
    let missing = dir.join("missing.txt");
    let err = fails_with_code_2(&["index", "build", "--data-dir", d, "--exclude", s(&missing)]);
    assert!(err.contains("missing.txt"), "{err}");

    let exclude = dir.join("exclude.txt");
    std::fs::write(&exclude, "lake\n\nnot-an-item\n").unwrap();
    let out = run(&[
        "index",
        "build",
        "--data-dir",
        d,
        "--kind",
        "exact",
        "--exclude",
        s(&exclude),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("4 of 5 items (1 excluded, 0 near duplicates collapsed)"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 excluded ids are not in the catalog"));

    let server = RunningServer::start(d);
    let get = |path: &str| server.request("GET", path, "");
    let health = get("/healthz");
    assert!(
        health.contains("\"kind\":\"exact\"") && health.contains("\"items\":4"),
        "{health}"
    );
    let similar = get("/v1/items/sun/similar?k=2");
    assert!(similar.starts_with("HTTP/1.1 200"), "{similar}");
    assert!(
        similar.contains("\"item\":\"star\"") && !similar.contains("lake"),
        "{similar}"
    );
    // No batch yet: every user gets the (empty) fallback.
    let reco = get("/v1/users/ann/recommendations");
    assert!(reco.contains("\"fallback\":true"), "{reco}");

    // The server owns the event store: events go in over HTTP, and `pinnersage batch` hands
    // the batch to the server, which serves the new generation at once.
    let posted = server.request(
        "POST",
        "/v1/events",
        r#"{"events":[{"user":"ann","item":"sun","ts":1700000000},{"user":"ann","item":"sea","ts":1700000100}]}"#,
    );
    assert!(posted.starts_with("HTTP/1.1 202"), "{posted}");
    let err = fails_with_code_2(&["import", "events", "--data-dir", d, s(&items)]);
    assert!(err.contains("in use by another process"), "{err}");
    let out = run(&["batch", "--data-dir", d, "--now", "1700000200"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("batch: 1 users, 2 actions"), "{text}");
    assert!(text.contains("published gen-000001"), "{text}");
    let profile = get("/v1/users/ann/profile");
    assert!(
        profile.contains("\"generation\":\"gen-000001\""),
        "{profile}"
    );
    assert!(profile.contains("\"online_actions\":0"), "{profile}");

    let mut server = server;
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let rest = server.rest_of_stderr();
    assert!(rest.contains("shut down"), "{rest}");
    assert!(
        !data.join("server.json").exists(),
        "the address file is removed on shutdown"
    );
}

#[test]
fn kill_9_while_streaming_loses_no_acknowledged_event_and_stores_each_once() {
    use pinnersage_store::events::EventStore;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = scratch("kill9");
    let data = dir.join("data");
    let d = s(&data);
    common::five_item_catalog(&data);
    let cycles = common::kill_cycles();
    const PER_REQUEST: u64 = 25;
    let base = 1_700_000_000u64;
    // Event n: user u{n%7}, item i{n%5}, time base+n, id e{n}; one request body per list.
    let events_body = move |ns: &[u64]| common::events_body(ns, base);
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut sent_total = 0u64;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for cycle in 0..cycles {
        let mut server = RunningServer::start(d);
        let stop = Arc::new(AtomicBool::new(false));
        let streamer = {
            let (addr, acked, stop) = (server.addr.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = cycle * 1_000_000;
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<u64> = (seq..seq + PER_REQUEST).collect();
                    seq += PER_REQUEST;
                    let body = events_body(&batch);
                    sent += PER_REQUEST;
                    match http(&addr, "POST", "/v1/events", &body) {
                        Ok(raw) if raw.starts_with("HTTP/1.1 202") => {
                            acked.lock().unwrap().extend(batch);
                        }
                        _ => break, // killed mid-request: not acknowledged
                    }
                }
                sent
            })
        };
        // Let it stream for a while, then kill -9 at an arbitrary moment.
        server.kill9_after_a_while(&mut rng);
        stop.store(true, Ordering::Relaxed);
        sent_total += streamer.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 >= cycles * PER_REQUEST,
        "the streamer made progress: {}",
        acked.len()
    );

    // A restarted server takes retries of acknowledged events as duplicates.
    {
        let server = RunningServer::start(d);
        let retry: Vec<u64> = acked.iter().take(10).copied().collect();
        let reply = server.request("POST", "/v1/events", &events_body(&retry));
        assert!(
            reply.contains("\"accepted\":0,\"duplicates\":10"),
            "{reply}"
        );
    }

    let store = EventStore::open(&data).unwrap();
    let mut stored = Vec::new();
    store
        .for_each_after(i64::MIN, |user, e| {
            stored.push((user.to_owned(), e.item, e.time))
        })
        .unwrap();
    let times: BTreeSet<u64> = stored.iter().map(|(_, _, t)| *t as u64 - base).collect();
    assert_eq!(times.len(), stored.len(), "every event is stored once");
    for &n in &acked {
        assert!(times.contains(&n), "acknowledged event {n} was lost");
    }
    for (user, item, t) in &stored {
        let n = *t as u64 - base;
        assert_eq!(
            (user.as_str(), item.as_str()),
            (
                format!("u{}", n % 7).as_str(),
                format!("i{}", n % 5).as_str()
            )
        );
    }
    assert!(stored.len() as u64 <= sent_total);
    eprintln!(
        "kill -9 x{cycles}: {} sent, {} acknowledged, {} stored, 0 lost",
        sent_total,
        acked.len(),
        stored.len()
    );
}

#[test]
fn kill_9_while_serving_an_experiment_loses_no_acknowledged_impression() {
    use pinnersage_store::impressions::ImpressionStore;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = scratch("kill9-impressions");
    let data = dir.join("data");
    let d = s(&data);
    common::five_item_catalog(&data);
    let experiments = dir.join("experiments.toml");
    std::fs::write(
        &experiments,
        "[[experiment]]\nname = \"e\"\nsalt = \"s\"\n\
         arm = [{ name = \"ours\", share = 0.5 }, { name = \"current\", share = 0.5, external = true }]\n",
    )
    .unwrap();
    let cycles = common::kill_cycles();
    // Request id -> user of every impression acknowledged: an answer of our arm (the server
    // waits for its impression) or a post of the team's arm answered 202.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for cycle in 0..cycles {
        let mut server = RunningServer::start_with(
            d,
            &[
                "--experiments",
                s(&experiments),
                "--impression-durability",
                "acknowledged",
            ],
        );
        let stop = Arc::new(AtomicBool::new(false));
        // Four clients at once: answers are in flight when the kill lands.
        let streamers: Vec<_> = (0..4u64).map(|client| {
            let (addr, acked, stop) = (server.addr.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = (cycle * 4 + client) * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let user = format!("u{n}");
                    let path = format!("/v1/users/{user}/recommendations?k=3");
                    let Ok(raw) = http(&addr, "GET", &path, "") else {
                        break;
                    };
                    let Some((_, body)) = raw.split_once("\r\n\r\n") else {
                        break; // killed mid-answer
                    };
                    let Ok(answer) = serde_json::from_str::<serde_json::Value>(body) else {
                        break;
                    };
                    let request_id = answer["request_id"].as_str().unwrap().to_owned();
                    if answer["arm"] == "ours" {
                        acked.lock().unwrap().insert(request_id, user);
                        continue;
                    }
                    let post = format!(
                        r#"{{"impressions":[{{"request_id":"{request_id}","experiment":"e","arm":"current","user":"{user}","items":["i1","i2"]}}]}}"#
                    );
                    match http(&addr, "POST", "/v1/impressions", &post) {
                        Ok(raw) if raw.starts_with("HTTP/1.1 202") => {
                            acked.lock().unwrap().insert(request_id, user);
                        }
                        _ => break,
                    }
                }
            })
        }).collect();
        server.kill9_after_a_while(&mut rng);
        stop.store(true, Ordering::Relaxed);
        streamers.into_iter().for_each(|s| s.join().unwrap());
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 >= cycles * 10,
        "the streamer made progress: {}",
        acked.len()
    );
    let store = ImpressionStore::open(&data, 35).unwrap();
    let mut stored = BTreeMap::new();
    store
        .for_each(i64::MIN, i64::MAX, |i| {
            assert!(
                stored
                    .insert(i.request_id.clone(), i.user.clone())
                    .is_none(),
                "{} stored twice",
                i.request_id
            );
            if i.arm == "current" {
                assert_eq!(i.items.len(), 2, "the posted items");
            }
        })
        .unwrap();
    for (request_id, user) in &acked {
        assert_eq!(
            stored.get(request_id),
            Some(user),
            "acknowledged impression {request_id} was lost"
        );
    }
    drop(store);
    // The report of the stopped server's data directory counts every stored impression.
    let out = run(&[
        "experiment",
        "report",
        "--experiments",
        s(&experiments),
        "--name",
        "e",
        "--data-dir",
        d,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arms = report["arms"].as_array().unwrap();
    let reported: u64 = arms
        .iter()
        .map(|a| a["impressions"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, stored.len() as u64, "{report}");
    assert!(
        arms.iter().all(|a| a["users"].as_u64().unwrap() > 0),
        "{report}"
    );
    assert_eq!(report["sample_ratio"]["mismatch"], false, "{report}");
    eprintln!(
        "kill -9 x{cycles} while serving an experiment: {} impressions acknowledged, {} stored, 0 lost",
        acked.len(),
        stored.len()
    );
}

#[test]
fn kill_9_while_changing_items_loses_no_acknowledged_change_and_half_applies_none() {
    use pinnersage_catalog::catalog::Catalog;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = scratch("kill9-items");
    let data = dir.join("data");
    let d = s(&data);
    common::five_item_catalog_indexed(&data, "hnsw");

    // Item n{k} has the vector (k, 1); every 4th request deletes the item of an acknowledged
    // earlier request. `state`: what the acknowledged changes left: n{k} is there (true) or
    // deleted (false); an item whose delete was sent but not acknowledged may be either, and
    // is left out.
    let vector = |k: u64| [k as f32, 1.0];
    let cycles = common::kill_cycles();
    const PER_REQUEST: u64 = 20;
    let state: Arc<Mutex<BTreeMap<u64, bool>>> = Arc::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for cycle in 0..cycles {
        let mut server = RunningServer::start(d);
        let stop = Arc::new(AtomicBool::new(false));
        let streamer = {
            let (addr, state, stop) = (server.addr.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut k = cycle * 1_000_000;
                let mut requests = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    requests += 1;
                    let victim = requests
                        .is_multiple_of(4)
                        .then(|| {
                            let state = state.lock().unwrap();
                            state
                                .iter()
                                .filter(|(_, live)| **live)
                                .map(|(k, _)| *k)
                                .nth((requests as usize * 7) % state.len().max(1))
                        })
                        .flatten();
                    if let Some(v) = victim {
                        state.lock().unwrap().remove(&v);
                    }
                    let (path, body, changed): (&str, String, Vec<(u64, bool)>) = match victim {
                        Some(v) => (
                            "/v1/items/delete",
                            format!(r#"{{"ids":["n{v}"]}}"#),
                            vec![(v, false)],
                        ),
                        None => {
                            let ks: Vec<u64> = (k..k + PER_REQUEST).collect();
                            k += PER_REQUEST;
                            let items: Vec<String> = ks
                                .iter()
                                .map(|&k| {
                                    let [x, y] = vector(k);
                                    format!(r#"{{"id":"n{k}","embedding":[{x},{y}]}}"#)
                                })
                                .collect();
                            let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
                            ("/v1/items", body, ks.iter().map(|&k| (k, true)).collect())
                        }
                    };
                    match http(&addr, "POST", path, &body) {
                        Ok(raw) if raw.starts_with("HTTP/1.1 202") => {
                            state.lock().unwrap().extend(changed);
                        }
                        Ok(raw) if raw.is_empty() => break,
                        Ok(raw) => panic!("{path}: {raw}"),
                        Err(_) => break, // killed mid-request: not acknowledged
                    }
                }
            })
        };
        server.kill9_after_a_while(&mut rng);
        stop.store(true, Ordering::Relaxed);
        streamer.join().unwrap();
    }
    let state = state.lock().unwrap().clone();
    let deleted = state.values().filter(|live| !**live).count();
    assert!(
        state.len() as u64 >= cycles * PER_REQUEST && deleted > 0,
        "the streamer made progress: {} items, {deleted} deleted",
        state.len()
    );

    // What a restart replays: every acknowledged change, and every item whole (an
    // unacknowledged upsert may be there, but with its own vector; the catalog is not
    // normalised).
    let catalog = Catalog::open(&data).unwrap();
    assert!(!catalog.meta().normalized);
    // Five items change past the fold fraction at once: the servers folded again and again,
    // and were killed in the middle of folds too.
    assert!(
        !catalog.dir().ends_with("gen-000001"),
        "no fold happened: {}",
        catalog.dir().display()
    );
    for (&k, &live) in &state {
        let row = catalog.row_of(&format!("n{k}"));
        match live {
            true => {
                let row = row.unwrap_or_else(|| panic!("acknowledged n{k} was lost"));
                assert_eq!(catalog.embedding(row), vector(k), "n{k} half-written");
            }
            false => assert!(row.is_none(), "acknowledged delete of n{k} was lost"),
        }
    }
    for row in 0..catalog.rows() {
        let id = catalog.id(row);
        if let Some(k) = id.strip_prefix('n').and_then(|k| k.parse::<u64>().ok()) {
            assert_eq!(catalog.embedding(row), vector(k), "{id} half-written");
        }
    }
    // `pinnersage catalog` counts them.
    let out = run(&["catalog", "--data-dir", d]);
    let text = String::from_utf8_lossy(&out.stdout);
    let added = catalog.added_rows();
    assert!(text.contains(&format!("{added} rows added")), "{text}");
    drop(catalog);
    // And a restarted server serves them.
    let server = RunningServer::start(d);
    let (&k, _) = state.iter().rev().find(|(_, live)| **live).unwrap();
    let reply = server.request("GET", &format!("/v1/items/n{k}/similar?k=1"), "");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    eprintln!(
        "kill -9 x{cycles} while changing items: {} items acknowledged ({deleted} deleted), 0 lost",
        state.len()
    );
}

/// `pinnersage serve` follows `import items` + `index build` without a restart, and lets the
/// replaced engine (its index) go: one engine in memory once the swap is done.
#[test]
fn serve_follows_a_new_catalog_and_frees_the_replaced_one() {
    let dir = scratch("follow");
    let data = dir.join("data");
    let d = s(&data);
    common::five_item_catalog_indexed(&data, "hnsw");
    let server = RunningServer::start(d);
    let gauge = |name: &str| -> f64 {
        server
            .metric(name)
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    assert_eq!(gauge("pinnersage_engines_in_memory"), 1.0);
    let items = dir.join("six.csv");
    std::fs::write(&items, format!("{}i5,2,2\n", common::FIVE_ITEMS_CSV)).unwrap();
    for args in [
        &["import", "items", "--data-dir", d, s(&items)][..],
        &["index", "build", "--data-dir", d],
    ] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let started = std::time::Instant::now();
    while gauge("pinnersage_generation_swaps_total") < 1.0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the new catalog was not served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let reply = server.request("GET", "/v1/items/i5/similar?k=1", "");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let started = std::time::Instant::now();
    while gauge("pinnersage_engines_in_memory") > 1.0 {
        assert!(
            started.elapsed().as_secs() < 5,
            "the replaced engine stays in memory"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn items_put_and_delete_send_files_to_a_running_server_and_name_the_bad_line() {
    let dir = scratch("items");
    let data = dir.join("data");
    let d = s(&data);
    common::five_item_catalog_indexed(&data, "hnsw");
    let server = RunningServer::start(d);
    let url = format!("http://{}", server.addr);
    // 25 items in requests of 10, one with attributes; comments and blank lines skipped.
    let mut text = String::from("# new items\n\n");
    for k in 0..25 {
        text.push_str(&format!("{{\"id\":\"n{k}\",\"embedding\":[{k},1]}}\n"));
    }
    text.push_str(r#"{"id":"i0","attributes":{"colour":"red"}}"#);
    let put = dir.join("put.jsonl");
    std::fs::write(&put, text).unwrap();
    let out = run(&["items", "put", s(&put), "--server", &url, "--batch", "10"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("26 items upserted, 0 deleted") && said.contains("in 3 requests"),
        "{said}"
    );
    let reply = server.request("GET", "/v1/items/n24/similar?k=1", "");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let reply = server.request("GET", "/v1/items/i1/similar?k=5&filter=colour:red", "");
    assert!(reply.contains(r#""item":"i0""#), "{reply}");

    // Deletes: plain ids and JSON lines.
    let delete = dir.join("delete.txt");
    std::fs::write(&delete, "n1\n{\"id\":\"n2\"}\n# a comment\nn3\n").unwrap();
    let out = run(&["items", "delete", s(&delete), "--server", &server.addr]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("0 items upserted, 3 deleted"), "{said}");
    let reply = server.request("GET", "/v1/items/n2/similar", "");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");

    // A bad line stops the run with its file and line, after the requests before it.
    let bad = dir.join("bad.jsonl");
    let lines = [
        r#"{"id":"b0","embedding":[1,2]}"#,
        r#"{"id":"b1","embedding":[1,2]}"#,
        r#"{"id":"b2","embedding":[1,2,3]}"#,
    ];
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let out = run(&["items", "put", s(&bad), "--server", &url, "--batch", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.jsonl:3:") && err.contains("embedding"),
        "{err}"
    );
    assert!(err.contains("2 items before it were applied"), "{err}");
    let reply = server.request("GET", "/v1/items/b1/similar?k=1", "");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    std::fs::write(&bad, "{\"id\":\"c0\",\"embedding\":[1,2]}\nnot json\n").unwrap();
    let err = fails_with_code_2(&["items", "put", s(&bad), "--server", &url]);
    assert!(err.contains("bad.jsonl:2: not a JSON object"), "{err}");
    let reply = server.request("GET", "/v1/items/c0/similar?k=1", "");
    assert!(
        reply.starts_with("HTTP/1.1 404"),
        "the request the bad line was in is not sent: {reply}"
    );
    // A wrong address or batch: a clear error.
    let err = fails_with_code_2(&["items", "put", s(&put), "--server", "https://x:1"]);
    assert!(err.contains("plain HTTP"), "{err}");
    let err = fails_with_code_2(&["items", "put", s(&put), "--server", &url, "--batch", "0"]);
    assert!(err.contains("--batch must be in 1..=10000"), "{err}");
}

#[test]
fn eval_writes_report_and_metrics_and_names_bad_inputs() {
    let dir = scratch("eval");
    let err = fails_with_code_2(&["eval", "--out", s(&dir.join("out"))]);
    assert!(err.contains("pinnersage eval movielens"), "{err}");
    // 6 items on two axes; 3 users alternating between them.
    let x = [
        1.0, 0.0, 0.99, 0.1, 0.98, 0.15, 0.0, 1.0, 0.1, 0.99, 0.15, 0.98,
    ];
    let emb = dir.join("emb.npy");
    npy::write_f32_matrix(&emb, &x, 6, 2).unwrap();
    let ids = dir.join("ids.txt");
    std::fs::write(&ids, "a\nb\nc\nd\ne\nf\n").unwrap();
    let mut csv = String::from("user,item,timestamp\n");
    for u in 0..3 {
        for (k, item) in ["a", "d", "b", "e", "c", "f"].iter().enumerate() {
            csv.push_str(&format!("u{u},{item},{}\n", 1_000 + k * 86_400 + u));
        }
    }
    let events = dir.join("events.csv");
    std::fs::write(&events, csv).unwrap();
    let out = dir.join("out");
    let args = [
        "eval",
        "--events",
        s(&events),
        "--embeddings",
        s(&emb),
        "--ids",
        s(&ids),
        "--out",
        s(&out),
        "--min-train",
        "2",
        "--train-fraction",
        "0.6",
        "--bootstrap",
        "50",
    ];
    let run_out = run(&args);
    assert!(
        run_out.status.success(),
        "{}",
        String::from_utf8_lossy(&run_out.stderr)
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| last item (baseline) |"), "{report}");
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for kind in ["given", "svd"] {
        assert_eq!(metrics[kind]["users"], 3, "{metrics}");
        assert_eq!(metrics[kind]["methods"][0]["name"], "last-item");
        assert_eq!(metrics[kind]["alpha_sweep"].as_array().unwrap().len(), 8);
        assert_eq!(
            metrics[kind]["embeddings_sweep"].as_array().unwrap().len(),
            10
        );
    }
    assert!(report.contains("co-engagement embeddings"), "{report}");
    assert!(
        report.contains("![alpha sweep](alpha-sweep.svg)"),
        "{report}"
    );
    for figure in ["alpha-sweep.svg", "embeddings-sweep.svg"] {
        let svg = std::fs::read_to_string(out.join(figure)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("Recall"),
            "{figure}"
        );
    }
    // --tune: a configuration file that batch and serve read, chosen without the test split.
    let tuned = dir.join("tuned");
    let mut tune_args = args.to_vec();
    tune_args[8] = s(&tuned);
    tune_args.extend(["--no-sweeps", "--item-embeddings", "given", "--tune"]);
    tune_args.extend(["--tune-alphas", "0.5,2", "--tune-global-shares", "0,0.5"]);
    let tune_out = run(&tune_args);
    assert!(
        tune_out.status.success(),
        "{}",
        String::from_utf8_lossy(&tune_out.stderr)
    );
    let report = std::fs::read_to_string(tuned.join("report.md")).unwrap();
    assert!(report.contains("### Tuned configuration"), "{report}");
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(tuned.join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(
        metrics["given"]["tuned"]["validation"]
            .as_array()
            .unwrap()
            .len(),
        2 * 3 * 3 * 2
    );
    let config = tuned.join("tuned-given.toml");
    let chosen = &metrics["given"]["tuned"]["chosen"];
    for (command, key, value) in [
        ("batch", "alpha", chosen["alpha"].to_string()),
        ("serve", "selection", chosen["selection"].to_string()),
        ("serve", "global_share", chosen["global_share"].to_string()),
    ] {
        let shown = run(&["config", "show", command, "--config", s(&config)]);
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.status.success(),
            "{}",
            String::from_utf8_lossy(&shown.stderr)
        );
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in {text}"));
        assert!(line.contains(s(&config)), "{line}");
        let shown_value = line
            .split("  #")
            .next()
            .unwrap()
            .trim_start_matches(&format!("{key} = "));
        assert_eq!(
            shown_value.parse::<f64>().ok(),
            value.parse::<f64>().ok(),
            "{line} vs {value}"
        );
        if shown_value.parse::<f64>().is_err() {
            assert_eq!(shown_value, value, "{line}");
        }
    }
    // Walk-forward by day: the last 2 days are test days, each user-day one unit.
    let walk = dir.join("walk");
    let mut walk_args = args.to_vec();
    walk_args[8] = s(&walk);
    walk_args.extend([
        "--split",
        "walk-forward",
        "--walk-forward-days",
        "2",
        "--no-sweeps",
    ]);
    let run_out = run(&walk_args);
    assert!(
        run_out.status.success(),
        "{}",
        String::from_utf8_lossy(&run_out.stderr)
    );
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(walk.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["given"]["users"], 6, "{metrics}");
    assert!(metrics["given"].get("alpha_sweep").is_none());
    assert!(!walk.join("alpha-sweep.svg").exists());
    let mut bad = walk_args.clone();
    bad.extend(["--sweep-embeddings", "0"]);
    assert!(fails_with_code_2(&bad).contains("--sweep-embeddings must be >= 1"));
    // CSV embeddings (as `import items` reads them) and titles from --items-meta: the report
    // shows example users with titles.
    let items_csv = dir.join("items.csv");
    let mut rows = String::from("id,x,y\n");
    for (k, id) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        rows.push_str(&format!("{id},{},{}\n", x[2 * k], x[2 * k + 1]));
    }
    std::fs::write(&items_csv, rows).unwrap();
    let meta = dir.join("meta.csv");
    std::fs::write(&meta, "id,title\na,Alpha film\nd,Delta | film\n").unwrap();
    let titled = dir.join("titled");
    let mut csv_args = vec![
        "eval",
        "--events",
        s(&events),
        "--embeddings",
        s(&items_csv),
        "--items-meta",
        s(&meta),
        "--out",
        s(&titled),
        "--min-train",
        "2",
        "--train-fraction",
        "0.6",
        "--bootstrap",
        "20",
        "--no-sweeps",
    ];
    let run_out = run(&csv_args);
    assert!(
        run_out.status.success(),
        "{}",
        String::from_utf8_lossy(&run_out.stderr)
    );
    let report = std::fs::read_to_string(titled.join("report.md")).unwrap();
    assert!(report.contains("### Examples"), "{report}");
    assert!(
        report.contains("Alpha film") || report.contains("Delta \\| film"),
        "{report}"
    );
    // --ids belongs to NPY only; NPY needs it.
    csv_args.extend(["--ids", s(&ids)]);
    assert!(fails_with_code_2(&csv_args).contains("--ids is only for NPY embeddings"));
    let npy_without_ids: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--ids" && *a != s(&ids))
        .collect();
    assert!(fails_with_code_2(&npy_without_ids).contains("NPY embeddings need --ids, a file"));
    // Ids and rows disagree: one line naming both files.
    std::fs::write(&ids, "a\nb\n").unwrap();
    let err = fails_with_code_2(&args);
    assert!(
        err.contains("ids.txt has 2 ids but") && err.contains("emb.npy has 6 rows"),
        "{err}"
    );
}

/// `quickstart --no-serve` builds a data directory from the bundled MovieLens through the real
/// import, index and batch commands; a second run reuses it; foreign directories and missing
/// data are refused with exit code 2.
#[test]
fn quickstart_prepares_movielens_once_and_refuses_foreign_directories() {
    let dir = scratch("quickstart");
    let data = dir.join("ml");
    let out = run(&["quickstart", "--data-dir", s(&data), "--no-serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("9742 items x 384 dims"), "{stdout}");
    assert!(
        stdout.contains("attributes: 9742 of 9742 rows matched"),
        "{stdout}"
    );
    assert!(stdout.contains("batch: 609 users"), "{stdout}");
    for step in [
        "1/4 import events",
        "2/4 import items",
        "3/4 index build",
        "4/4 batch",
    ] {
        assert!(stderr.contains(step), "{step}: {stderr}");
    }
    // The profile of the heaviest user has dozens of interests, with titles.
    let profile = succeeds_json(&["profile", "--data-dir", s(&data), "--user", "414", "--json"]);
    let clusters = profile["clusters"].as_array().unwrap().len();
    assert!((50..=200).contains(&clusters), "{clusters} interests");
    // The ratings were moved so that the last one is now: the batch ran for today.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let batch_now = profile["now"].as_i64().unwrap();
    assert!((now - batch_now).abs() < 3_600, "{batch_now} vs {now}");
    assert!(
        stderr.contains("so that the last rating is now"),
        "{stderr}"
    );
    let out = run(&["catalog", "--data-dir", s(&data), "--id", "1", "--json"]);
    let catalog: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        catalog["items"][0]["attributes"]["title"],
        "Toy Story (1995)"
    );

    let again = run(&["quickstart", "--data-dir", s(&data), "--no-serve"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is ready"));
    // Another kind of embeddings needs --rebuild.
    let out = run(&[
        "quickstart",
        "--data-dir",
        s(&data),
        "--no-serve",
        "--embeddings",
        "learned",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was built with --embeddings titles"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rebuilding under a running server is refused (its server.json is the sign).
    std::fs::write(data.join("server.json"), "{}").unwrap();
    let out = run(&[
        "quickstart",
        "--data-dir",
        s(&data),
        "--no-serve",
        "--rebuild",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a pinnersage server is running"));
    assert!(data.join("quickstart.json").exists(), "nothing was removed");

    let foreign = dir.join("foreign");
    std::fs::create_dir_all(foreign.join("catalog")).unwrap();
    let out = run(&["quickstart", "--data-dir", s(&foreign), "--no-serve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds data"));
    assert!(
        foreign.join("catalog").exists(),
        "nothing of a foreign directory is removed"
    );

    let out = run(&[
        "quickstart",
        "--data-dir",
        s(&dir.join("x")),
        "--movielens",
        s(&dir),
        "--no-serve",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no MovieLens data (ratings.csv)"));
}

/// `quickstart --embeddings learned` learns the movies' embeddings from the ratings (`embed`)
/// and runs the same steps on them: fewer movies (those rated by one user have no embedding),
/// 64 dimensions, profiles with titles.
#[test]
fn quickstart_with_learned_embeddings_embeds_the_ratings_first() {
    let dir = scratch("quickstart-learned");
    let data = dir.join("ml");
    let out = run(&[
        "quickstart",
        "--data-dir",
        s(&data),
        "--no-serve",
        "--embeddings",
        "learned",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    for step in [
        "1/5 import events",
        "2/5 embed (implicit ALS",
        "3/5 import items",
        "4/5 index build",
        "5/5 batch",
    ] {
        assert!(stderr.contains(step), "{step}: {stderr}");
    }
    assert!(stdout.contains("x 64 dims (implicit ALS)"), "{stdout}");
    let catalog = run(&["catalog", "--data-dir", s(&data), "--json"]);
    let catalog: Value = serde_json::from_slice(&catalog.stdout).unwrap();
    let items = catalog["meta"]["rows"].as_u64().unwrap_or(0);
    assert!((3_000..9_742).contains(&items), "{catalog}");
    assert_eq!(catalog["meta"]["dim"], 64);
    let profile = succeeds_json(&["profile", "--data-dir", s(&data), "--user", "414", "--json"]);
    let clusters = profile["clusters"].as_array().unwrap();
    assert!(clusters.len() >= 5, "{} interests", clusters.len());
}

#[test]
fn serve_refuses_an_exposed_address_without_tokens_and_bad_token_lists() {
    let dir = scratch("exposed");
    let d = s(&dir);
    let err = fails_with_code_2(&["serve", "--data-dir", d, "--addr", "0.0.0.0:0"]);
    assert!(
        err.contains("refusing to serve on 0.0.0.0:0 without API tokens"),
        "{err}"
    );
    assert!(err.contains("--insecure-no-auth"), "{err}");
    let tokens = dir.join("tokens.txt");
    std::fs::write(&tokens, "# writers\nshort write\n").unwrap();
    let err = fails_with_code_2(&["serve", "--data-dir", d, "--tokens-file", s(&tokens)]);
    assert!(
        err.contains("tokens.txt: entry 2: a token must have at least 16"),
        "{err}"
    );
    assert!(
        !err.contains("short"),
        "the token itself is never printed: {err}"
    );
    let err = fails_with_code_2(&["serve", "--data-dir", d, "--require-read-token"]);
    assert!(
        err.contains("--require-read-token needs API tokens"),
        "{err}"
    );
}

#[test]
fn serve_refuses_durations_and_sizes_out_of_range() {
    let dir = scratch("ranges");
    let d = s(&dir);
    for (flag, value, message) in [
        (
            "--reload-seconds",
            "1e300",
            "--reload-seconds must be between",
        ),
        ("--reload-seconds", "0", "--reload-seconds must be between"),
        (
            "--reload-seconds",
            "NaN",
            "--reload-seconds must be between",
        ),
        (
            "--request-timeout",
            "1e-300",
            "--request-timeout must be between",
        ),
        (
            "--request-timeout",
            "inf",
            "--request-timeout must be between",
        ),
        (
            "--cache-mb",
            "18446744073709551615",
            "--cache-mb must be at most",
        ),
    ] {
        let err = fails_with_code_2(&["serve", "--data-dir", d, flag, value]);
        assert!(err.contains(message), "{flag} {value}: {err}");
    }
}

/// A program that took a dead server's port: answers every request `200 {}` and records the
/// request heads it got.
fn stranger() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                head.push_str(&line);
                line.clear();
            }
            seen.lock().unwrap().push(head);
            let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        }
    });
    (addr, heads)
}

#[test]
fn batch_hands_over_to_the_live_server_only() {
    use pinnersage_server::handoff::{ServerRecord, server_file};
    let dir = scratch("handoff");
    let d = s(&dir);
    common::five_item_catalog(&dir);
    // A server on every interface (so with tokens): `batch` reaches it on loopback.
    let token = "admin-token-000001";
    let tokens = dir.join("tokens.txt");
    std::fs::write(
        &tokens,
        format!("{token} admin,write\nreader-token-00002 read\n"),
    )
    .unwrap();
    let mut server =
        RunningServer::start_with(d, &["--addr", "0.0.0.0:0", "--tokens-file", s(&tokens)]);
    assert!(server.addr.starts_with("0.0.0.0:"), "{}", server.addr);
    // Off loopback, reads need a token too (profiles are personal data).
    let read = |authorization: &str| {
        use std::io::{Read, Write};
        let addr = server.addr.replace("0.0.0.0", "127.0.0.1");
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET /v1/users/ann/profile HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    let refused = read("");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let answered = read("Authorization: Bearer reader-token-00002\r\n");
    assert!(
        answered.starts_with("HTTP/1.1 404"),
        "no profile yet: {answered}"
    );
    let posted = bin()
        .args(["batch", "--data-dir", d, "--now", "1700000200"])
        .env("PINNERSAGE_TOKEN", token)
        .output()
        .unwrap();
    // No events yet: the server ran the batch and said so (not a 421 for Host 0.0.0.0).
    let err = String::from_utf8_lossy(&posted.stderr);
    assert!(err.contains("no events between"), "{err}");
    server.kill9();

    // The store held by another process, server.json naming a program that is not the server:
    // nothing but the challenge reaches it, no token.
    let store = pinnersage_store::events::EventStore::open(&dir).unwrap();
    let (addr, heads) = stranger();
    let record = ServerRecord::new(addr.parse().unwrap(), std::process::id());
    record.write(&server_file(&dir)).unwrap();
    let out = bin()
        .args(["batch", "--data-dir", d, "--now", "1700000200"])
        .env("PINNERSAGE_TOKEN", token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not the server that wrote"), "{err}");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("GET /healthz"), "{heads:?}");
    assert!(!heads[0].contains(token), "the token was sent: {heads:?}");
    // A record whose process is gone is stale.
    let gone = ServerRecord::new(addr.parse().unwrap(), 4_194_305);
    gone.write(&server_file(&dir)).unwrap();
    let err = fails_with_code_2(&["batch", "--data-dir", d, "--now", "1700000200"]);
    assert!(err.contains("is stale"), "{err}");
    drop(store);
}

#[test]
fn serve_never_prints_a_nats_password() {
    let dir = scratch("nats-secret");
    let d = s(&dir);
    common::five_item_catalog(&dir);
    // Nothing listens on port 1: the connection error names the URL, masked, with or without
    // a scheme.
    for (url, shown) in [
        (
            "nats://app:s3cret@127.0.0.1:1",
            "nats://app:***@127.0.0.1:1",
        ),
        ("app:s3cret@127.0.0.1:1", "app:***@127.0.0.1:1"),
    ] {
        let out = run(&["serve", "--data-dir", d, "--nats", url]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(shown), "{err}");
        assert!(!err.contains("s3cret"), "the password was printed: {err}");
    }
}

#[test]
fn serve_answers_readyz_while_its_data_directory_opens() {
    use std::io::{Read, Write};
    let dir = scratch("opening");
    let d = s(&dir);
    common::five_item_catalog(&dir);
    // A long journal of events after the served batch (none): replayed into the online state
    // when the server opens.
    {
        let store = pinnersage_store::events::EventStore::open(&dir).unwrap();
        let events: Vec<_> = (0..200_000u64)
            .map(|n| pinnersage_store::events::Event {
                user: format!("u{}", n % 20_000),
                item: format!("i{}", n % 5),
                time: 1_700_000_000 + n as i64,
                action: String::new(),
                weight: 1.0,
                id: None,
                request_id: None,
            })
            .collect();
        store.insert(&events).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let mut child = bin()
        .args(["serve", "--data-dir", d, "--addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let readyz = || -> Option<String> {
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        write!(s, "GET /readyz HTTP/1.0\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        Some(raw)
    };
    let mut answers = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(120) {
        if let Some(raw) = readyz() {
            let ready = raw.contains(" 200 ");
            answers.push(raw);
            if ready {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let opening = answers
        .iter()
        .filter(|a| a.contains(" 503 ") && a.contains("opening the data directory"))
        .count();
    eprintln!(
        "{} answers, {opening} while opening, ready after {:?}",
        answers.len(),
        started.elapsed()
    );
    assert!(
        answers.last().is_some_and(|a| a.contains(" 200 ")),
        "{answers:?}"
    );
    assert!(opening > 0, "no answer while opening: {answers:?}");
}

/// `experiment report` over logged answers and engagement events: the numbers, the JSON, and
/// bad input named.
#[test]
fn experiment_report_from_logged_answers_and_events() {
    let dir = scratch("experiment");
    let experiments = dir.join("experiments.toml");
    std::fs::write(
        &experiments,
        "[[experiment]]\nname = \"e\"\nsalt = \"s\"\ncontrol = \"a\"\n\
         [[experiment.arm]]\nname = \"a\"\nshare = 0.5\nmedoids = 1\n\
         [[experiment.arm]]\nname = \"b\"\nshare = 0.5\n",
    )
    .unwrap();
    // 40 users per arm, one answer each of items x0..x9; arm b's users engage with x0 (every
    // other one also with x5), arm a's every fourth user with x1.
    let mut shown = String::new();
    let mut events = String::from("user,item,timestamp\n");
    for u in 0..80 {
        let arm = if u < 40 { "a" } else { "b" };
        let items: Vec<String> = (0..10)
            .map(|i| format!(r#"{{"item":"x{i}","score":0.9,"medoid":"m{}"}}"#, i % 2))
            .collect();
        shown.push_str(&format!(
            r#"{{"user":"u{u}","request_id":"r{u}","experiment":"e","arm":"{arm}","items":[{}],"medoids":[],"fallback":false,"time":1000}}"#,
            items.join(",")
        ));
        shown.push('\n');
        if arm == "b" {
            events.push_str(&format!("u{u},x0,1100\n"));
            if u % 2 == 0 {
                events.push_str(&format!("u{u},x5,1200\n"));
            }
        } else if u % 4 == 0 {
            events.push_str(&format!("u{u},x1,1100\n"));
        }
    }
    // Outside the experiment, and an engagement on an item never shown.
    shown.push_str(r#"{"user":"z","request_id":"rz","items":[],"time":1000}"#);
    shown.push('\n');
    events.push_str("u1,nothing,1100\n");
    let (impressions, clicks) = (dir.join("shown.jsonl"), dir.join("clicks.csv"));
    std::fs::write(&impressions, &shown).unwrap();
    std::fs::write(&clicks, &events).unwrap();
    let args = [
        "experiment",
        "report",
        "--experiments",
        s(&experiments),
        "--name",
        "e",
        "--impressions",
        s(&impressions),
        "--events",
        s(&clicks),
    ];
    let text = succeeds(&args);
    assert!(
        text.contains("80 impressions (1 outside any experiment skipped)"),
        "{text}"
    );
    assert!(
        text.contains("arm a (control): 40 users, 40 impressions, 400 items shown, 10 engagements"),
        "{text}"
    );
    assert!(
        text.contains("arm b: 40 users, 40 impressions, 400 items shown, 60 engagements"),
        "{text}"
    );
    let json = succeeds_json(&[&args[..], &["--json"]].concat());
    let b = &json["arms"][1];
    assert_eq!(b["ctr"]["value"], 0.15);
    assert_eq!(b["engaged_user_rate"]["value"], 1.0);
    assert_eq!(json["arms"][0]["engaged_user_rate"]["value"], 0.25);
    assert_eq!(b["ctr_by_position"][0], 1.0);
    assert_eq!(b["interests_engaged_per_engaged_user"], 1.5);
    assert_eq!(b["ctr"]["vs_control"]["significant"], true);
    assert_eq!(json["unattributed"], 1);
    assert_eq!(json["sample_ratio"]["mismatch"], false);
    // How long to run, from the control: 2 (1.96 + 0.84)^2 x 0.25 x 0.75 x 40/39 / 0.0125^2.
    let needed = json["users_to_detect"]["engaged_user_rate"]
        .as_u64()
        .unwrap();
    assert!((19_000..19_700).contains(&needed), "{needed}");
    assert!(
        text.contains("users per arm to detect a 5% change"),
        "{text}"
    );

    // A malformed answer is named by line and field; an unknown experiment lists the known ones.
    std::fs::write(
        &impressions,
        format!("{shown}{{\"user\":\"u1\",\"arm\":\"a\",\"request_id\":\"r\",\"items\":[]}}\n"),
    )
    .unwrap();
    let err = fails_with_code_2(&args);
    assert!(err.contains("shown.jsonl: line 82: `time`"), "{err}");
    let mut unknown = args;
    unknown[5] = "nope";
    let err = fails_with_code_2(&unknown);
    assert!(err.contains("no experiment \"nope\" (it has: e)"), "{err}");
}
