//! Events in, profiles out, on a real data directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pinnersage_catalog::catalog::{Catalog, CatalogBuilder};
use pinnersage_core::ProfileParams;
use pinnersage_pipeline::batch::{BatchConfig, BatchError, Shard, run_batch};
use pinnersage_pipeline::data_in::import_events::{
    EventColumns, ImportError, ImportOptions, ImportReport, import_events,
};
use pinnersage_store::events::{Event, EventStore};
use pinnersage_store::profiles::{ProfileStore, StoredProfile};
use pinnersage_store::settings::GenerationSettings;

const DAY: i64 = 86_400;
const NOW: i64 = 1_700_000_000;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ps-pipe-{name}-"))
        .tempdir()
        .unwrap()
}

/// 3 topics x 10 items on orthogonal axes of R^4 (plus a little spread): `t{topic}-{k}`.
fn topic_catalog(dir: &Path) {
    let mut b = CatalogBuilder::new(dir, 4, true).unwrap();
    for t in 0..3 {
        for k in 0..10 {
            let mut v = [0.05f32 * k as f32, 0.0, 0.0, 0.0];
            v[t + 1] = 1.0;
            b.push(&format!("t{t}-{k}"), &mut v).unwrap();
        }
    }
    b.commit("topics").unwrap();
}

/// Accepted events borrowing owned `(user, item, action)` triples.
fn borrowed(
    owned: &[(String, String, pinnersage_pipeline::online::OnlineAction)],
) -> Vec<pinnersage_pipeline::online::Accepted<'_>> {
    owned
        .iter()
        .map(
            |(user, item, action)| pinnersage_pipeline::online::Accepted {
                user,
                item,
                action: *action,
            },
        )
        .collect()
}

/// A click of `user` on `item` at `time`, without an id.
fn click(user: &str, item: &str, time: i64) -> Event {
    Event {
        user: user.into(),
        item: item.into(),
        time,
        action: "click".into(),
        weight: 1.0,
        id: None,
        request_id: None,
    }
}

/// [`topic_catalog`] in `dir`, opened with its id index, as the online path reads it.
fn online_catalog(dir: &Path) -> Arc<Catalog> {
    topic_catalog(dir);
    let mut catalog = Catalog::open(dir).unwrap();
    catalog.build_hash_index();
    Arc::new(catalog)
}

/// Users u0..u{n}: user i engages topics 0..=(i % 3), 4 items each, spread over 30 days.
fn events_csv(dir: &Path, users: usize) -> PathBuf {
    let mut text = String::from("user,item,timestamp,action\n");
    for u in 0..users {
        for t in 0..=(u % 3) {
            for k in 0..4 {
                let time = NOW - ((u + t * 4 + k) as i64 % 30) * DAY;
                text.push_str(&format!("u{u},t{t}-{k},{time},click\n"));
            }
        }
    }
    text.push_str("u0,not-an-item,1699999999,click\n");
    let p = dir.join("events.csv");
    fs::write(&p, text).unwrap();
    p
}

fn config(shard: Option<Shard>) -> BatchConfig {
    BatchConfig {
        settings: GenerationSettings {
            now: NOW,
            window_days: 90,
            params: ProfileParams {
                alpha: 0.5,
                ..Default::default()
            },
        },
        shard,
        chunk_users: 7,
        parquet_out: None,
        force: false,
        variant_alphas: Vec::new(),
    }
}

fn all_profiles(dir: &Path, users: usize) -> BTreeMap<String, StoredProfile> {
    let store = ProfileStore::open(dir).unwrap();
    (0..users)
        .filter_map(|u| {
            store
                .get(&format!("u{u}"))
                .unwrap()
                .map(|p| (format!("u{u}"), p))
        })
        .collect()
}

#[test]
fn batch_recovers_each_users_topics() {
    let scratch_dir = scratch("recover");
    let dir = scratch_dir.path();
    topic_catalog(dir);
    let csv = events_csv(dir, 30);
    let report = import_events(dir, std::slice::from_ref(&csv), &ImportOptions::default()).unwrap();
    assert_eq!(
        report,
        ImportReport {
            rows: 241,
            inserted: 241,
            duplicates: 0,
            invalid: 0,
            unknown_items: Some(1)
        }
    );
    // Idempotent re-import.
    let again = import_events(dir, &[csv], &ImportOptions::default()).unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 241));

    let summary = run_batch(dir, &config(None), &|_| {}).unwrap();
    assert_eq!(summary.users, 30);
    assert_eq!(summary.actions, 240);
    assert_eq!(summary.unknown_item_events, 1);
    assert_eq!((summary.clusters_p50, summary.clusters_p99), (2, 3));
    let profiles = all_profiles(dir, 30);
    for (u, p) in &profiles {
        let i: usize = u[1..].parse().unwrap();
        let mut topics: Vec<String> = p
            .clusters
            .iter()
            .map(|c| c.medoid[..2].to_owned())
            .collect();
        topics.sort();
        let expected: Vec<String> = (0..=(i % 3)).map(|t| format!("t{t}")).collect();
        assert_eq!(topics, expected, "{u}");
        assert!(p.clusters.iter().all(|c| c.size == 4));
        assert!(
            p.clusters
                .windows(2)
                .all(|w| w[0].importance >= w[1].importance)
        );
        // Every item's importance is stored, and a cluster's importance is its items' sum
        // (what the served global interest, the decay average of the items, is weighted by).
        for (k, c) in p.clusters.iter().enumerate() {
            let items: f64 = p
                .items
                .iter()
                .filter(|i| i.cluster as usize == k)
                .map(|i| f64::from(i.importance.expect("stored")))
                .sum();
            assert!(
                (items - c.importance).abs() <= 1e-5 * c.importance,
                "{u}: {items} vs {}",
                c.importance
            );
        }
    }
}

