//! How commands find the server running on a data directory and make sure it is that server
//! before they hand it work (and an admin token).
//!
//! A server records itself in `DATA_DIR/server.json` (readable by its owner only): its address,
//! its pid and a random secret. A command that finds the file checks that the pid is alive, then
//! sends `GET /healthz` with a fresh random challenge in [`CHALLENGE_HEADER`]; the server answers
//! with HMAC-SHA256(secret, challenge) in [`PROOF_HEADER`]. A stale file left by a killed server
//! (its port now taken by another program) fails one check or the other, and nothing else is
//! sent there.
//!
//! ```
//! use pinnersage_server::handoff::ServerRecord;
//! let record = ServerRecord::new("127.0.0.1:8080".parse().unwrap(), 42);
//! let challenge = ServerRecord::challenge();
//! assert!(record.verify(&challenge, &record.prove(&challenge)));
//! let other = ServerRecord::new(record.addr, 42);
//! assert!(!record.verify(&challenge, &other.prove(&challenge)));
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use pinnersage_pipeline::batch::{BatchRequest, BatchSummary};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::client::{ClientError, Conn};

/// The request header carrying a command's challenge (hex).
pub const CHALLENGE_HEADER: &str = "x-pinnersage-challenge";
/// The response header carrying the server's proof (hex).
pub const PROOF_HEADER: &str = "x-pinnersage-proof";

/// Where a running server records itself.
pub fn server_file(data_dir: &Path) -> PathBuf {
    data_dir.join("server.json")
}

/// What a running server records about itself in [`server_file`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// The secret it proves it knows (hex).
    secret: String,
}

impl std::fmt::Debug for ServerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRecord")
            .field("addr", &self.addr)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Why a command cannot hand work to the server of a data directory.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// No readable record.
    #[error("{} does not name a running server ({reason})", path.display())]
    NoRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The recorded process is gone: the record is stale.
    #[error(
        "{} is stale: the server it names (pid {pid}) is not running; delete the file",
        path.display()
    )]
    Stale {
        /// The record file.
        path: PathBuf,
        /// The recorded pid.
        pid: u32,
    },
    /// Whatever listens at the recorded address is not the recorded server.
    #[error(
        "the program listening on {addr} is not the server that wrote {} (it did not prove the server's identity): nothing was sent to it",
        path.display()
    )]
    NotTheServer {
        /// The record file.
        path: PathBuf,
        /// The address.
        addr: SocketAddr,
    },
    /// The server could not be reached, or its answer was unreadable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server refused or failed the work.
    #[error("the server answered HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's error message.
        message: String,
    },
}

/// A connection to the server that runs on a data directory, proven to be that server before
/// anything but the challenge was sent; work goes with the API token.
///
/// ```no_run
/// use pinnersage_pipeline::batch::{BatchConfig, BatchRequest};
/// use pinnersage_server::handoff::Handoff;
/// let mut server = Handoff::connect("data".as_ref(), std::env::var("PINNERSAGE_TOKEN").ok().as_deref())?;
/// let summary = server.batch(&BatchRequest::from(&BatchConfig::new(1_700_000_000)))?;
/// println!("{} users clustered on http://{}", summary.users, server.addr());
/// # Ok::<(), pinnersage_server::handoff::HandoffError>(())
/// ```
pub struct Handoff {
    conn: Conn,
    addr: SocketAddr,
}

impl Handoff {
    /// Finds the server recorded in `data_dir` and checks its identity; `token` is sent only
    /// once it has proven it.
    pub fn connect(data_dir: &Path, token: Option<&str>) -> Result<Self, HandoffError> {
        let record = ServerRecord::read(data_dir)?;
        let addr = record.reach();
        let challenge = ServerRecord::challenge();
        let mut conn = Conn::open(addr)?;
        conn.get_without_token("/healthz", &format!("{CHALLENGE_HEADER}: {challenge}\r\n"))?;
        let proven = conn
            .header(PROOF_HEADER)
            .is_some_and(|proof| record.verify(&challenge, proof));
        if !proven {
            return Err(HandoffError::NotTheServer {
                path: server_file(data_dir),
                addr,
            });
        }
        Ok(Self {
            conn: conn.with_token(token),
            addr,
        })
    }

