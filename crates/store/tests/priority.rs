//! The storage engine's background threads yield the CPU once asked to (a test binary of its
//! own: no other test opens stores, and so workers, meanwhile).

use pinnersage_store::events::{BACKGROUND_NICE, EventStore};

/// The nice values of this process's threads named `name`.
fn nice_of(name: &str) -> Vec<i64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap()
                .trim_end()
                == name
        })
        .map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
            nice_field(&stat)
        })
        .collect()
}

/// The nice value in a `/proc/.../stat` line (field 19; 17th after the parenthesised name).
fn nice_field(stat: &str) -> i64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

/// This thread's nice value.
fn own_nice() -> i64 {
    nice_field(&std::fs::read_to_string("/proc/thread-self/stat").unwrap())
}

#[test]
#[cfg(target_os = "linux")]
fn background_threads_run_at_a_lower_priority_once_asked() {
    let own = own_nice();
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    let before = nice_of("fjall:worker");
    assert!(!before.is_empty(), "fjall names its workers fjall:worker");
    assert!(
        before.iter().all(|&n| n == own),
        "{before:?}, this thread {own}"
    );
    if own >= i64::from(BACKGROUND_NICE) {
        eprintln!("skipped: the test runs at nice {own}, not above the background's");
        return;
    }
    assert_eq!(store.lower_background_priority(), before.len());
    assert_eq!(
        nice_of("fjall:worker"),
        vec![i64::from(BACKGROUND_NICE); before.len()]
    );
    assert_eq!(own_nice(), own, "only the background threads are lowered");
}
