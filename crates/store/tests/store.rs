//! The event log and profile generations on a real disk.

use pinnersage_core::ProfileParams;
use pinnersage_store::events::{Event, EventStore, InsertStats};
use pinnersage_store::profiles::{
    GenerationMeta, ProfileStore, ProfileStoreError, ProfileWriter, StoredCluster, StoredItem,
    StoredProfile,
};
use pinnersage_store::settings::GenerationSettings;

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ps-store-{name}-"))
        .tempdir()
        .unwrap()
}

fn ev(user: &str, item: &str, time: i64, action: &str) -> Event {
    Event {
        user: user.into(),
        item: item.into(),
        time,
        action: action.into(),
        weight: 1.0,
        id: None,
        request_id: None,
    }
}

#[test]
fn events_are_grouped_by_user_in_time_order_and_deduplicated() {
    let scratch_dir = scratch("events");
    let dir = scratch_dir.path();
    {
        let store = EventStore::open(dir).unwrap();
        let batch = vec![
            ev("u2", "b", 300, "click"),
            ev("u1", "a", 200, "repin"),
            ev("u1", "c", -50, "click"),
            ev("u1", "a", 100, "click"),
            ev("u10", "z", 5, ""),
            ev("u1", "a", 100, "click"), // duplicate inside the batch
        ];
        assert_eq!(
            store.insert(&batch).unwrap(),
            InsertStats {
                inserted: 5,
                duplicates: 1
            }
        );
        // Re-importing the same events adds nothing.
        assert_eq!(
            store.insert(&batch[..3]).unwrap(),
            InsertStats {
                inserted: 0,
                duplicates: 3
            }
        );
        // Same user and time but another item, or an explicit id, is a different event.
        let mut with_id = ev("u1", "a", 100, "click");
        with_id.id = Some("evt-1".into());
        assert_eq!(
            store
                .insert(&[ev("u1", "b", 100, "click"), with_id.clone()])
                .unwrap()
                .inserted,
            2
        );
        assert_eq!(store.insert(&[with_id]).unwrap().duplicates, 1);
    }
    // Durable: reopen and read back.
    let store = EventStore::open(dir).unwrap();
    let u1 = store.user_events("u1", i64::MIN, i64::MAX).unwrap();
    let times: Vec<i64> = u1.iter().map(|e| e.time).collect();
    assert_eq!(times, vec![-50, 100, 100, 100, 200]);
    assert_eq!(u1[4].action, "repin");
    assert_eq!(u1[4].item, "a");
    let window = store.user_events("u1", 100, 150).unwrap();
    assert_eq!(window.len(), 3);
    assert!(
        store
            .user_events("nobody", i64::MIN, i64::MAX)
            .unwrap()
            .is_empty()
    );

    let users: Vec<(String, usize)> = store
        .users(0, 1000)
        .map(|r| r.map(|(u, e)| (u, e.len())).unwrap())
        .collect();
    // "u1" sorts before "u2" before "u10" (length-prefixed keys); u1's event at -50 is outside.
    assert_eq!(
        users,
        vec![("u1".into(), 4), ("u2".into(), 1), ("u10".into(), 1)]
    );
    let late: Vec<String> = store.users(250, 1000).map(|r| r.unwrap().0).collect();
    assert_eq!(late, vec!["u2".to_string()]);
}

#[test]
fn invalid_events_are_refused_before_anything_is_written() {
    let scratch_dir = scratch("invalid");
    let dir = scratch_dir.path();
    let store = EventStore::open(dir).unwrap();
    let mut bad = ev("u", "i", 1, "click");
    bad.weight = f32::NAN;
    let err = store.insert(&[ev("u", "ok", 1, "click"), bad]).unwrap_err();
    assert!(err.to_string().contains("weight must be finite"), "{err}");
    assert!(
        store
            .user_events("u", i64::MIN, i64::MAX)
            .unwrap()
            .is_empty()
    );
    assert!(store.insert(&[ev("", "i", 1, "")]).is_err());
}

