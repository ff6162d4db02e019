//! # pinnersage-generation
//!
//! Generations: directories that become visible atomically. Every publisher of a data
//! directory (the catalog, the index, the profiles) stages and publishes through [`Generations`].
//!
//! A dataset (the item catalog, later the profiles) lives in `ROOT/gen-NNNNNN/`. `ROOT/CURRENT`
//! names the generation readers use. A writer fills a staging directory, then [`publish`] renames
//! it to the next generation and atomically replaces `CURRENT` (write a temporary file, fsync,
//! rename, fsync the directory). A crash or an error before that leaves `CURRENT`, and so every
//! reader, on the previous generation; the previous generation stays on disk after a switch so
//! that readers that opened it keep working, and older ones are removed.
//!
//! [`publish`]: Generations::publish
#![warn(missing_docs)]

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const CURRENT: &str = "CURRENT";
const PREFIX: &str = "gen-";
const STAGING_PREFIX: &str = "staging-";

/// The generations kept under one root directory.
#[derive(Debug, Clone)]
pub struct Generations {
    root: PathBuf,
}

/// A staging directory being filled; removed on drop unless published.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    published: bool,
}

impl Staging {
    /// Where to write the new generation's files.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Generations {
    /// The generations under `root` (created on the first [`Generations::stage`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the current generation, if one was ever published.
    pub fn current(&self) -> io::Result<Option<PathBuf>> {
        match fs::read_to_string(self.root.join(CURRENT)) {
            Ok(name) => {
                let name = name.trim();
                if !is_generation_name(name) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: not a generation name: {name:?}",
                            self.root.join(CURRENT).display()
                        ),
                    ));
                }
                Ok(Some(self.root.join(name)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A fresh, empty staging directory for the next generation. Staging directories left by a
    /// writer that crashed are removed first (publishers hold the data directory's
    /// [`PublishLock`], so no other writer is filling one).
    pub fn stage(&self) -> io::Result<Staging> {
        fs::create_dir_all(&self.root)?;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let dir = self.root.join(unique_name(STAGING_PREFIX));
        fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            published: false,
        })
    }

    /// Makes `staging` the current generation (files inside must already be synced) and
    /// removes every other generation but the one that was current until now (readers may still
    /// have it open). A generation left by a crash between its rename and the switch of
    /// `CURRENT` was never current: it is removed too, never the one readers use. Returns the new
    /// generation's directory.
    pub fn publish(&self, mut staging: Staging) -> io::Result<PathBuf> {
        let previous = self.current()?;
        let next = self.generation_numbers()?.last().map_or(1, |n| n + 1);
        let name = format!("{PREFIX}{next:06}");
        let dir = self.root.join(&name);
        // The staging directory's entries must be durable before it is renamed into view.
        sync_dir(&staging.dir)?;
        fs::rename(&staging.dir, &dir)?;
        staging.published = true;
        sync_dir(&self.root)?;
        replace_file(&self.root.join(CURRENT), format!("{name}\n").as_bytes())?;
        for old in self.generation_numbers()? {
            let old_dir = self.root.join(format!("{PREFIX}{old:06}"));
            if old != next && Some(&old_dir) != previous.as_ref() {
                let _ = fs::remove_dir_all(old_dir);
            }
        }
        Ok(dir)
    }

    /// Numbers of the generation directories present, ascending.
    fn generation_numbers(&self) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let name = entry?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// The lock every publisher of a data directory holds while it stages and publishes (importing
/// items or events, building the index, running a batch here or in a server): two publishers
/// never interleave, and leftover staging directories can be swept safely. It is an advisory
/// file lock on `DATA_DIR/publish.lock`, released when dropped or when the process dies.
#[derive(Debug)]
pub struct PublishLock {
    _file: fs::File,
}

