//! The catalog's change journal, `DATA_DIR/catalog/changes.log`: every item change accepted
//! while serving, in order, each with a sequence number, appended and fsynced before it is
//! acknowledged. Opening a catalog replays the changes its generation does not hold yet
//! (sequence numbers above the generation's `journal_seq`).
//!
//! A record is `u32 length | u32 crc32 | payload` (little-endian); the payload is
//! `u64 seq | u8 op | u16 id length | id | (upsert) u8 parts | [u32 dim | dim × f32] |
//! [u32 length | attributes JSON]`. A record cut short by a crash, or whose checksum fails at
//! the end of the file, was never acknowledged: the writer truncates it on open and readers stop
//! before it.
//!
//! ```
//! use pinnersage_catalog::changes::ItemChange;
//! use pinnersage_catalog::journal::{Journal, read};
//! let dir = tempfile::tempdir().unwrap();
//! let (mut journal, replay) = Journal::open(dir.path()).unwrap();
//! assert!(replay.is_empty());
//! let last = journal.append(&[ItemChange::delete("a").unwrap(), ItemChange::delete("b").unwrap()]).unwrap();
//! assert_eq!(last, 2);
//! let records = read(dir.path()).unwrap();
//! assert_eq!(records.iter().map(|(seq, c)| (*seq, c.id())).collect::<Vec<_>>(), [(1, "a"), (2, "b")]);
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use pinnersage_core::hash::crc32;

use crate::catalog::catalog_root;
use crate::changes::ItemChange;
use crate::error::{CatalogError, io_err};

/// The journal's file name in the catalog directory.
pub const FILE: &str = "changes.log";

const UPSERT: u8 = 1;
const DELETE: u8 = 2;
const HAS_VECTOR: u8 = 1;
const HAS_ATTRIBUTES: u8 = 2;
/// Largest payload a reader accepts (a 1M-dimension vector; anything larger is damage).
const MAX_PAYLOAD: usize = 64 << 20;

/// The path of the journal of `data_dir`'s catalog.
pub fn path(data_dir: &Path) -> PathBuf {
    catalog_root(data_dir).join(FILE)
}

/// The journal's one writer (an exclusive lock on the file, held while it lives).
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    last_seq: u64,
    bytes: u64,
}

/// The journal's records, in order.
pub type Records = Vec<(u64, ItemChange)>;

