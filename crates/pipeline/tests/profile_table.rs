//! The profile table: the in-memory batch equals the embedded batch, and `import profiles`
//! publishes what it reads, or nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, StringArray, UInt32Array};
use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::items::import_items;
use pinnersage_catalog::parquet_io::{ParquetReader, ParquetWriter, text_column};
use pinnersage_core::{Embeddings, ProfileParams};
use pinnersage_pipeline::batch::memory::{EventTable, Vectors, build_profiles};
use pinnersage_pipeline::batch::{BatchConfig, run_batch};
use pinnersage_pipeline::data_in::import_events::import_events;
use pinnersage_pipeline::exchange::import_profiles::{ImportProfilesError, import_profiles};
use pinnersage_pipeline::exchange::profile_table::{arrays, fields};
use pinnersage_store::profiles::{ProfileStore, StoredProfile};
use pinnersage_store::settings::GenerationSettings;

const DAY: i64 = 86_400;
const NOW: i64 = 1_700_000_000;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ps-table-{name}-"))
        .tempdir()
        .unwrap()
}

/// A SplitMix64 stream: deterministic data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Events as columns and as the CSV `import events` reads.
struct Data {
    users: Vec<String>,
    items: Vec<String>,
    times: Vec<i64>,
    weights: Vec<f32>,
    actions: Vec<String>,
    item_ids: Vec<String>,
    vectors: Vec<f32>,
    dim: usize,
}

/// 400 items in 8 topics x 6 dims, 80 users; times on a coarse grid (many ties), repeated
/// events (some with another weight), unknown items, events outside the window and one user
/// far above the action cap.
impl Data {
    /// The events as the in-memory batch reads them.
    fn events(&self) -> EventTable<'_> {
        EventTable {
            users: &self.users,
            items: &self.items,
            times: &self.times,
            weights: Some(&self.weights),
            actions: Some(&self.actions),
        }
    }
}

fn data(dir: &Path) -> Data {
    let mut rng = Rng(7);
    let dim = 6;
    let mut item_ids = Vec::new();
    let mut vectors = Vec::new();
    for i in 0..400 {
        let topic = i % 8;
        item_ids.push(format!("i{i}"));
        for d in 0..dim {
            let centre = if d == topic % dim { 1.0 } else { 0.0 } + (topic / dim) as f32 * 0.5;
            vectors.push(centre + 0.3 * rng.unit());
        }
    }
    let mut d = Data {
        users: vec![],
        items: vec![],
        times: vec![],
        weights: vec![],
        actions: vec![],
        item_ids,
        vectors,
        dim,
    };
    for u in 0..80 {
        let n = if u == 0 {
            140
        } else {
            3 + rng.below(40) as usize
        };
        let topics = 1 + rng.below(4);
        for _ in 0..n {
            let topic = rng.below(topics) * 2 % 8;
            let item = if rng.below(25) == 0 {
                format!("unknown{}", rng.below(5))
            } else {
                format!("i{}", topic + 8 * rng.below(50))
            };
            let time = NOW - (rng.below(100) as i64) * DAY / 2 + 600 * rng.below(2) as i64;
            let weight = [0.5, 1.0, 2.0][rng.below(3) as usize];
            let action = ["", "click", "save"][rng.below(3) as usize].to_owned();
            let repeat = rng.below(10) == 0;
            for w in [weight, if repeat { 3.0 } else { weight }]
                .into_iter()
                .take(1 + repeat as usize)
            {
                d.users.push(format!("u{u}"));
                d.items.push(item.clone());
                d.times.push(time);
                d.weights.push(w);
                d.actions.push(action.clone());
            }
        }
    }
    let mut items_csv = String::new();
    for (r, id) in d.item_ids.iter().enumerate() {
        let v: Vec<String> = d.vectors[r * dim..(r + 1) * dim]
            .iter()
            .map(|x| format!("{x:?}"))
            .collect();
        items_csv.push_str(&format!("{id},{}\n", v.join(",")));
    }
    fs::write(dir.join("items.csv"), items_csv).unwrap();
    let mut events_csv = String::from("user,item,timestamp,action,weight\n");
    for k in 0..d.users.len() {
        events_csv.push_str(&format!(
            "{},{},{},{},{:?}\n",
            d.users[k], d.items[k], d.times[k], d.actions[k], d.weights[k]
        ));
    }
    fs::write(dir.join("events.csv"), events_csv).unwrap();
    d
}