/// A generation's `meta.json` keeps the flat layout every earlier version wrote, so old
/// generations are read and new ones are readable by older servers.
#[test]
fn generation_metadata_keeps_its_flat_layout() {
    let written = r#"{"now":1700000000,"window_days":90,"alpha":1.75,"lambda":0.01,"max_actions":2000,"shard":[1,4],"users":514}"#;
    let meta: GenerationMeta = serde_json::from_str(written).unwrap();
    assert_eq!(meta.settings.now, 1_700_000_000);
    assert_eq!(meta.settings.params.alpha, 1.75);
    assert_eq!(meta.settings.params.max_actions, 2000);
    assert_eq!((meta.shard, meta.users), (Some((1, 4)), 514));
    assert_eq!(serde_json::to_string(&meta).unwrap(), written);
    // Written before sharded batches: no `shard`.
    let older = r#"{"now":5,"window_days":30,"alpha":1.0,"lambda":0.0,"max_actions":20,"users":1}"#;
    let meta: GenerationMeta = serde_json::from_str(older).unwrap();
    assert_eq!((meta.settings.window_days, meta.shard), (30, None));
}

#[test]
fn profile_generations_switch_atomically() {
    let scratch_dir = scratch("profiles");
    let dir = scratch_dir.path();
    assert!(matches!(
        ProfileStore::open(dir),
        Err(ProfileStoreError::Missing(_))
    ));
    let meta = GenerationMeta {
        settings: GenerationSettings {
            now: 10,
            window_days: 90,
            params: ProfileParams {
                alpha: 1.75,
                lambda: 0.01,
                max_actions: 2000,
            },
        },
        shard: None,
        users: 0,
        variant_alphas: Vec::new(),
    };
    let profile = |m: &str| StoredProfile {
        clusters: vec![StoredCluster {
            medoid: m.into(),
            size: 3,
            importance: 2.5,
            latest_time: 9,
        }],
        items: vec![
            StoredItem {
                item: m.into(),
                cluster: 0,
                importance: Some(1.0),
            },
            StoredItem {
                item: format!("{m}-2"),
                cluster: 0,
                importance: Some(1.0),
            },
        ],
    };
    let mut w = ProfileWriter::begin(dir).unwrap();
    w.write(&[("alice".into(), profile("x")), ("bob".into(), profile("y"))])
        .unwrap();
    w.write_popular(&[("x".into(), 7), ("y".into(), 3)])
        .unwrap();
    // A variant: the same users cut at another alpha, in a table of its own.
    w.write_variant(0.5, &[("alice".into(), profile("v"))])
        .unwrap();
    let first = w.publish(meta.clone()).unwrap();
    let old = ProfileStore::open(dir).unwrap();
    assert_eq!(old.meta().users, 2);
    assert_eq!(old.meta().variant_alphas, [0.5]);
    assert_eq!(old.get("alice").unwrap(), Some(profile("x")));
    assert_eq!(old.get("carol").unwrap(), None);
    let variant = |alpha, user| {
        old.with_variant_profile(alpha, user, |v| v.map(|v| v.to_stored()))
            .unwrap()
    };
    assert_eq!(variant(0.5, "alice"), Some(Some(profile("v"))));
    assert_eq!(variant(0.5, "bob"), Some(None));
    assert_eq!(variant(0.25, "alice"), None, "no variant cut at 0.25");
    let mut medoids = Vec::new();
    old.for_each_medoid(|m| medoids.push(m.to_owned())).unwrap();
    medoids.sort();
    assert_eq!(
        medoids,
        ["v", "x", "y"],
        "the variants' medoids are kept too"
    );
    assert_eq!(
        old.popular().unwrap(),
        [("x".to_string(), 7), ("y".to_string(), 3)]
    );

    // A second batch in progress is invisible; an abandoned one leaves nothing behind.
    let mut w = ProfileWriter::begin(dir).unwrap();
    w.write(&[("alice".into(), profile("z"))]).unwrap();
    assert_eq!(old.get("alice").unwrap(), Some(profile("x")));
    let second = w
        .publish(GenerationMeta {
            settings: GenerationSettings {
                now: 20,
                ..meta.settings.clone()
            },
            ..meta.clone()
        })
        .unwrap();
    let new = ProfileStore::open(dir).unwrap();
    assert_eq!(new.dir(), second);
    assert_eq!(new.get("alice").unwrap(), Some(profile("z")));
    assert_eq!(new.get("bob").unwrap(), None);
    // The reader of the previous generation still works.
    assert_eq!(old.get("bob").unwrap(), Some(profile("y")));
    assert!(first.exists());
    {
        let mut w = ProfileWriter::begin(dir).unwrap();
        w.write(&[("dave".into(), profile("q"))]).unwrap();
    }
    drop(new); // redb allows one handle per file and process
    assert_eq!(ProfileStore::open(dir).unwrap().dir(), second);
}