fn encode(seq: u64, change: &ItemChange, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend([0u8; 8]);
    out.extend(seq.to_le_bytes());
    let id = change.id().as_bytes();
    match change {
        ItemChange::Upsert {
            vector, attributes, ..
        } => {
            out.push(UPSERT);
            out.extend((id.len() as u16).to_le_bytes());
            out.extend_from_slice(id);
            let parts = if vector.is_some() { HAS_VECTOR } else { 0 }
                | if attributes.is_some() {
                    HAS_ATTRIBUTES
                } else {
                    0
                };
            out.push(parts);
            if let Some(vector) = vector {
                out.extend((vector.len() as u32).to_le_bytes());
                out.extend(vector.iter().flat_map(|v| v.to_le_bytes()));
            }
            if let Some(attributes) = attributes {
                out.extend((attributes.len() as u32).to_le_bytes());
                out.extend_from_slice(attributes.as_bytes());
            }
        }
        ItemChange::Delete { .. } => {
            out.push(DELETE);
            out.extend((id.len() as u16).to_le_bytes());
            out.extend_from_slice(id);
        }
    }
    let payload_len = (out.len() - start - 8) as u32;
    let crc = crc32(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads little-endian fields off a payload; `None` when it ends early.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self, n: usize) -> Option<String> {
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn decode(payload: &[u8]) -> Option<(u64, ItemChange)> {
    let mut f = Fields(payload);
    let seq = f.u64()?;
    let op = f.u8()?;
    let id_len = f.u16()? as usize;
    let id = f.text(id_len)?;
    let change = match op {
        DELETE => ItemChange::Delete { id },
        UPSERT => {
            let parts = f.u8()?;
            let vector = if parts & HAS_VECTOR != 0 {
                let dim = f.u32()? as usize;
                let bytes = f.take(dim.checked_mul(4)?)?;
                Some(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                )
            } else {
                None
            };
            let attributes = if parts & HAS_ATTRIBUTES != 0 {
                let n = f.u32()? as usize;
                Some(f.text(n)?)
            } else {
                None
            };
            ItemChange::Upsert {
                id,
                vector,
                attributes,
            }
        }
        _ => return None,
    };
    f.0.is_empty().then_some((seq, change))
}

/// Parses `bytes`: the records, and the length of the intact prefix (what follows it is a torn
/// or damaged tail).
fn parse(bytes: &[u8]) -> (Records, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes
            .get(at + 8..at + 8 + len)
            .filter(|_| len <= MAX_PAYLOAD)
        else {
            break;
        };
        if crc32(payload) != crc {
            break;
        }
        let Some(record) = decode(payload) else {
            break;
        };
        records.push(record);
        at += 8 + len;
    }
    (records, at)
}

/// Reads the journal of `data_dir` (none yet: no records), stopping before a torn tail.
pub fn read(data_dir: &Path) -> Result<Records, CatalogError> {
    Ok(read_from(data_dir, 0)?.0)
}

/// Reads the journal's records from byte `offset` (0, or an end a previous read returned: a
/// reader follows the journal as it grows), stopping before a torn tail; returns them and the
/// offset after the last whole one.
pub fn read_from(data_dir: &Path, offset: u64) -> Result<(Records, u64), CatalogError> {
    use std::io::{Read, Seek};
    let path = path(data_dir);
    let mut file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut bytes = Vec::new();
    file.seek(std::io::SeekFrom::Start(offset))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(io_err(&path))?;
    let (records, at) = parse(&bytes);
    Ok((records, offset + at as u64))
}

/// The sequence number of the journal's last record (0 when empty).
pub fn last_seq(data_dir: &Path) -> Result<u64, CatalogError> {
    Ok(read(data_dir)?.last().map_or(0, |(seq, _)| *seq))
}

impl Journal {
    /// Opens (or creates) the journal of `data_dir` for appending, truncating a torn tail, and
    /// returns its records. Fails if another process holds it.
    pub fn open(data_dir: &Path) -> Result<(Self, Records), CatalogError> {
        let root = catalog_root(data_dir);
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        let path = path(data_dir);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(CatalogError::Input(format!(
                    "{}: another server is changing this catalog (one server owns a data directory)",
                    path.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
        let (records, intact) = parse(&bytes);
        if intact < bytes.len() {
            file.set_len(intact as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        let journal = Self {
            file,
            path,
            last_seq: records.last().map_or(0, |(seq, _)| *seq),
            bytes: intact as u64,
        };
        Ok((journal, records))
    }

    /// Appends `changes` as one write and fsyncs it; returns the last one's sequence number.
    /// After an error nothing of `changes` counts: the file is cut back to where it was.
    pub fn append(&mut self, changes: &[ItemChange]) -> Result<u64, CatalogError> {
        let mut bytes = Vec::new();
        for (k, change) in changes.iter().enumerate() {
            encode(self.last_seq + 1 + k as u64, change, &mut bytes);
        }
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(self.bytes);
            return Err(io_err(&self.path)(e));
        }
        self.bytes += bytes.len() as u64;
        self.last_seq += changes.len() as u64;
        Ok(self.last_seq)
    }

    /// The last record's sequence number (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The journal's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Finishes `compaction` (the caller holds this writer, so nothing is appended meanwhile):
    /// adds the records appended since it was prepared, syncs, and renames it over the journal,
    /// whose records up to the compaction's position are gone from then on. A crash leaves
    /// either journal whole (the rename is atomic); sequence numbers go on.
    pub fn compact(&mut self, compaction: Compaction) -> Result<(), CatalogError> {
        let Compaction {
            path,
            mut file,
            read_to,
            mut bytes,
            ..
        } = compaction;
        let data_dir = self
            .path
            .parent()
            .and_then(Path::parent)
            .expect("the journal is in DATA_DIR/catalog");
        let (later, _) = read_from(data_dir, read_to)?;
        let mut out = Vec::new();
        for (seq, change) in &later {
            encode(*seq, change, &mut out);
        }
        bytes += out.len() as u64;
        file.write_all(&out)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
        file.try_lock()
            .map_err(|e| CatalogError::Input(format!("{}: cannot lock it: {e}", path.display())))?;
        fs::rename(&path, &self.path).map_err(io_err(&self.path))?;
        let dir = self.path.parent().expect("in a directory");
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        self.file = file;
        self.bytes = bytes;
        Ok(())
    }
}

/// A compacted copy of the journal being written beside it ([`prepare_compaction`]), finished
/// by its writer ([`Journal::compact`]).
#[derive(Debug)]
pub struct Compaction {
    path: PathBuf,
    file: File,
    /// Where the journal was read up to.
    read_to: u64,
    bytes: u64,
    /// Records dropped.
    pub dropped: usize,
}

/// Writes the journal's records after `seq` (those a catalog generation does not hold) and its
/// last record, as the journal stands now, to a new file beside it: the slow part of a
/// compaction, done without holding the writer (see [`Journal::compact`]). `None` (nothing
/// written) when no record would be dropped.
pub fn prepare_compaction(data_dir: &Path, seq: u64) -> Result<Option<Compaction>, CatalogError> {
    let (records, read_to) = read_from(data_dir, 0)?;
    // The last record stays whatever its number: the numbering goes on from it after a restart
    // (a generation holding it skips it on replay).
    let kept = |k: usize, s: u64| s > seq || k + 1 == records.len();
    let dropped = records
        .iter()
        .enumerate()
        .filter(|&(k, &(s, _))| !kept(k, s))
        .count();
    if dropped == 0 {
        return Ok(None);
    }
    let path = catalog_root(data_dir).join(format!("{FILE}.compacting"));
    let _ = fs::remove_file(&path);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut out = Vec::new();
    for (k, (s, change)) in records.iter().enumerate() {
        if kept(k, *s) {
            encode(*s, change, &mut out);
        }
    }
    file.write_all(&out).map_err(io_err(&path))?;
    Ok(Some(Compaction {
        path,
        file,
        read_to,
        bytes: out.len() as u64,
        dropped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes() -> Vec<ItemChange> {
        vec![
            ItemChange::Upsert {
                id: "née".into(),
                vector: Some(vec![0.5, -1.25]),
                attributes: Some(r#"{"a":1}"#.into()),
            },
            ItemChange::Upsert {
                id: "b".into(),
                vector: None,
                attributes: Some("{}".into()),
            },
            ItemChange::Upsert {
                id: "c".into(),
                vector: Some(vec![1.0, 2.0]),
                attributes: None,
            },
            ItemChange::Delete { id: "née".into() },
        ]
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, _) = Journal::open(dir.path()).unwrap();
            assert_eq!(journal.append(&changes()).unwrap(), 4);
        }
        let full = fs::read(path(dir.path())).unwrap();
        let expected: Records = (1..).zip(changes()).collect();
        assert_eq!(read(dir.path()).unwrap(), expected);
        // Every cut inside the last record leaves the first three; a flipped bit in the last
        // record too.
        let last_start = {
            let mut b = Vec::new();
            for (k, c) in changes()[..3].iter().enumerate() {
                encode(k as u64 + 1, c, &mut b);
            }
            b.len()
        };
        for cut in last_start..full.len() {
            fs::write(path(dir.path()), &full[..cut]).unwrap();
            assert_eq!(read(dir.path()).unwrap(), expected[..3], "cut at {cut}");
        }
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(path(dir.path()), &flipped).unwrap();
        let (mut journal, replay) = Journal::open(dir.path()).unwrap();
        assert_eq!(replay, expected[..3]);
        assert_eq!(
            fs::metadata(path(dir.path())).unwrap().len(),
            last_start as u64
        );
        assert_eq!(journal.append(&changes()[3..]).unwrap(), 4);
        drop(journal);
        assert_eq!(read(dir.path()).unwrap(), expected);
    }

    #[test]
    fn compaction_keeps_the_later_records_and_the_numbering_and_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&changes()).unwrap(); // 1..=4
        // Prepared through 2; 5 appended before it finishes: 3, 4 and 5 stay.
        let compaction = prepare_compaction(dir.path(), 2).unwrap().unwrap();
        assert_eq!(compaction.dropped, 2);
        journal.append(&changes()[..1]).unwrap();
        journal.compact(compaction).unwrap();
        let seqs = |dir: &Path| read(dir).unwrap().iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(seqs(dir.path()), [3, 4, 5]);
        assert_eq!(journal.append(&changes()[1..2]).unwrap(), 6);
        assert_eq!(seqs(dir.path()), [3, 4, 5, 6]);
        // The new file is the locked one.
        assert!(Journal::open(dir.path()).is_err());
        // Compacted through its end: the last record stays, so a restart numbers on from it.
        let compaction = prepare_compaction(dir.path(), 6).unwrap().unwrap();
        journal.compact(compaction).unwrap();
        drop(journal);
        assert_eq!(seqs(dir.path()), [6]);
        // Nothing more to drop: nothing written beside the journal.
        assert!(prepare_compaction(dir.path(), 6).unwrap().is_none());
        assert!(
            !catalog_root(dir.path())
                .join("changes.log.compacting")
                .exists()
        );
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.append(&changes()[..1]).unwrap(), 7);
    }

    #[test]
    fn one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Journal::open(dir.path()).unwrap();
        let err = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another server"), "{err}");
    }
}