#[test]
fn shards_partition_the_users_and_their_union_is_the_whole() {
    let scratch_dir = scratch("shards");
    let dir = scratch_dir.path();
    topic_catalog(dir);
    import_events(dir, &[events_csv(dir, 40)], &ImportOptions::default()).unwrap();
    run_batch(dir, &config(None), &|_| {}).unwrap();
    let whole = all_profiles(dir, 40);
    let mut union = BTreeMap::new();
    for index in 0..3 {
        let summary = run_batch(dir, &config(Some(Shard { index, count: 3 })), &|_| {}).unwrap();
        let part = all_profiles(dir, 40);
        assert_eq!(part.len() as u64, summary.users);
        for (u, p) in part {
            assert!(union.insert(u, p).is_none(), "a user in two shards");
        }
    }
    assert_eq!(union, whole);
}

/// Every user's profile in each variant of a generation (`None` when absent).
fn variant_profiles(dir: &Path, alpha: f64, users: usize) -> BTreeMap<String, StoredProfile> {
    let store = ProfileStore::open(dir).unwrap();
    (0..users)
        .filter_map(|u| {
            let user = format!("u{u}");
            let p = store
                .with_variant_profile(alpha, &user, |v| v.map(|v| v.to_stored()))
                .unwrap()
                .expect("the generation has the variant")?;
            Some((user, p))
        })
        .collect()
}

#[test]
fn a_generations_variants_are_the_batch_run_at_their_alphas() {
    let scratch_dir = scratch("variants");
    let dir = scratch_dir.path();
    topic_catalog(dir);
    import_events(dir, &[events_csv(dir, 30)], &ImportOptions::default()).unwrap();
    let alphas = [10.0, 0.01];
    let with_variants = BatchConfig {
        variant_alphas: alphas.to_vec(),
        ..config(None)
    };
    let summary = run_batch(dir, &with_variants, &|_| {}).unwrap();
    assert_eq!(summary.variants.len(), 2);
    assert_eq!(summary.variants[0].alpha, 10.0);
    assert!(summary.variants[0].clusters_mean < summary.clusters_mean);
    assert!(summary.variants[1].clusters_mean > summary.clusters_mean);
    let main = all_profiles(dir, 30);
    let variants: Vec<_> = alphas
        .iter()
        .map(|&a| variant_profiles(dir, a, 30))
        .collect();
    assert_eq!(
        ProfileStore::open(dir).unwrap().meta().variant_alphas,
        alphas
    );
    // Each variant holds what a batch at its alpha stores as its main profiles.
    for (&alpha, variant) in alphas.iter().zip(&variants) {
        let mut alone = config(None);
        alone.settings.params.alpha = alpha;
        run_batch(dir, &alone, &|_| {}).unwrap();
        assert_eq!(variant.len(), 30);
        assert_eq!(variant, &all_profiles(dir, 30), "alpha {alpha}");
        assert_ne!(variant, &main);
    }
    // A repeat, or the generation's own alpha, is cut once, as the generation's.
    let repeated = BatchConfig {
        variant_alphas: vec![0.5, 1.0, 1.0],
        ..config(None)
    };
    let summary = run_batch(dir, &repeated, &|_| {}).unwrap();
    let cut: Vec<f64> = summary.variants.iter().map(|v| v.alpha).collect();
    assert_eq!(cut, [1.0]);
    assert_eq!(
        ProfileStore::open(dir).unwrap().meta().variant_alphas,
        [1.0]
    );
    // Bad variants are refused before anything is clustered, naming the setting.
    for bad in [
        vec![f64::NAN],
        vec![2e12],
        vec![1.0, 2.0, 3.0, 4.0, 6.0, 0.5],
    ] {
        let refused = BatchConfig {
            variant_alphas: bad.clone(),
            ..config(None)
        };
        let err = run_batch(dir, &refused, &|_| {}).unwrap_err();
        assert!(matches!(err, BatchError::Config(_)), "{bad:?}: {err}");
        assert!(err.to_string().contains("variant alpha"), "{err}");
    }
}