#[test]
fn events_after_a_time_come_in_time_order_with_their_users() {
    let scratch_dir = scratch("after");
    let dir = scratch_dir.path();
    let store = EventStore::open(dir).unwrap();
    store
        .insert(&[
            ev("bob", "i1", 100, "click"),
            ev("al", "i2", 300, "click"),
            ev("bob", "i3", 200, "repin"),
            ev("al", "i4", 50, "click"),
            ev("carol", "i5", i64::MAX, "click"),
        ])
        .unwrap();
    let mut seen = Vec::new();
    store
        .for_each_after(100, |user, e| seen.push((user.to_owned(), e.item, e.time)))
        .unwrap();
    assert_eq!(
        seen,
        vec![
            ("bob".to_owned(), "i3".to_owned(), 200),
            ("al".to_owned(), "i2".to_owned(), 300),
            ("carol".to_owned(), "i5".to_owned(), i64::MAX),
        ]
    );
    let mut none = 0;
    store.for_each_after(i64::MAX, |_, _| none += 1).unwrap();
    assert_eq!(none, 0);
    let mut all = 0;
    store.for_each_after(i64::MIN, |_, _| all += 1).unwrap();
    assert_eq!(all, 5);
}

#[test]
fn an_event_id_alone_identifies_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    let event = |time: i64, id: Option<&str>| Event {
        user: "u".into(),
        item: "i".into(),
        time,
        action: "click".into(),
        weight: 1.0,
        id: id.map(str::to_owned),
        request_id: None,
    };
    assert_eq!(
        store.insert_each(&[event(5, Some("e1"))]).unwrap(),
        vec![true]
    );
    // A client that re-stamps its retry: same id, another time. Stored once.
    assert_eq!(
        store.insert_each(&[event(9, Some("e1"))]).unwrap(),
        vec![false]
    );
    assert_eq!(
        store
            .insert_each(&[event(7, Some("e2")), event(8, Some("e2"))])
            .unwrap(),
        vec![true, false]
    );
    // Without ids, events at different times are different events.
    assert_eq!(
        store
            .insert_each(&[event(20, None), event(21, None)])
            .unwrap(),
        vec![true, true]
    );
    let stored: usize = store.users(0, i64::MAX).map(|u| u.unwrap().1.len()).sum();
    assert_eq!(stored, 4);
    // Ids are bounded like every other field.
    let long = "x".repeat(pinnersage_store::events::MAX_ID_BYTES + 1);
    assert!(store.insert_each(&[event(30, Some(&long))]).is_err());
}