fn params() -> ProfileParams {
    ProfileParams {
        alpha: 1.5,
        lambda: 0.02,
        max_actions: 60,
    }
}

/// The settings the tests' profiles are computed with, at `now`.
fn settings(now: i64) -> GenerationSettings {
    GenerationSettings {
        now,
        window_days: 30,
        params: params(),
    }
}

/// Imports the data and runs the embedded batch; returns every user's stored profile.
fn embedded(dir: &Path) -> Vec<(String, StoredProfile)> {
    import_items(dir, &dir.join("items.csv"), &Default::default()).unwrap();
    import_events(dir, &[dir.join("events.csv")], &Default::default()).unwrap();
    let config = BatchConfig {
        parquet_out: Some(dir.join("profiles.parquet")),
        ..BatchConfig::with(settings(NOW))
    };
    run_batch(dir, &config, &|_| {}).unwrap();
    stored(dir)
}

fn stored(dir: &Path) -> Vec<(String, StoredProfile)> {
    let store = ProfileStore::open(dir).unwrap();
    let mut users: Vec<String> = store
        .users("", usize::MAX)
        .unwrap()
        .into_iter()
        .map(|u| u.user)
        .collect();
    users.sort();
    users
        .into_iter()
        .map(|u| {
            let p = store.get(&u).unwrap().unwrap();
            (u, p)
        })
        .collect()
}

fn sorted(mut profiles: Vec<(String, StoredProfile)>) -> Vec<(String, StoredProfile)> {
    profiles.sort_by(|a, b| a.0.cmp(&b.0));
    profiles
}

#[test]
fn in_memory_profiles_equal_the_embedded_batch_for_both_vector_sources() {
    let scratch_dir = scratch("parity");
    let dir = scratch_dir.path();
    let d = data(dir);
    let expected = embedded(dir);
    assert!(expected.len() > 50, "{} users", expected.len());
    assert!(
        expected[0]
            .1
            .clusters
            .iter()
            .map(|c| c.size as usize)
            .sum::<usize>()
            <= 60,
        "the cap applies"
    );
    let events = d.events();
    let config = settings(NOW);
    let x = Embeddings::new(&d.vectors, d.dim).unwrap();
    let by_table = build_profiles(
        &events,
        &Vectors::Items {
            ids: &d.item_ids,
            embeddings: x,
        },
        &config,
        &[],
        2,
    )
    .unwrap();
    assert!(by_table.duplicates > 0 && by_table.unknown_item_events > 0);
    assert_eq!(sorted(by_table.profiles.clone()), expected);

    // Joined upstream: one vector per event (unknown items have none and are left out, as an
    // inner join leaves them).
    let catalog = Catalog::open(dir).unwrap();
    let known: Vec<usize> = (0..d.users.len())
        .filter(|&k| catalog.row_of(&d.items[k]).is_some())
        .collect();
    let pick = |v: &Vec<String>| -> Vec<String> { known.iter().map(|&k| v[k].clone()).collect() };
    let (users, items, actions) = (pick(&d.users), pick(&d.items), pick(&d.actions));
    let times: Vec<i64> = known.iter().map(|&k| d.times[k]).collect();
    let weights: Vec<f32> = known.iter().map(|&k| d.weights[k]).collect();
    let mut joined = Vec::new();
    for &k in &known {
        joined.extend_from_slice(catalog.embedding(catalog.row_of(&d.items[k]).unwrap()));
    }
    let per_event = build_profiles(
        &EventTable {
            users: &users,
            items: &items,
            times: &times,
            weights: Some(&weights),
            actions: Some(&actions),
        },
        &Vectors::PerEvent(Embeddings::new(&joined, d.dim).unwrap()),
        &config,
        &[],
        1,
    )
    .unwrap();
    assert_eq!(sorted(per_event.profiles), expected);
}