#[test]
fn a_failed_batch_publishes_nothing() {
    let scratch_dir = scratch("nothing");
    let dir = scratch_dir.path();
    topic_catalog(dir);
    import_events(dir, &[events_csv(dir, 5)], &ImportOptions::default()).unwrap();
    let first = run_batch(dir, &config(None), &|_| {}).unwrap().generation;
    let empty = BatchConfig {
        settings: GenerationSettings::new(NOW + 1000 * DAY),
        ..config(None)
    };
    assert!(matches!(
        run_batch(dir, &empty, &|_| {}),
        Err(BatchError::NoEvents { .. })
    ));
    let mut bad = config(None);
    bad.settings.params.alpha = -1.0;
    assert!(matches!(
        run_batch(dir, &bad, &|_| {}),
        Err(BatchError::Settings(_))
    ));
    assert_eq!(ProfileStore::open(dir).unwrap().dir(), first);
    let left: Vec<_> = fs::read_dir(dir.join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "CURRENT and one generation: {left:?}");
}

#[test]
fn json_lines_rfc3339_and_custom_columns() {
    let scratch_dir = scratch("jsonl");
    let dir = scratch_dir.path();
    let p = dir.join("e.jsonl");
    fs::write(
        &p,
        "{\"uid\": \"a\", \"pin\": 7, \"ts\": \"2023-11-14T22:13:20Z\", \"weight\": 2}\n\n{\"uid\": \"a\", \"pin\": \"8\", \"ts\": 1700000001, \"id\": \"e-1\"}\n",
    )
    .unwrap();
    let options = ImportOptions {
        columns: EventColumns {
            user: "uid".into(),
            item: "pin".into(),
            time: "ts".into(),
            ..Default::default()
        },
        skip_invalid: false,
    };
    let report = import_events(dir, &[p], &options).unwrap();
    assert_eq!(
        (report.rows, report.inserted, report.unknown_items),
        (2, 2, None)
    );
    let events = EventStore::open(dir)
        .unwrap()
        .user_events("a", 0, i64::MAX)
        .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].item.as_str(), events[0].time, events[0].weight),
        ("7", 1_700_000_000, 2.0)
    );
    assert_eq!(events[1].item, "8");
}

fn input_error(dir: &Path, name: &str, content: &str, options: &ImportOptions) -> String {
    let p = dir.join(name);
    fs::write(&p, content).unwrap();
    match import_events(dir, &[p], options) {
        Err(ImportError::Input(msg)) => msg,
        other => panic!("{name}: expected an input error, got {other:?}"),
    }
}

#[test]
fn malformed_rows_name_file_and_line_and_store_nothing() {
    let scratch_dir = scratch("bad");
    let dir = scratch_dir.path();
    let d = dir.display().to_string();
    let strict = ImportOptions::default();
    let cases = [
        (
            "nocol.csv",
            "user,item\nu,i\n",
            format!(
                "{d}/nocol.csv: line 1: no column \"timestamp\" (columns: user, item); name it with the --*-col options"
            ),
        ),
        (
            "time.csv",
            "user,item,timestamp\nu,i,1\nu,i,yesterday\n",
            format!(
                "{d}/time.csv: line 3: timestamp: \"yesterday\" is neither unix seconds nor an RFC 3339 date-time (2018-09-24T10:00:00Z)"
            ),
        ),
        (
            "empty_user.csv",
            "user,item,timestamp\n,i,1\n",
            format!("{d}/empty_user.csv: line 2: missing \"user\""),
        ),
        (
            "weight.csv",
            "user,item,timestamp,weight\nu,i,1,-2\n",
            format!("{d}/weight.csv: line 2: weight: \"-2\" is not a finite weight >= 0"),
        ),
        (
            "obj.jsonl",
            "{\"user\":\"u\",\"item\":\"i\",\"timestamp\":1}\n[1,2]\n",
            format!(
                "{d}/obj.jsonl: line 2: not a JSON object: invalid type: sequence, expected a map at line 1 column 0"
            ),
        ),
        (
            "nested.jsonl",
            "{\"user\":{\"a\":1},\"item\":\"i\",\"timestamp\":1}\n",
            format!(
                "{d}/nested.jsonl: line 1: field \"user\" must be a string or a number, got {{\"a\":1}}"
            ),
        ),
        (
            "events.xml",
            "",
            format!(
                "{d}/events.xml: unsupported events file type .xml; use .parquet, .csv, .tsv or .jsonl"
            ),
        ),
    ];
    for (name, content, expected) in &cases {
        assert_eq!(
            &input_error(dir, name, content, &strict),
            expected,
            "{name}"
        );
    }
    // The valid first rows of refused files were not stored.
    assert!(
        EventStore::open(dir)
            .unwrap()
            .user_events("u", i64::MIN, i64::MAX)
            .unwrap()
            .is_empty()
    );

    let lenient = ImportOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let p = dir.join("mixed.csv");
    fs::write(&p, "user,item,timestamp\nu,i,1\nu,i,never\nu,j,2\n").unwrap();
    let report = import_events(dir, &[p], &lenient).unwrap();
    assert_eq!((report.rows, report.inserted, report.invalid), (3, 2, 1));
}