/// Another process (or task) is publishing into the data directory.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock is held; `holder` is what it wrote about itself.
    #[error("{} is busy: another pinnersage command is publishing into it ({holder}); retry when it has finished", data_dir.display())]
    Busy {
        /// The data directory.
        data_dir: PathBuf,
        /// The holder's own description (`pid N: what`).
        holder: String,
    },
    /// The lock file could not be opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl PublishLock {
    /// Takes the lock of `data_dir` (created if missing) for `what` (for example "batch"), or
    /// fails at once if another publisher holds it.
    pub fn acquire(data_dir: &Path, what: &str) -> Result<Self, LockError> {
        let path = data_dir.join("publish.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(data_dir).map_err(io)?;
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(LockError::Busy {
                    data_dir: data_dir.to_path_buf(),
                    holder: holder.trim().to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message of the next one to try.
        let _ = file.set_len(0);
        let _ = file.write_all(format!("pid {}: {what}", std::process::id()).as_bytes());
        Ok(Self { _file: file })
    }
}

/// Replaces the file at `path` with `bytes` atomically and durably: a temporary file beside it
/// is written and fsynced, renamed over `path`, and the directory fsynced. Readers see the old
/// content or the new, never a part; a failure removes the temporary file.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(unique_name(&format!(".{name}.tmp-")));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// `prefix` + this process's id + a per-process counter + the time: unique among concurrent
/// writers of one root, and across restarts.
fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}{}-{n}-{nanos}", std::process::id())
}

fn is_generation_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Fsyncs a directory so that renames inside it are durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl pinnersage_core::error::Kind for LockError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::{self, *};
        match self {
            Self::Busy { .. } => Conflict,
            Self::Io { source, .. } => ErrorKind::of_io(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ps-gen-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn publish_switches_atomically_and_keeps_the_previous_generation() {
        let root = scratch("publish");
        let gens = Generations::new(&root);
        assert_eq!(gens.current().unwrap(), None);
        let mut dirs = Vec::new();
        for k in 0..3 {
            let staging = gens.stage().unwrap();
            fs::write(staging.path().join("data"), format!("{k}")).unwrap();
            dirs.push(gens.publish(staging).unwrap());
            let current = gens.current().unwrap().unwrap();
            assert_eq!(
                fs::read_to_string(current.join("data")).unwrap(),
                format!("{k}")
            );
        }
        assert!(
            !dirs[0].exists(),
            "generations older than the previous one are removed"
        );
        assert!(dirs[1].exists() && dirs[2].exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_abandoned_staging_directory_changes_nothing() {
        let root = scratch("abandon");
        let gens = Generations::new(&root);
        let staging = gens.stage().unwrap();
        fs::write(staging.path().join("data"), "1").unwrap();
        let first = gens.publish(staging).unwrap();
        {
            let staging = gens.stage().unwrap();
            fs::write(staging.path().join("data"), "half-written").unwrap();
            // dropped without publish: an error or a crash mid-import
        }
        assert_eq!(gens.current().unwrap(), Some(first));
        let left: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "CURRENT and gen-000001 only: {left:?}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_orphan_left_by_a_crash_never_costs_readers_their_generation() {
        let root = scratch("orphan");
        let gens = Generations::new(&root);
        let staging = gens.stage().unwrap();
        fs::write(staging.path().join("data"), "1").unwrap();
        let first = gens.publish(staging).unwrap();
        // A crash after renaming gen-000002 into place, before CURRENT was switched.
        fs::create_dir(root.join("gen-000002")).unwrap();
        assert_eq!(gens.current().unwrap(), Some(first.clone()));
        let staging = gens.stage().unwrap();
        fs::write(staging.path().join("data"), "3").unwrap();
        let third = gens.publish(staging).unwrap();
        assert_eq!(gens.current().unwrap(), Some(third.clone()));
        assert!(first.exists(), "the generation readers had open is kept");
        assert!(
            !root.join("gen-000002").exists(),
            "the orphan was never current"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn leftover_staging_and_temporary_files_are_swept() {
        let root = scratch("sweep");
        let gens = Generations::new(&root);
        fs::create_dir_all(root.join("staging-123-0-99")).unwrap();
        fs::write(root.join("staging-123-0-99").join("half"), "x").unwrap();
        let staging = gens.stage().unwrap();
        assert!(!root.join("staging-123-0-99").exists());
        gens.publish(staging).unwrap();
        let names: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n == "CURRENT" || n.starts_with("gen-")),
            "{names:?}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn one_publisher_at_a_time() {
        let dir = scratch("lock");
        let held = PublishLock::acquire(&dir, "batch").unwrap();
        let err = PublishLock::acquire(&dir, "import items")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is busy"), "{err}");
        assert!(
            err.contains(&format!("pid {}: batch", std::process::id())),
            "{err}"
        );
        drop(held);
        let again = PublishLock::acquire(&dir, "import items");
        assert!(again.is_ok());
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }
}
