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

    /// A fresh, empty staging directory for the next generation.
    pub fn stage(&self) -> io::Result<Staging> {
        fs::create_dir_all(&self.root)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self
            .root
            .join(format!("{STAGING_PREFIX}{}-{nanos}", std::process::id()));
        fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            published: false,
        })
    }

    /// Makes `staging` the current generation (files inside must already be synced) and
    /// removes generations older than the previous one. Returns the new generation's directory.
    pub fn publish(&self, mut staging: Staging) -> io::Result<PathBuf> {
        let next = self.generation_numbers()?.last().map_or(1, |n| n + 1);
        let name = format!("{PREFIX}{next:06}");
        let dir = self.root.join(&name);
        fs::rename(&staging.dir, &dir)?;
        staging.published = true;
        sync_dir(&self.root)?;
        let tmp = self.root.join(format!("{CURRENT}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(format!("{name}\n").as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.root.join(CURRENT))?;
        sync_dir(&self.root)?;
        for old in self
            .generation_numbers()?
            .into_iter()
            .filter(|&n| n + 1 < next)
        {
            let _ = fs::remove_dir_all(self.root.join(format!("{PREFIX}{old:06}")));
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

fn is_generation_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Fsyncs a directory so that renames inside it are durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
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
}