/// Synthetic data end to end through Parquet: recovered clusters are scored against the true
/// interests with the adjusted Rand index (ARI), per user, weighted by actions.
#[test]
fn synthetic_parquet_run_recovers_true_interests() {
    use pinnersage_catalog::items::import_items;
    use pinnersage_catalog::parquet_io::{ParquetReader, number_column, text_column};
    use pinnersage_catalog::synth::{SynthConfig, generate};
    use pinnersage_core::Clusterer;
    use pinnersage_core::metrics::adjusted_rand_index;
    use pinnersage_pipeline::batch::{UserBuffers, cluster_user};
    use pinnersage_store::events::EventChunk;
    use std::collections::HashMap;

    let scratch_dir = scratch("synth");

    let dir = scratch_dir.path();
    let cfg = SynthConfig {
        users: 150,
        items: 3_000,
        dim: 32,
        seed: 7,
        topics: Some(40),
        ..Default::default()
    };
    let synth = generate(&dir.join("synth"), &cfg, &|_| {}).unwrap();
    import_items(dir, &synth.items_file, &Default::default()).unwrap();
    let report = import_events(
        dir,
        std::slice::from_ref(&synth.events_file),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (report.inserted + report.duplicates, report.unknown_items),
        (synth.events, Some(0))
    );

    let out = dir.join("profiles.parquet");
    let batch = BatchConfig {
        settings: GenerationSettings {
            window_days: cfg.days,
            ..GenerationSettings::new(cfg.now)
        },
        shard: None,
        chunk_users: 64,
        parquet_out: Some(out.clone()),
        force: false,
        variant_alphas: Vec::new(),
    };
    let summary = run_batch(dir, &batch, &|_| {}).unwrap();
    assert_eq!(summary.users, 150);
    // The Parquet output holds every cluster of every user.
    let mut reader = ParquetReader::open(&out).unwrap();
    let mut rows = 0;
    while let Some(b) = reader.next_batch() {
        let (_, b) = b.unwrap();
        rows += text_column(&b, "medoid").unwrap().len();
    }
    let profiles = all_profiles(dir, 150);
    assert_eq!(
        rows,
        profiles.values().map(|p| p.clusters.len()).sum::<usize>()
    );

    // Ground truth per (user, item, time), from the synthetic events file.
    let mut truth: HashMap<(String, String, i64), u32> = HashMap::new();
    let mut reader = ParquetReader::open(&synth.events_file).unwrap();
    while let Some(b) = reader.next_batch() {
        let (_, b) = b.unwrap();
        let (u, i) = (
            text_column(&b, "user").unwrap(),
            text_column(&b, "item").unwrap(),
        );
        let (t, k) = (
            number_column(&b, "timestamp").unwrap(),
            number_column(&b, "true_interest").unwrap(),
        );
        for r in 0..u.len() {
            truth.insert(
                (
                    u[r].clone().unwrap(),
                    i[r].clone().unwrap(),
                    t[r].unwrap() as i64,
                ),
                k[r].unwrap() as u32,
            );
        }
    }
    let catalog = Catalog::open(dir).unwrap();
    let store = EventStore::open(dir).unwrap();
    let mut clusterer = Clusterer::new(ProfileParams::default()).unwrap();
    let mut buffers = UserBuffers::default();
    let (mut weighted, mut total) = (0.0, 0.0);
    let mut chunk = EventChunk::default();
    assert!(
        store
            .scan_users(i64::MIN, i64::MAX)
            .fill(&mut chunk, 1_000, |_| true)
            .unwrap()
    );
    assert_eq!(chunk.len(), profiles.len());
    for u in 0..chunk.len() {
        let events = chunk.user(u);
        let profile = cluster_user(&mut clusterer, &catalog, events, cfg.now, &mut buffers)
            .unwrap()
            .unwrap();
        let mut ours = vec![0usize; buffers.actions.len()];
        for (k, c) in profile.clusters.iter().enumerate() {
            c.members.iter().for_each(|&m| ours[m] = k);
        }
        let items: Vec<&str> = events.items().collect();
        let theirs: Vec<u32> = buffers
            .actions
            .events
            .iter()
            .map(|&e| truth[&(events.id.to_owned(), items[e].to_owned(), events.times[e])])
            .collect();
        let n = ours.len() as f64;
        weighted += adjusted_rand_index(&ours, &theirs) * n;
        total += n;
    }
    let ari = weighted / total;
    eprintln!(
        "synthetic: action-weighted mean ARI = {ari:.3} over {} users",
        profiles.len()
    );
    assert!(
        ari > 0.6,
        "clusters should recover the true interests, ARI {ari}"
    );
}