#[test]
fn a_batch_stores_what_one_event_at_a_time_stores_and_the_first_copy_wins() {
    // Keyspaces are written in key order, whatever the order of the batch: the stored events
    // must be the same as inserting each alone, and inside a batch the first copy wins.
    let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, many) = (
        EventStore::open(one.path()).unwrap(),
        EventStore::open(many.path()).unwrap(),
    );
    let mut batch = Vec::new();
    for k in 0..400u64 {
        let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        let mut e = ev(
            &format!("u{}", h % 37),
            &format!("i{}", h % 11),
            (h % 50) as i64,
            "click",
        );
        e.weight = k as f32;
        if k % 5 == 0 {
            e.id = Some(format!("id{}", h % 13));
        }
        batch.push(e);
    }
    let fresh_one: Vec<bool> = batch
        .iter()
        .map(|e| one.insert_each(std::slice::from_ref(e)).unwrap()[0])
        .collect();
    assert_eq!(many.insert_each(&batch).unwrap(), fresh_one);
    let all = |s: &EventStore| -> Vec<(String, Vec<pinnersage_store::events::StoredEvent>)> {
        s.users(i64::MIN, i64::MAX).map(Result::unwrap).collect()
    };
    assert_eq!(all(&many), all(&one));
    assert!(fresh_one.iter().any(|f| !f) && fresh_one.iter().any(|f| *f));
    // The first copy's weight is the one kept.
    let first = batch.iter().zip(&fresh_one).find(|(_, f)| **f).unwrap().0;
    let stored = many
        .user_events(&first.user, first.time, first.time)
        .unwrap();
    assert!(
        stored
            .iter()
            .any(|s| s.weight == first.weight && s.item == first.item)
    );
}

/// The chunked scan the batch uses gives, chunk after chunk, exactly what the per-user iterator
/// gives (users with no event in the window left out, the kept users only), for every chunk size,
/// with its buffers reused from one fill to the next.
#[test]
fn the_chunked_scan_sees_what_the_user_iterator_sees() {
    use pinnersage_store::events::EventChunk;
    /// A user and its (item, time, weight) events.
    type UserRows = (String, Vec<(String, i64, f32)>);
    let scratch_dir = scratch("chunks");
    let store = EventStore::open(scratch_dir.path()).unwrap();
    let mut events = Vec::new();
    for u in 0..40i64 {
        for k in 0..(u * 7) % 13 {
            let mut e = ev(
                &format!("user-{u}"),
                &format!("item-{}", (u * k) % 17),
                (u * 31 + k * 59) % 600,
                "",
            );
            e.weight = (k % 3) as f32 + 0.5;
            events.push(e);
        }
    }
    store.insert(&events).unwrap();
    let (from, to) = (100, 400);
    for keep_all in [true, false] {
        let keep = |user: &str| keep_all || user.len().is_multiple_of(2);
        let want: Vec<UserRows> = store
            .users(from, to)
            .map(Result::unwrap)
            .filter(|(u, _)| keep(u))
            .map(|(u, evs)| {
                (
                    u,
                    evs.into_iter()
                        .map(|e| (e.item, e.time, e.weight))
                        .collect(),
                )
            })
            .collect();
        assert!(want.len() > 5 && want.len() < 40);
        for max_users in [1, 3, 7, 100] {
            let mut scan = store.scan_users(from, to);
            let mut chunk = EventChunk::default();
            let mut got = Vec::new();
            while scan.fill(&mut chunk, max_users, keep).unwrap() {
                assert!(chunk.len() <= max_users);
                for u in 0..chunk.len() {
                    let user = chunk.user(u);
                    let evs = user
                        .items()
                        .zip(user.times.iter().zip(user.weights))
                        .map(|(item, (&t, &w))| (item.to_string(), t, w))
                        .collect();
                    got.push((user.id.to_string(), evs));
                }
            }
            assert_eq!(got, want, "max_users {max_users}, keep_all {keep_all}");
            assert!(!scan.fill(&mut chunk, max_users, keep).unwrap() && chunk.is_empty());
        }
    }
}
