//! Power cuts: the data directory lives on `tests/powercut/lazyfs.py`, a FUSE file system that
//! keeps every write in memory until its file is fsynced. Killing it is a power cut: what remains
//! underneath is exactly what was made durable. (kill -9 of the server alone cannot show this:
//! the kernel's page cache survives a process.)
//!
//! Needs root, `/dev/fuse`, libfuse2 and Python's `fusepy` (`PINNERSAGE_FUSE_PYTHON` names the
//! interpreter that has it, default `python3`). Skipped with a note without them, unless
//! `PINNERSAGE_REQUIRE_FUSE` is set (CI sets it).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RunningServer, Scratch, bin};

fn python() -> String {
    std::env::var("PINNERSAGE_FUSE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether this machine can run the tests; panics when CI requires them and it cannot.
fn available() -> bool {
    let fusepy = Command::new(python())
        .args(["-c", "import fuse"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ok = fusepy && Path::new("/dev/fuse").exists();
    if !ok {
        assert!(
            std::env::var_os("PINNERSAGE_REQUIRE_FUSE").is_none(),
            "PINNERSAGE_REQUIRE_FUSE is set but FUSE or fusepy is missing"
        );
        eprintln!("skipped: needs /dev/fuse, libfuse2 and fusepy (see tests/powercut/lazyfs.py)");
    }
    ok
}

/// A mounted lazyfs over `backing`; unmounted (and killed) on drop.
struct Volatile {
    child: Child,
    mountpoint: PathBuf,
}

impl Volatile {
    fn mount(backing: &Path, mountpoint: &Path) -> Self {
        std::fs::create_dir_all(backing).unwrap();
        std::fs::create_dir_all(mountpoint).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/powercut/lazyfs.py");
        let child = Command::new(python())
            .arg(script)
            .args([backing, mountpoint])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let target = mountpoint.canonicalize().unwrap();
        let start = Instant::now();
        while !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(target.to_str().unwrap()))
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "lazyfs did not mount"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            mountpoint: target,
        }
    }

    /// The power cut: the file system dies with everything not fsynced.
    fn cut(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .args(["-l"])
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Volatile {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pinnersage(args: &[&str]) {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const BASE: u64 = 1_700_000_000;

/// Event `n`: user `u{n%7}`, item `i{n%5}`, time BASE + n, id `e{n}`.
fn body(ns: &[u64]) -> String {
    common::events_body(ns, BASE)
}

/// A data directory with five items and an exact index on a lazyfs over `dir/backing`: the
/// file system, the backing directory and the data directory's path on the mount.
fn prepared(dir: &Path) -> (Volatile, PathBuf, String) {
    let backing = dir.join("backing");
    let items = dir.join("items.csv");
    std::fs::write(&items, common::FIVE_ITEMS_CSV).unwrap();
    let fs = Volatile::mount(&backing, &dir.join("mnt"));
    let data = fs.mountpoint.join("data");
    let d = data.to_str().unwrap().to_owned();
    pinnersage(&["import", "items", "--data-dir", &d, items.to_str().unwrap()]);
    pinnersage(&["index", "build", "--data-dir", &d, "--kind", "exact"]);
    (fs, backing, d)
}

#[test]
fn a_power_cut_loses_no_acknowledged_event_and_no_generation_is_half_visible() {
    if !available() {
        return;
    }
    let dir = Scratch::new("powercut");
    // Events: acknowledged (202), then the power is cut with the server still running.
    let (fs, backing, d) = prepared(&dir);
    let mut server = RunningServer::start(&d);
    let mut acked = BTreeSet::new();
    for request in 0..30u64 {
        let ns: Vec<u64> = (request * 20..request * 20 + 20).collect();
        let reply = server.request("POST", "/v1/events", &body(&ns));
        assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
        acked.extend(ns);
    }
    fs.cut();
    server.kill9();

    let stored: BTreeSet<u64> = {
        let store = pinnersage_store::events::EventStore::open(&backing.join("data")).unwrap();
        store
            .users(0, i64::MAX)
            .flat_map(|u| u.unwrap().1)
            .map(|e| e.time as u64 - BASE)
            .collect()
    };
    let lost: Vec<&u64> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost by the power cut (first {:?})",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "power cut after {} acknowledged events: {} stored, 0 lost",
        acked.len(),
        stored.len()
    );

    // Batches cut at different moments: the profiles are the previous generation or the new
    // one, complete, never a mix.
    let mut outcomes = BTreeSet::new();
    for (k, delay_ms) in [0u64, 3, 6, 10, 15, 20, 30, 45, 70, 100, 150, 250]
        .into_iter()
        .enumerate()
    {
        // A fresh mount point each time: the previous one may still be detaching.
        let fs = Volatile::mount(&backing, &dir.join(format!("mnt-{k}")));
        let data = fs.mountpoint.join("data");
        let mut batch = bin()
            .args(["batch", "--data-dir", data.to_str().unwrap(), "--now"])
            .arg((BASE + 10_000).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        fs.cut();
        let _ = batch.kill();
        let finished = batch.wait().unwrap().success();
        let current = std::fs::read_to_string(backing.join("data/profiles/CURRENT")).ok();
        if current.is_some() {
            let profiles = pinnersage_store::profiles::ProfileStore::open(&backing.join("data"))
                .unwrap_or_else(|e| {
                    panic!("cut after {delay_ms} ms: a half-visible generation: {e}")
                });
            assert_eq!(profiles.meta().users, 7, "cut after {delay_ms} ms");
            for u in 0..7 {
                let profile = profiles.get(&format!("u{u}")).unwrap();
                assert!(profile.is_some(), "cut after {delay_ms} ms: u{u} missing");
            }
        }
        outcomes.insert((current.map(|c| c.trim().to_owned()), finished));
    }
    eprintln!("batch power cuts (CURRENT, finished): {outcomes:?}");
}

#[test]
fn a_failing_disk_is_reported_unhealthy_and_nothing_is_acknowledged() {
    if !available() {
        return;
    }
    let dir = Scratch::new("faildisk");
    let (fs, backing, d) = prepared(&dir);
    let server = RunningServer::start(&d);
    assert!(
        server
            .request("POST", "/v1/events", &body(&[0, 1]))
            .starts_with("HTTP/1.1 202")
    );
    assert!(
        server
            .request("GET", "/healthz", "")
            .starts_with("HTTP/1.1 200")
    );

    // The disk starts failing its fsyncs: nothing more is acknowledged, and the server says why.
    std::fs::write(backing.join(".fail-fsync"), "").unwrap();
    let reply = server.request("POST", "/v1/events", &body(&[2, 3]));
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("store_failed"), "{reply}");
    let health = server.request("GET", "/healthz", "");
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("\"unhealthy\""), "{health}");
    assert!(
        health.contains("the event store fails its commits"),
        "{health}"
    );
    // The refused events were visible ahead of their write; their users are rebuilt from the
    // store since, which has only what was acknowledged.
    for (user, stored) in [("u0", true), ("u2", false), ("u3", false)] {
        let profile = server.request("GET", &format!("/v1/users/{user}/profile"), "");
        let found = profile.starts_with("HTTP/1.1 200");
        assert_eq!(found, stored, "{user}: {profile}");
    }
    drop(server);
    drop(fs);
}
