//! A flat open-addressing table from `stable_hash(id)` to catalog row, built for jobs that
//! resolve millions of ids (the batch, the server).
//!
//! One slot is a `u64`: the high 32 bits of the hash as a fingerprint and `row + 1` (0 marks an
//! empty slot). The table has at least twice as many slots as rows, so a probe usually reads one
//! cache line. A fingerprint match is confirmed by the caller's `is_row` check, so the table is
//! exact: colliding fingerprints just continue the probe.

/// Hash -> row table; see the module docs.
#[derive(Debug, Clone)]
pub struct IdTable {
    slots: Vec<u64>,
    mask: usize,
}

impl IdTable {
    /// Builds the table for `rows` items whose hashes `hash_of(row)` returns.
    ///
    /// ```
    /// use pinnersage_catalog::id_table::IdTable;
    /// use pinnersage_core::hash::stable_hash;
    /// let ids = ["a", "b", "c"];
    /// let table = IdTable::build(ids.len(), |r| stable_hash(ids[r].as_bytes()));
    /// assert_eq!(table.find(stable_hash(b"b"), |r| ids[r] == "b"), Some(1));
    /// assert_eq!(table.find(stable_hash(b"z"), |r| ids[r] == "z"), None);
    /// ```
    pub fn build(rows: usize, hash_of: impl Fn(usize) -> u64) -> Self {
        assert!(rows < u32::MAX as usize, "at most 2^32 - 2 rows");
        let size = (rows * 2).max(16).next_power_of_two();
        let mut table = Self {
            slots: vec![0; size],
            mask: size - 1,
        };
        for row in 0..rows {
            let hash = hash_of(row);
            let mut slot = table.home(hash);
            while table.slots[slot] != 0 {
                slot = (slot + 1) & table.mask;
            }
            table.slots[slot] = (fingerprint(hash) << 32) | (row as u64 + 1);
        }
        table
    }

    /// The row whose hash is `hash` and for which `is_row(row)` holds (the caller compares the
    /// stored id), or `None`.
    #[inline]
    pub fn find(&self, hash: u64, is_row: impl Fn(usize) -> bool) -> Option<usize> {
        self.probe(hash).find(|&row| is_row(row))
    }

    /// The first row along `hash`'s probe whose fingerprint matches, without checking the id:
    /// the likely row, which [`find`](Self::find) then confirms. `None` means no row has `hash`.
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<usize> {
        self.probe(hash).next()
    }

    /// The rows along `hash`'s probe whose fingerprint matches, in probe order, up to the first
    /// empty slot.
    #[inline]
    fn probe(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let fp = fingerprint(hash);
        let mut slot = self.home(hash);
        std::iter::from_fn(move || {
            loop {
                let entry = self.slots[slot];
                if entry == 0 {
                    return None;
                }
                slot = (slot + 1) & self.mask;
                if entry >> 32 == fp {
                    return Some((entry & 0xffff_ffff) as usize - 1);
                }
            }
        })
    }

    /// Hints the CPU to load the slot `find(hash, ..)` reads first, so that a later `find`
    /// over many ids overlaps its cache misses.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let ptr = self.slots[self.home(hash)..].as_ptr();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint that never faults; the pointer is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch(ptr.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = ptr;
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.slots.len() * 8
    }

    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }
}

fn fingerprint(hash: u64) -> u64 {
    hash >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row is found, absent ids are not, and hash collisions are resolved by `is_row`.
    #[test]
    fn finds_every_row_even_when_hashes_collide() {
        let ids: Vec<String> = (0..5_000).map(|i| format!("item-{i}")).collect();
        // A deliberately bad hash: 50 distinct values, so every probe meets fingerprint twins.
        let hash = |id: &str| pinnersage_core::hash::stable_hash(id.as_bytes()) % 50;
        let table = IdTable::build(ids.len(), |r| hash(&ids[r]));
        let mut candidates_wrong = 0;
        for (row, id) in ids.iter().enumerate() {
            assert_eq!(table.find(hash(id), |r| ids[r] == *id), Some(row));
            let candidate = table.candidate(hash(id)).expect("a row has this hash");
            candidates_wrong += usize::from(candidate != row);
        }
        assert!(
            candidates_wrong > 0,
            "the bad hash makes some candidates wrong"
        );
        for absent in ["item-5000", "", "x"] {
            assert_eq!(table.find(hash(absent), |r| ids[r] == absent), None);
        }
        let good = IdTable::build(ids.len(), |r| {
            pinnersage_core::hash::stable_hash(ids[r].as_bytes())
        });
        assert_eq!(
            good.candidate(pinnersage_core::hash::stable_hash(b"item-7")),
            Some(7)
        );
        assert!(table.bytes() >= ids.len() * 16);
    }
}