/// Every user's profile in the current generation's variant cut at `alpha`, sorted by user.
fn stored_variant(dir: &Path, alpha: f64) -> Vec<(String, StoredProfile)> {
    let store = ProfileStore::open(dir).unwrap();
    let users = store.users("", usize::MAX).unwrap();
    sorted(
        (users.into_iter())
            .map(|u| {
                let p = store
                    .with_variant_profile(alpha, &u.user, |v| v.map(|v| v.to_stored()))
                    .unwrap()
                    .expect("the generation has the variant")
                    .expect("every user has a profile in each variant");
                (u.user, p)
            })
            .collect(),
    )
}

#[test]
fn in_memory_variants_equal_the_embedded_batchs_variants() {
    let scratch_dir = scratch("variants");
    let dir = scratch_dir.path();
    let d = data(dir);
    import_items(dir, &dir.join("items.csv"), &Default::default()).unwrap();
    import_events(dir, &[dir.join("events.csv")], &Default::default()).unwrap();
    // A repeat, and the generation's own alpha, are cut once, as the generation's.
    let asked = [0.1, 20.0, params().alpha, 0.1];
    let config = BatchConfig {
        variant_alphas: asked.to_vec(),
        ..BatchConfig::with(settings(NOW))
    };
    run_batch(dir, &config, &|_| {}).unwrap();
    let events = d.events();
    let vectors = Vectors::Items {
        ids: &d.item_ids,
        embeddings: Embeddings::new(&d.vectors, d.dim).unwrap(),
    };
    let got = build_profiles(&events, &vectors, &settings(NOW), &asked, 2).unwrap();
    assert_eq!(sorted(got.profiles.clone()), stored(dir));
    let alphas: Vec<f64> = got.variants.iter().map(|v| v.alpha).collect();
    assert_eq!(alphas, [0.1, 20.0]);
    for variant in &got.variants {
        let expected = stored_variant(dir, variant.alpha);
        assert_eq!(
            sorted(variant.profiles.clone()),
            expected,
            "alpha {}",
            variant.alpha
        );
        assert_ne!(
            expected,
            stored(dir),
            "alpha {} cuts differently",
            variant.alpha
        );
    }

    // Bad variants are refused, naming the setting.
    for bad in [vec![f64::NAN], vec![-1.0], vec![0.1, 0.2, 0.3, 0.4, 0.5]] {
        let err = build_profiles(&events, &vectors, &settings(NOW), &bad, 1).unwrap_err();
        assert!(err.to_string().contains("variant alpha"), "{bad:?}: {err}");
    }
}

#[test]
fn bad_in_memory_input_names_the_row_or_column() {
    let ids = vec!["a".to_owned()];
    let x = [0.0f32, 1.0];
    let vectors = Vectors::Items {
        ids: &ids,
        embeddings: Embeddings::new(&x, 2).unwrap(),
    };
    let config = GenerationSettings::new(NOW);
    let users = vec!["u".to_owned(), String::new()];
    let items = vec!["a".to_owned(), "a".to_owned()];
    let table = |times| EventTable {
        users: &users,
        items: &items,
        times,
        weights: None,
        actions: None,
    };
    let err = build_profiles(&table(&[NOW, NOW]), &vectors, &config, &[], 1).unwrap_err();
    assert!(err.to_string().contains("event row 1"), "{err}");
    let err = build_profiles(&table(&[NOW]), &vectors, &config, &[], 1).unwrap_err();
    assert!(err.to_string().contains("column \"time\""), "{err}");
    let bad = GenerationSettings {
        params: ProfileParams {
            alpha: f64::NAN,
            ..ProfileParams::default()
        },
        ..config
    };
    let err = build_profiles(&table(&[NOW, NOW]), &vectors, &bad, &[], 1).unwrap_err();
    assert!(err.to_string().contains("alpha"), "{err}");
}