#[test]
fn parquet_events_with_timestamp_types_and_missing_columns() {
    use arrow_array::{ArrayRef, StringArray, TimestampMillisecondArray};
    use arrow_schema::{DataType, Field, TimeUnit};
    use pinnersage_catalog::parquet_io::ParquetWriter;

    let scratch_dir = scratch("pq-events");

    let dir = scratch_dir.path();
    let p = dir.join("e.parquet");
    let mut w = ParquetWriter::create(
        &p,
        vec![
            Field::new("user", DataType::Utf8, false),
            Field::new("item", DataType::Utf8, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ],
    )
    .unwrap();
    w.write(vec![
        Arc::new(StringArray::from(vec!["u", "u"])) as ArrayRef,
        Arc::new(StringArray::from(vec!["a", "b"])),
        Arc::new(TimestampMillisecondArray::from(vec![
            1_700_000_000_500,
            1_700_000_001_000,
        ])),
    ])
    .unwrap();
    w.finish().unwrap();
    let report = import_events(dir, &[p], &ImportOptions::default()).unwrap();
    assert_eq!(report.inserted, 2);
    let events = EventStore::open(dir)
        .unwrap()
        .user_events("u", 0, i64::MAX)
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.time).collect::<Vec<_>>(),
        vec![1_700_000_000, 1_700_000_001]
    );

    let q = dir.join("short.parquet");
    let mut w = ParquetWriter::create(
        &q,
        vec![
            Field::new("user", DataType::Utf8, false),
            Field::new("item", DataType::Utf8, false),
        ],
    )
    .unwrap();
    w.write(vec![
        Arc::new(StringArray::from(vec!["u"])) as ArrayRef,
        Arc::new(StringArray::from(vec!["a"])),
    ])
    .unwrap();
    w.finish().unwrap();
    match import_events(dir, std::slice::from_ref(&q), &ImportOptions::default()) {
        Err(ImportError::Input(msg)) => {
            assert_eq!(
                msg,
                format!(
                    "{}: no column \"timestamp\" (columns: user, item)",
                    q.display()
                )
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn online_profiles_keep_the_latest_actions_after_the_boundary_and_roll_over() {
    use pinnersage_pipeline::online::OnlineProfiles;
    use pinnersage_pipeline::online::ingest::{Ingestor, ResolvedEvents};

    let scratch_dir = scratch("online");

    let dir = scratch_dir.path();
    let catalog = online_catalog(dir);
    let params = ProfileParams {
        max_actions: 4,
        ..ProfileParams::default()
    };
    let online = Arc::new(OnlineProfiles::new(catalog.clone(), params, 1_000).unwrap());
    let store = Arc::new(EventStore::open(dir).unwrap());
    let ingestor = Ingestor::start(store.clone(), online.clone());
    // u1: one action before the boundary (covered by the batch), then 3 on topic 0 and 3 on
    // topic 2 (the oldest of which falls out of the latest 4).
    let events = vec![
        click("u1", "t1-0", 900),
        click("u1", "t0-1", 1_001),
        click("u1", "t0-2", 1_002),
        click("u1", "t0-3", 1_003),
        click("u1", "t2-1", 1_004),
        click("u1", "t2-2", 1_005),
        click("u1", "t2-3", 1_006),
        click("u2", "t1-5", 2_000),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    ingestor
        .submit(
            ResolvedEvents::resolve(events.clone(), &catalog).unwrap(),
            Box::new(move |outcome| tx.send(outcome).unwrap()),
        )
        .unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), vec![true; 8]);
    let u1 = online.get("u1").unwrap();
    let times: Vec<i64> = u1.actions.iter().map(|a| a.time).collect();
    assert_eq!(times, vec![1_003, 1_004, 1_005, 1_006]);
    let sizes: Vec<usize> = u1.clusters.iter().map(|c| c.members.len()).collect();
    assert_eq!(sizes, vec![3, 1], "topic 2 (3 actions) first, then topic 0");
    assert_eq!(catalog.id(u1.clusters[0].members[0] as usize), "t2-3");
    // A retry stores nothing and changes nothing.
    let (tx, rx) = std::sync::mpsc::channel();
    ingestor
        .submit(
            ResolvedEvents::resolve(events, &catalog).unwrap(),
            Box::new(move |outcome| tx.send(outcome).unwrap()),
        )
        .unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), vec![false; 8]);
    assert_eq!(online.get("u1").unwrap(), u1);
    drop(ingestor);

    // A fresh state recovers the same from the store.
    let params = online.params().clone();
    let recovered = OnlineProfiles::new(catalog.clone(), params.clone(), 1_000).unwrap();
    assert_eq!(recovered.recover(&store).unwrap(), 7);
    assert_eq!(recovered.get("u1"), online.get("u1"));
    assert_eq!(recovered.users(), 2);

    // Cut at the generation's variant alphas too: each variant holds the clusters a state at
    // its alpha has, and `cut_at` gives them (clustering on the spot for another alpha).
    for (alpha, clusters) in [(0.001, 4), (100.0, 1)] {
        let state = |alpha, variants: &[f64]| {
            let params = ProfileParams {
                alpha,
                ..params.clone()
            };
            let state = OnlineProfiles::new(catalog.clone(), params, 1_000).unwrap();
            let state = state.with_variant_alphas(variants).unwrap();
            state.recover(&store).unwrap();
            state
        };
        let expected = state(alpha, &[]).get("u1").unwrap().clusters.clone();
        assert_eq!(expected.len(), clusters, "alpha {alpha}");
        let with_variants = state(params.alpha, &[100.0, 0.001]);
        let u = with_variants.get("u1").unwrap();
        assert_eq!(u.clusters, u1.clusters);
        let variant = u.variants.iter().find(|(a, _)| *a == alpha).unwrap();
        assert_eq!(variant.1, expected, "alpha {alpha}");
        assert_eq!(with_variants.cut_at(&u, alpha).unwrap().clusters, expected);
        assert_eq!(online.cut_at(&u1, alpha).unwrap().clusters, expected);
    }
    assert!(online.cut_at(&u1, f64::NAN).is_err());

    // A batch at 1_004 covers u1's first two kept actions; u2 stays whole.
    let at = |now| GenerationSettings {
        params: params.clone(),
        ..GenerationSettings::new(now)
    };
    assert_eq!(online.roll_over(&at(1_004), &[]).unwrap(), 0);
    let times: Vec<i64> = online
        .get("u1")
        .unwrap()
        .actions
        .iter()
        .map(|a| a.time)
        .collect();
    assert_eq!(times, vec![1_005, 1_006]);
    assert_eq!(online.since(), 1_004);
    assert_eq!(online.roll_over(&at(5_000), &[]).unwrap(), 2);
    assert!(online.get("u1").is_none() && online.users() == 0);
}

