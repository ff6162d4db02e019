//! Helpers shared by the binary's integration tests.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory under the system temp dir, removed when dropped (also when a test fails).
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates (or empties) `pinnersage-<name>-<pid>`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pinnersage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `pinnersage` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pinnersage"))
}

/// A `pinnersage serve` child process; killed if a test fails before stopping it.
pub struct RunningServer {
    pub child: std::process::Child,
    pub addr: String,
    stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl RunningServer {
    /// Starts a server on an ephemeral port and waits for its address.
    pub fn start(data_dir: &str) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Like [`RunningServer::start`], with more `serve` arguments (an `--addr` among them
    /// replaces the ephemeral loopback one).
    pub fn start_with(data_dir: &str, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let addr: &[&str] = match extra.contains(&"--addr") {
            true => &[],
            false => &["--addr", "127.0.0.1:0"],
        };
        let mut child = bin()
            .args(["serve", "--data-dir", data_dir])
            .args(addr)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut addr = None;
        let mut line = String::new();
        let mut said = String::new();
        while addr.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
            addr = line
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            said.push_str(&line);
            line.clear();
        }
        let addr =
            addr.unwrap_or_else(|| panic!("the server prints its address; it said:\n{said}"));
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// One request on a fresh connection; the raw response ("" if the connection failed).
    pub fn request(&self, method: &str, path: &str, body: &str) -> String {
        http(&self.addr, method, path, body).unwrap_or_default()
    }

    /// The value of metric `name` in `/metrics` (`None`: not there, or no answer).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let metrics = self.request("GET", "/metrics", "");
        let body = metrics.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// SIGTERM, then wait: a graceful stop that takes over a minute fails the test (and the
    /// server is killed) rather than hang it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                self.kill9();
                panic!(
                    "the server did not stop within a minute of SIGTERM; its log: {}",
                    self.rest_of_stderr()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Lets the server run 150 to 400 ms (drawn from the xorshift state `rng`), then kills it
    /// with SIGKILL: an arbitrary moment of whatever it is doing.
    pub fn kill9_after_a_while(&mut self, rng: &mut u64) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        std::thread::sleep(std::time::Duration::from_millis(150 + *rng % 250));
        self.kill9();
    }

    /// SIGKILL, then wait.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn rest_of_stderr(&mut self) -> String {
        use std::io::Read;
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        rest
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kill -9 cycles of the durability tests: 6 (CI), or `PINNERSAGE_KILL_CYCLES` (the long run
/// of docs/security.md sets 50).
pub fn kill_cycles() -> u64 {
    std::env::var("PINNERSAGE_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// One HTTP/1.1 request with `Connection: close`; the raw response.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    // One write: a request in pieces waits on Nagle and the peer's delayed ACK (40 ms a
    // request through a proxy).
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw)
}

/// A `POST /v1/events` body of events `ns`: event `n` is user `u{n%7}`, item `i{n%5}`, time
/// `base + n`, id `e{n}` (so a stored event's time says which it was).
pub fn events_body(ns: &[u64], base: u64) -> String {
    let events: Vec<String> = ns
        .iter()
        .map(|&n| {
            format!(
                r#"{{"user":"u{}","item":"i{}","ts":{},"id":"e{n}"}}"#,
                n % 7,
                n % 5,
                base + n
            )
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

/// The items of [`events_body`]'s events, as a CSV for `import items`.
pub const FIVE_ITEMS_CSV: &str = "id,a,b\ni0,1,0\ni1,0,1\ni2,1,1\ni3,1,-1\ni4,-1,0\n";

/// Imports [`FIVE_ITEMS_CSV`] into `data_dir` and builds its exact index, with the binary.
pub fn five_item_catalog(data_dir: &Path) {
    five_item_catalog_indexed(data_dir, "exact");
}

/// [`five_item_catalog`] with an index of `kind` (`exact` or `hnsw`).
pub fn five_item_catalog_indexed(data_dir: &Path, kind: &str) {
    std::fs::create_dir_all(data_dir).unwrap();
    let items = data_dir.join("five-items.csv");
    std::fs::write(&items, FIVE_ITEMS_CSV).unwrap();
    let d = data_dir.to_str().unwrap();
    for args in [
        &["import", "items", "--data-dir", d, items.to_str().unwrap()][..],
        &["index", "build", "--data-dir", d, "--kind", kind],
    ] {
        let out = bin().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Debian's `nats-server`, or `None` with a note when it is not installed, unless
/// `PINNERSAGE_REQUIRE_NATS=1` (set by CI), which makes a missing server a failure.
pub fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("PINNERSAGE_REQUIRE_NATS").as_deref() != Ok("1"),
            "nats-server is required (apt-get install nats-server)"
        );
        eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
    }
    found
}