#[test]
fn import_profiles_publishes_the_batch_output_unchanged() {
    let scratch_dir = scratch("roundtrip");
    let dir = scratch_dir.path();
    data(dir);
    let expected = embedded(dir);
    let before = ProfileStore::current_dir(dir).unwrap().unwrap();
    let options = settings(NOW + 5);
    let report = import_profiles(dir, &[dir.join("profiles.parquet")], &options, &|_| {}).unwrap();
    assert_ne!(report.generation, before);
    assert_eq!(report.users as usize, expected.len());
    assert_eq!(stored(dir), expected);
    let store = ProfileStore::open(dir).unwrap();
    assert_eq!(
        (
            store.meta().settings.now,
            store.meta().settings.params.alpha,
            store.meta().settings.params.lambda
        ),
        (NOW + 5, 1.5, 0.02)
    );
    assert!(!store.popular().unwrap().is_empty());
    assert!(
        expected
            .iter()
            .all(|(_, p)| p.items.iter().all(|i| i.importance.is_some())),
        "the batch stores every item's importance"
    );

    // A file written before member_importance existed still imports, without item importance.
    let old = dir.join("old.parquet");
    let mut w = ParquetWriter::create(&old, fields()[..7].to_vec()).unwrap();
    w.write(arrays(&expected)[..7].to_vec()).unwrap();
    w.finish().unwrap();
    import_profiles(dir, &[old], &options, &|_| {}).unwrap();
    let without: Vec<(String, StoredProfile)> = expected
        .iter()
        .map(|(u, p)| {
            let mut p = p.clone();
            p.items.iter_mut().for_each(|i| i.importance = None);
            (u.clone(), p)
        })
        .collect();
    assert_eq!(stored(dir), without);
}

/// Writes one profile table with `profiles`, then lets `edit` replace columns.
fn table_file(
    dir: &Path,
    name: &str,
    profiles: &[(String, StoredProfile)],
    edit: impl FnOnce(&mut Vec<ArrayRef>),
) -> PathBuf {
    let path = dir.join(name);
    let mut columns = arrays(profiles);
    edit(&mut columns);
    let mut w = ParquetWriter::create(&path, fields()).unwrap();
    w.write(columns).unwrap();
    w.finish().unwrap();
    path
}