#[test]
fn a_full_ingest_queue_refuses_instead_of_growing_and_loses_nothing_it_accepted() {
    use pinnersage_pipeline::online::OnlineProfiles;
    use pinnersage_pipeline::online::ingest::{Ingestor, Overloaded, ResolvedEvents};

    let scratch_dir = scratch("overload");

    let dir = scratch_dir.path();
    let catalog = online_catalog(dir);
    let online =
        Arc::new(OnlineProfiles::new(catalog.clone(), ProfileParams::default(), 0).unwrap());
    let store = Arc::new(EventStore::open(dir).unwrap());
    let ingestor = Ingestor::with_queue(store.clone(), online, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let (mut accepted, mut refused) = (0, 0);
    // Every commit fsyncs (milliseconds); submissions arrive in microseconds.
    for k in 0..2_000 {
        let event = click(&format!("u{k}"), "t0-1", 1_000 + k);
        let tx = tx.clone();
        let event = ResolvedEvents::resolve(vec![event], &catalog).unwrap();
        match ingestor.submit(event, Box::new(move |o| tx.send(o).unwrap())) {
            Ok(()) => accepted += 1,
            Err(Overloaded(capacity)) => {
                assert_eq!(capacity, 1);
                refused += 1;
            }
        }
    }
    drop(ingestor); // finishes what is queued
    drop(tx);
    assert!(
        refused > 0,
        "a queue of one never filled: {accepted} accepted"
    );
    let replies: Vec<_> = rx.iter().collect();
    assert_eq!(
        replies.len(),
        accepted,
        "every accepted submission is answered"
    );
    assert!(replies.iter().all(|r| r.as_ref().unwrap() == &vec![true]));
    let stored: usize = store.users(0, i64::MAX).map(|u| u.unwrap().1.len()).sum();
    assert_eq!(stored, accepted, "exactly the accepted events are stored");
}

/// Re-clustering reuses its buffers from user to user, on one thread for small updates and
/// spread over the pool for big ones: every user still ends up exactly as when clustered alone
/// in a fresh state, whatever the users before it on the same buffers held.
#[test]
fn online_users_clustered_together_or_in_groups_equal_each_clustered_alone() {
    use pinnersage_pipeline::online::{Accepted, OnlineAction, OnlineProfiles};

    let scratch_dir = scratch("together");
    let dir = scratch_dir.path();
    let catalog = online_catalog(dir);
    let params = ProfileParams {
        max_actions: 8,
        ..ProfileParams::default()
    };
    let fresh = || OnlineProfiles::new(catalog.clone(), params.clone(), 1_000).unwrap();
    let users: Vec<String> = (0..600).map(|u| format!("u{u}")).collect();
    // 1 to 13 actions per user (some over max_actions), on 1 to 13 of the 30 items.
    let events: Vec<Accepted<'_>> = users
        .iter()
        .enumerate()
        .flat_map(|(u, user)| {
            (0..1 + u % 13).map(move |a| Accepted {
                user,
                item: "",
                action: OnlineAction {
                    row: ((u * 7 + a * a * 3) % 30) as u32,
                    time: 1_001 + ((a * 37 + u) % 500) as i64,
                    weight: 1.0 + (a % 3) as f32,
                },
            })
        })
        .collect();
    let together = fresh();
    let instance = catalog.instance();
    together.apply(&events, instance);
    let grouped = fresh();
    events
        .chunks(50)
        .for_each(|group| grouped.apply(group, instance));
    for user in &users {
        let alone = fresh();
        let own: Vec<Accepted<'_>> = events.iter().filter(|e| e.user == user).copied().collect();
        alone.apply(&own, instance);
        let expected = alone.get(user).expect("online actions");
        assert!(!expected.clusters.is_empty(), "{user}");
        assert_eq!(together.get(user).as_deref(), Some(&*expected), "{user}");
        assert_eq!(grouped.get(user).as_deref(), Some(&*expected), "{user}");
    }
}

#[test]
fn online_state_stays_within_its_budget_and_evicted_users_come_back_whole() {
    use pinnersage_pipeline::online::OnlineProfiles;
    use pinnersage_pipeline::online::ingest::{Ingestor, ResolvedEvents};

    let scratch_dir = scratch("budget");

    let dir = scratch_dir.path();
    let catalog = online_catalog(dir);
    let params = ProfileParams {
        max_actions: 5,
        ..ProfileParams::default()
    };
    // 64 shards x 2 users: at most 128 users in memory.
    let online = Arc::new(
        OnlineProfiles::new(catalog.clone(), params.clone(), 1_000)
            .unwrap()
            .with_max_users(128),
    );
    let store = Arc::new(EventStore::open(dir).unwrap());
    online.attach_store(store.clone());
    let ingestor = Ingestor::start(store.clone(), online.clone());
    let users = 1_000;
    for round in 0..3i64 {
        // Two passes over the users: a user's second event comes ~1,000 users after the first,
        // when they are evicted again, and all of a round is submitted before any answer, so
        // the state runs ahead of the store: a rebuild must wait for the writes before it.
        let events: Vec<Event> = (0..2 * users)
            .map(|k| {
                let (pass, u) = (k / users, k % users);
                let item = format!("t{}-{}", u % 3, 2 * round + pass + 1);
                click(
                    &format!("u{u}"),
                    &item,
                    1_001 + round * 10_000 + pass * 5_000 + u,
                )
            })
            .collect();
        let answers: Vec<_> = events
            .chunks(100)
            .map(|chunk| {
                let (tx, rx) = std::sync::mpsc::channel();
                ingestor
                    .submit(
                        ResolvedEvents::resolve(chunk.to_vec(), &catalog).unwrap(),
                        Box::new(move |o| tx.send(o).unwrap()),
                    )
                    .unwrap();
                rx
            })
            .collect();
        for rx in answers {
            assert!(rx.recv().unwrap().unwrap().iter().all(|&new| new));
        }
        assert!(online.users() <= 128, "{} users in memory", online.users());
    }
    assert!(online.evictions() > 0);
    // Every user, evicted or not, equals what an unbounded state rebuilt from the store holds.
    let reference = OnlineProfiles::new(catalog, params, 1_000).unwrap();
    reference.recover(&store).unwrap();
    for u in 0..users {
        let user = format!("u{u}");
        let got = online.get(&user).expect("evicted users are rebuilt");
        assert_eq!(Some(got), reference.get(&user), "{user}");
        assert_eq!(online.get(&user).unwrap().actions.len(), 5);
    }
    assert!(online.users() <= 128);
    drop(ingestor);
}

/// Events applied ahead of their store write are visible at once, and a user evicted meanwhile
/// is rebuilt only once the store has them: a rebuild waits for the writes before it.
#[test]
fn an_evicted_user_is_rebuilt_only_after_the_writes_ahead_of_the_store() {
    use pinnersage_pipeline::online::{OnlineAction, OnlineProfiles};

    let scratch_dir = scratch("ahead");
    let dir = scratch_dir.path();
    let catalog = online_catalog(dir);
    // One user per shard: a thousand others evict `a`.
    let online = Arc::new(
        OnlineProfiles::new(catalog.clone(), ProfileParams::default(), 1_000)
            .unwrap()
            .with_max_users(64),
    );
    let store = Arc::new(EventStore::open(dir).unwrap());
    online.attach_store(store.clone());
    let accepted = |events: &[Event]| -> Vec<(String, String, OnlineAction)> {
        events
            .iter()
            .map(|e| {
                let row = catalog.row_of(&e.item).unwrap() as u32;
                let action = OnlineAction {
                    row,
                    time: e.time,
                    weight: e.weight,
                };
                (e.user.clone(), e.item.clone(), action)
            })
            .collect()
    };
    let apply_ahead = |events: &[Event]| {
        let owned = accepted(events);
        online.apply_ahead(&borrowed(&owned), catalog.instance())
    };
    let first = vec![click("a", "t1-1", 1_001)];
    let others: Vec<Event> = (0..1_000)
        .map(|u| click(&format!("o{u}"), "t2-2", 1_002))
        .collect();
    let first_write = apply_ahead(&first);
    let others_write = apply_ahead(&others);
    assert!(online.evictions() > 900);
    // `a` is evicted and its event is not in the store yet: asking for `a` waits.
    let asking = {
        let online = online.clone();
        std::thread::spawn(move || online.get("a"))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !asking.is_finished(),
        "rebuilt before the store had the event"
    );
    store.insert(&first).unwrap();
    online.written(first_write);
    store.insert(&others).unwrap();
    online.written(others_write);
    let a = asking.join().unwrap().expect("a is rebuilt from the store");
    assert_eq!(
        a.actions,
        accepted(&first)[..].iter().map(|p| p.2).collect::<Vec<_>>()
    );
    // A later event of `a`, applied ahead of its write, joins what the store holds.
    let later = vec![click("a", "t1-2", 1_003)];
    let later_write = apply_ahead(&later);
    let a = online.get("a").unwrap();
    assert_eq!(a.actions.len(), 2);
    assert_eq!(a.clusters.len(), 1, "two items of one topic: one interest");
    store.insert(&later).unwrap();
    online.written(later_write);
}

/// A new catalog numbers the items differently (here: in reverse, one item dropped): after
/// `rebase`, every user's online state is the one its events give over the new catalog, for
/// users moved from the previous catalog, for events whose rows were found in the previous
/// catalog but applied after the rebase, and for users two catalogs behind (rebuilt from the
/// store).
#[test]
fn online_state_follows_a_renumbered_catalog() {
    use pinnersage_pipeline::online::{OnlineAction, OnlineProfiles};

    let first_dir = scratch("rebase-a");
    let first = online_catalog(first_dir.path());
    let renumbered = |name: &str| {
        let dir = scratch(name);
        let mut b = CatalogBuilder::new(dir.path(), 4, true).unwrap();
        for row in (0..first.rows()).rev() {
            let id = first.id(row);
            if id != "t2-9" {
                b.push(id, &mut first.embedding(row).to_vec()).unwrap();
            }
        }
        b.commit("renumbered").unwrap();
        let mut catalog = Catalog::open(dir.path()).unwrap();
        catalog.build_hash_index();
        (dir, Arc::new(catalog))
    };
    let (_second_dir, second) = renumbered("rebase-b");
    let (_third_dir, third) = renumbered("rebase-c");
    let params = ProfileParams {
        max_actions: 8,
        ..ProfileParams::default()
    };
    let events: Vec<Event> = ["t0-1", "t0-2", "t1-3", "t2-9", "t1-4"]
        .iter()
        .enumerate()
        .flat_map(|(k, item)| {
            [
                click("a", item, 1_001 + k as i64),
                click("b", item, 1_002 + k as i64),
            ]
        })
        .collect();
    let store_dir = scratch("rebase-store");
    let store = Arc::new(EventStore::open(store_dir.path()).unwrap());
    store.insert(&events).unwrap();
    let accepted = |events: &[Event], catalog: &Catalog| -> Vec<(String, String, OnlineAction)> {
        events
            .iter()
            .filter_map(|e| {
                let row = catalog.row_of(&e.item)? as u32;
                let action = OnlineAction {
                    row,
                    time: e.time,
                    weight: e.weight,
                };
                Some((e.user.clone(), e.item.clone(), action))
            })
            .collect()
    };
    let apply = |online: &OnlineProfiles, events: &[Event], catalog: &Catalog| {
        let owned = accepted(events, catalog);
        online.apply(&borrowed(&owned), catalog.instance());
    };
    // What each user's state is when built on the new catalog from the start.
    let expected = OnlineProfiles::new(second.clone(), params.clone(), 1_000).unwrap();
    apply(&expected, &events, &second);
    let ids = |catalog: &Catalog, state: &pinnersage_pipeline::online::OnlineUser| {
        let actions: Vec<&str> = state
            .actions
            .iter()
            .map(|a| catalog.id(a.row as usize))
            .collect();
        let medoids: Vec<&str> = state
            .clusters
            .iter()
            .map(|c| catalog.id(c.medoid as usize))
            .collect();
        format!("{actions:?} {medoids:?}")
    };

    let online = OnlineProfiles::new(first.clone(), params.clone(), 1_000).unwrap();
    online.attach_store(store.clone());
    // `a`'s events all applied before; `b`'s last one resolved before and applied after.
    let (before, last) = events.split_at(events.len() - 1);
    apply(&online, before, &first);
    online.rebase(second.clone());
    apply(&online, last, &first);
    for user in ["a", "b"] {
        let got = online.get(user).unwrap();
        assert_eq!(got.catalog, second.instance(), "{user}");
        let want = expected.get(user).unwrap();
        // t2-9 is gone from the new catalog: its actions are dropped.
        assert_eq!(got.actions.len(), 4, "{user}");
        assert_eq!(ids(&second, &got), ids(&second, &want), "{user}");
    }

    // Two catalogs later without being read: rebuilt from the store's events.
    let online = OnlineProfiles::new(first.clone(), params, 1_000).unwrap();
    online.attach_store(store.clone());
    apply(&online, &events, &first);
    online.rebase(second.clone());
    online.rebase(third.clone());
    let got = online.get("a").unwrap();
    assert_eq!(got.catalog, third.instance());
    let want = expected.get("a").unwrap();
    assert_eq!(ids(&third, &got), ids(&second, &want));
}