    /// Where the server was reached.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the batch `request` on the server (it serves the new generation at once).
    pub fn batch(&mut self, request: &BatchRequest) -> Result<BatchSummary, HandoffError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| ClientError::Malformed(format!("the batch request: {e}")))?;
        let (status, reply) = self.conn.post_json("/v1/admin/batch", &body)?;
        if status != 200 {
            let message = serde_json::from_slice::<serde_json::Value>(&reply)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&reply).into_owned());
            return Err(HandoffError::Refused { status, message });
        }
        serde_json::from_slice(&reply).map_err(|e| {
            ClientError::Malformed(format!("no batch summary in the answer: {e}")).into()
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ServerRecord {
    /// A record of a server at `addr` with process id `pid` and a fresh random secret.
    pub fn new(addr: SocketAddr, pid: u32) -> Self {
        let mut secret = [0u8; 32];
        // The system's randomness fails only on a broken kernel; the secret then is the time.
        if SystemRandom::new().fill(&mut secret).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            secret[..16].copy_from_slice(&nanos.to_le_bytes());
        }
        Self {
            addr,
            pid,
            secret: hex(&secret),
        }
    }

    /// A fresh random challenge (hex).
    pub fn challenge() -> String {
        let mut bytes = [0u8; 16];
        let _ = SystemRandom::new().fill(&mut bytes);
        hex(&bytes)
    }

    /// The proof of knowing the secret for `challenge` (hex).
    pub fn prove(&self, challenge: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.secret.as_bytes());
        hex(hmac::sign(&key, challenge.as_bytes()).as_ref())
    }

    /// Whether `proof` proves knowing this record's secret for `challenge`.
    pub fn verify(&self, challenge: &str, proof: &str) -> bool {
        let expected = self.prove(challenge);
        // Both are hex of the same length; compare without an early exit.
        expected.len() == proof.len()
            && expected
                .bytes()
                .zip(proof.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// Where a client on this machine reaches the server: its address, or the loopback address
    /// of the same family when it listens on all interfaces (`0.0.0.0`, `[::]`).
    pub fn reach(&self) -> SocketAddr {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.addr.port())
    }

    /// Writes the record to `path`, readable and writable by its owner only.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        file.write_all(&json)
    }

    /// The record of `data_dir`'s server, if its process is alive.
    pub fn read(data_dir: &Path) -> Result<Self, HandoffError> {
        let path = server_file(data_dir);
        let no_record = |reason: String| HandoffError::NoRecord {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read(&path).map_err(|e| no_record(e.to_string()))?;
        let record: Self =
            serde_json::from_slice(&text).map_err(|e| no_record(format!("unreadable: {e}")))?;
        if !process_alive(record.pid) {
            return Err(HandoffError::Stale {
                path,
                pid: record.pid,
            });
        }
        Ok(record)
    }
}

/// Whether a process with id `pid` exists (Linux: `/proc/PID`; elsewhere assumed).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl pinnersage_core::error::Kind for HandoffError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::NoRecord { .. } => NotFound,
            Self::Stale { .. } | Self::NotTheServer { .. } => Conflict,
            Self::Client(e) => e.kind(),
            Self::Refused { status, .. } => match status {
                404 => NotFound,
                409 => Conflict,
                503 => Unavailable,
                400..=499 => BadInput,
                _ => Internal,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_record_reads_back_only_while_its_process_lives() {
        let dir = tempfile::tempdir().unwrap();
        let record = ServerRecord::new("0.0.0.0:8080".parse().unwrap(), std::process::id());
        record.write(&server_file(dir.path())).unwrap();
        let read = ServerRecord::read(dir.path()).unwrap();
        assert_eq!(read, record);
        assert_eq!(read.reach(), "127.0.0.1:8080".parse().unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(server_file(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
        }
        let v6 = ServerRecord::new("[::]:9".parse().unwrap(), 1);
        assert_eq!(v6.reach(), "[::1]:9".parse().unwrap());
        // A pid no process has (above Linux's pid_max).
        let gone = ServerRecord::new("127.0.0.1:1".parse().unwrap(), 4_194_305);
        gone.write(&server_file(dir.path())).unwrap();
        let err = ServerRecord::read(dir.path()).unwrap_err();
        assert!(matches!(err, HandoffError::Stale { .. }), "{err}");
    }
}