#[test]
fn bad_profile_tables_name_the_row_and_publish_nothing() {
    let scratch_dir = scratch("bad");
    let dir = scratch_dir.path();
    data(dir);
    let profiles = embedded(dir);
    let current = ProfileStore::current_dir(dir).unwrap().unwrap();
    let rows: usize = profiles.iter().map(|(_, p)| p.clusters.len()).sum();
    let strings = |col: &ArrayRef| -> Vec<String> {
        col.as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .iter()
            .map(|v| v.unwrap().to_owned())
            .collect()
    };
    let options = GenerationSettings::new(NOW);
    let attempt = |file: PathBuf| -> String {
        let err = import_profiles(dir, &[file], &options, &|_| {}).unwrap_err();
        assert_eq!(
            ProfileStore::current_dir(dir).unwrap().unwrap(),
            current,
            "nothing published after: {err}"
        );
        err.to_string()
    };

    let f = table_file(dir, "medoid.parquet", &profiles, |c| {
        let mut m = strings(&c[2]);
        m[3] = "no-such-item".into();
        c[2] = Arc::new(StringArray::from(m));
    });
    let err = attempt(f);
    assert!(
        err.contains("row 3") && err.contains("no-such-item"),
        "{err}"
    );

    let f = table_file(dir, "importance.parquet", &profiles, |c| {
        let mut v = vec![1.0; rows];
        v[5] = f64::NAN;
        c[4] = Arc::new(Float64Array::from(v));
    });
    let err = attempt(f);
    assert!(err.contains("row 5") && err.contains("importance"), "{err}");

    let f = table_file(dir, "rank.parquet", &profiles, |c| {
        c[1] = Arc::new(UInt32Array::from(vec![0u32; rows]));
    });
    let err = attempt(f);
    assert!(err.contains("duplicate (user, rank)"), "{err}");

    let f = table_file(dir, "scattered.parquet", &profiles, |c| {
        let mut u = strings(&c[0]);
        let last = u.len() - 1;
        u[last] = u[0].clone();
        c[0] = Arc::new(StringArray::from(u));
    });
    let err = attempt(f);
    assert!(err.contains("appears again"), "{err}");

    let path = dir.join("schema.parquet");
    let mut w = ParquetWriter::create(&path, fields()[..6].to_vec()).unwrap();
    w.write(arrays(&profiles)[..6].to_vec()).unwrap();
    w.finish().unwrap();
    let err = attempt(path);
    assert!(err.contains("no column \"members\""), "{err}");

    let err = import_profiles(dir, &[dir.join("missing.parquet")], &options, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.parquet"), "{err}");
    assert!(matches!(
        import_profiles(dir, &[dir.join("medoid.parquet")], &options, &|_| {}),
        Err(ImportProfilesError::Row { row: 3, .. })
    ));
}

#[test]
fn shipped_generations_are_imported_once_and_bad_ones_refused() {
    use pinnersage_core::hash::Share;
    use pinnersage_pipeline::exchange::ship::{
        ShipError, import_shipped, pending_shipped, ship_profiles,
    };
    let scratch_dir = scratch("ship");
    let dir = scratch_dir.path();
    data(dir);
    let expected = embedded(dir);
    let shared = dir.join("shared");
    let options = settings(NOW + 7);
    // Nothing shipped yet: nothing to do.
    assert!(
        import_shipped(dir, &shared, &Share::everyone())
            .unwrap()
            .is_none()
    );

    let shipped =
        ship_profiles(&shared, &[dir.join("profiles.parquet")], &options, 1, None).unwrap();
    assert_eq!(shipped.manifest.files, ["part-00000.parquet"]);
    assert!(pending_shipped(dir, &shared).unwrap().is_some());
    let report = import_shipped(dir, &shared, &Share::everyone())
        .unwrap()
        .expect("imported");
    assert_eq!(report.users as usize, expected.len());
    assert_eq!(stored(dir), expected);
    let meta = ProfileStore::open(dir).unwrap().meta().clone();
    let settings = &meta.settings;
    let (alpha, lambda) = (settings.params.alpha, settings.params.lambda);
    assert_eq!((settings.now, alpha, lambda), (NOW + 7, 1.5, 0.02));
    // Imported once: the next check has nothing to do.
    let generation = ProfileStore::current_dir(dir).unwrap();
    assert!(pending_shipped(dir, &shared).unwrap().is_none());
    assert!(
        import_shipped(dir, &shared, &Share::everyone())
            .unwrap()
            .is_none()
    );
    assert_eq!(ProfileStore::current_dir(dir).unwrap(), generation);

    // A generation whose rows this replica's catalog refuses: an error naming the row, the
    // replica's generation untouched.
    let bad = table_file(dir, "bad.parquet", &expected, |c| {
        let medoids: Vec<String> = (0..c[2].len()).map(|_| "no-such-item".into()).collect();
        c[2] = Arc::new(StringArray::from(medoids));
    });
    ship_profiles(&shared, &[bad], &options, 2, None).unwrap();
    let err = import_shipped(dir, &shared, &Share::everyone()).unwrap_err();
    assert!(
        matches!(
            err,
            ShipError::Import(ImportProfilesError::Row { row: 0, .. })
        ),
        "{err}"
    );
    assert_eq!(ProfileStore::current_dir(dir).unwrap(), generation);

    // Not a profile table: refused when shipping, nothing shipped.
    let current = std::fs::read_to_string(shared.join("CURRENT")).unwrap();
    let err = ship_profiles(&shared, &[dir.join("items.csv")], &options, 3, None).unwrap_err();
    assert!(err.to_string().contains("items.csv"), "{err}");
    assert_eq!(
        std::fs::read_to_string(shared.join("CURRENT")).unwrap(),
        current
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_replica_imports_its_partitions_users_with_the_whole_popular_list() {
    use pinnersage_core::hash::partition_of;
    use pinnersage_pipeline::exchange::import_profiles::import_profiles_of;
    let scratch_dir = scratch("held");
    let dir = scratch_dir.path();
    data(dir);
    let expected = embedded(dir);
    let table = [dir.join("profiles.parquet")];
    let options = settings(NOW + 5);
    import_profiles(dir, &table, &options, &|_| {}).unwrap();
    let whole = ProfileStore::open(dir).unwrap().popular().unwrap();
    assert!(!whole.is_empty());

    let held = |user: &str| partition_of(user, 4) < 2;
    let report = import_profiles_of(dir, &table, &options, &held, None, &|_| {}).unwrap();
    let kept: Vec<(String, StoredProfile)> = expected
        .iter()
        .filter(|(user, _)| held(user))
        .cloned()
        .collect();
    assert!(
        !kept.is_empty() && kept.len() < expected.len(),
        "{}",
        kept.len()
    );
    assert_eq!(report.users as usize, kept.len());
    assert_eq!(stored(dir), kept);
    assert_eq!(ProfileStore::open(dir).unwrap().popular().unwrap(), whole);
}

#[test]
fn a_partitioned_shipment_is_read_only_in_the_held_partitions_files() {
    use pinnersage_core::hash::{Share, partition_of};
    use pinnersage_pipeline::exchange::ship::{import_shipped, ship_profiles};
    let scratch_dir = scratch("split");
    let dir = scratch_dir.path();
    data(dir);
    let expected = embedded(dir);
    let options = settings(NOW + 3);
    import_profiles(dir, &[dir.join("profiles.parquet")], &options, &|_| {}).unwrap();
    let whole = ProfileStore::open(dir).unwrap().popular().unwrap();
    let shared = dir.join("shared");
    let shipped = ship_profiles(
        &shared,
        &[dir.join("profiles.parquet")],
        &options,
        1,
        Some(4),
    )
    .unwrap();
    let manifest = &shipped.manifest;
    assert_eq!(manifest.partitions, Some(4));
    assert_eq!(manifest.files.len(), 4);
    // Each file holds exactly its partition's users, every user's rows in one file.
    let mut all = Vec::new();
    for (p, name) in manifest.files.iter().enumerate() {
        let file = shipped.generation.join(name);
        let mut reader = ParquetReader::open(&file).unwrap();
        while let Some(batch) = reader.next_batch() {
            for user in text_column(&batch.unwrap().1, "user").unwrap() {
                let user = user.unwrap();
                assert_eq!(partition_of(&user, 4), p as u32, "{user} in {name}");
                all.push(user);
            }
        }
    }
    all.dedup();
    assert_eq!(all.len(), expected.len());

    // A replica of partitions 1 and 3 of the same 4 reads their two files only, keeps exactly
    // their users and has the popular list of the whole generation.
    let held_by = |share: &Share| -> Vec<(String, StoredProfile)> {
        (expected.iter())
            .filter(|(user, _)| share.holds(user).is_ok())
            .cloned()
            .collect()
    };
    let share = Share {
        count: 4,
        held: vec![1, 3],
    };
    let report = import_shipped(dir, &shared, &share).unwrap().unwrap();
    assert_eq!(report.files, 2);
    let held = held_by(&share);
    assert!(!held.is_empty() && held.len() < expected.len());
    assert_eq!(stored(dir), held);
    assert_eq!(ProfileStore::open(dir).unwrap().popular().unwrap(), whole);

    // A replica partitioned otherwise (2 partitions) reads every file and keeps its users.
    ship_profiles(
        &shared,
        &[dir.join("profiles.parquet")],
        &options,
        2,
        Some(4),
    )
    .unwrap();
    let share = Share {
        count: 2,
        held: vec![0],
    };
    let report = import_shipped(dir, &shared, &share).unwrap().unwrap();
    assert_eq!(report.files, 4);
    assert_eq!(stored(dir), held_by(&share));
    assert_eq!(ProfileStore::open(dir).unwrap().popular().unwrap(), whole);

    // Everyone, from the same partitioned generation: the whole import.
    ship_profiles(
        &shared,
        &[dir.join("profiles.parquet")],
        &options,
        3,
        Some(4),
    )
    .unwrap();
    import_shipped(dir, &shared, &Share::everyone())
        .unwrap()
        .unwrap();
    assert_eq!(stored(dir), expected);

    // Out of range: refused.
    assert!(
        ship_profiles(
            &shared,
            &[dir.join("profiles.parquet")],
            &options,
            4,
            Some(0)
        )
        .is_err()
    );
}

/// Every user's profile in the variant cut at `alpha` (users of the main profiles).
fn variant_stored(dir: &Path, alpha: f64) -> Vec<(String, StoredProfile)> {
    let users = stored(dir);
    let store = ProfileStore::open(dir).unwrap();
    users
        .into_iter()
        .filter_map(|(user, _)| {
            let read =
                |v: Option<pinnersage_store::profiles::ProfileView<'_>>| v.map(|v| v.to_stored());
            let p = store.with_variant_profile(alpha, &user, read).unwrap()?;
            Some((user, p?))
        })
        .collect()
}

#[test]
fn variants_travel_through_the_table_a_shipment_and_a_replicas_import() {
    use pinnersage_core::hash::Share;
    use pinnersage_pipeline::exchange::ship::{import_shipped, ship_profiles};
    let scratch_dir = scratch("variants");
    let dir = scratch_dir.path();
    data(dir);
    import_items(dir, &dir.join("items.csv"), &Default::default()).unwrap();
    import_events(dir, &[dir.join("events.csv")], &Default::default()).unwrap();
    let table = dir.join("profiles.parquet");
    let alphas = [0.5, 4.0];
    let config = BatchConfig {
        parquet_out: Some(table.clone()),
        variant_alphas: alphas.to_vec(),
        ..BatchConfig::with(settings(NOW))
    };
    run_batch(dir, &config, &|_| {}).unwrap();
    let main = stored(dir);
    let variants: Vec<_> = alphas.iter().map(|&a| variant_stored(dir, a)).collect();
    assert!(variants.iter().all(|v| v.len() == main.len() && v != &main));

    // The table imports as the same generation: its own cut, its variants.
    let report = import_profiles(
        dir,
        std::slice::from_ref(&table),
        &settings(NOW + 5),
        &|_| {},
    );
    assert_eq!(report.unwrap().users as usize, main.len());
    assert_eq!(stored(dir), main);
    let store = ProfileStore::open(dir).unwrap();
    assert_eq!(store.meta().variant_alphas, alphas);
    let popular = store.popular().unwrap();
    drop(store);
    for (&alpha, variant) in alphas.iter().zip(&variants) {
        assert_eq!(&variant_stored(dir, alpha), variant, "alpha {alpha}");
    }
    // The variants' rows do not count in the popular list: a table without them gives the same.
    let plain = dir.join("plain.parquet");
    let mut w = ParquetWriter::create(&plain, fields()).unwrap();
    w.write(arrays(&main)).unwrap();
    w.finish().unwrap();
    import_profiles(dir, &[plain], &settings(NOW + 6), &|_| {}).unwrap();
    assert_eq!(ProfileStore::open(dir).unwrap().popular().unwrap(), popular);

    // Shipped in 4 partitions: a replica of partitions 1 and 3 has its users in every cut, and
    // the whole generation's popular list.
    let shared = dir.join("shared");
    ship_profiles(
        &shared,
        std::slice::from_ref(&table),
        &settings(NOW + 7),
        1,
        Some(4),
    )
    .unwrap();
    let share = Share {
        count: 4,
        held: vec![1, 3],
    };
    import_shipped(dir, &shared, &share).unwrap().unwrap();
    let held = |profiles: &[(String, StoredProfile)]| -> Vec<(String, StoredProfile)> {
        (profiles.iter())
            .filter(|(user, _)| share.holds(user).is_ok())
            .cloned()
            .collect()
    };
    assert_eq!(stored(dir), held(&main));
    for (&alpha, variant) in alphas.iter().zip(&variants) {
        assert_eq!(variant_stored(dir, alpha), held(variant), "alpha {alpha}");
    }
    assert_eq!(ProfileStore::open(dir).unwrap().popular().unwrap(), popular);

    // A variant at the generation's own alpha is refused, naming the row; nothing published.
    let before = ProfileStore::current_dir(dir).unwrap();
    let mut own = settings(NOW + 8);
    own.params.alpha = alphas[1];
    let err = import_profiles(dir, &[table], &own, &|_| {}).unwrap_err();
    assert!(matches!(err, ImportProfilesError::Row { .. }), "{err}");
    assert!(
        err.to_string().contains("alpha 4 is the generation's own"),
        "{err}"
    );
    assert_eq!(ProfileStore::current_dir(dir).unwrap(), before);
}
