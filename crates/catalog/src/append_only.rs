//! [`AppendOnly`]: a vector that grows while readers hold references into it. Elements never move
//! (they live in buckets of doubling size, allocated once), so `get` hands out plain `&T` for as
//! long as the vector lives, without locks on the read path. Safe code only: each slot is a
//! `OnceLock`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Bucket `b` holds `2^(b + SHIFT)` elements.
const SHIFT: u32 = 10;
/// Enough buckets for more than 2³² elements.
const BUCKETS: usize = 24;

/// An append-only vector with stable element addresses; see the module documentation.
///
/// ```
/// use pinnersage_catalog::append_only::AppendOnly;
/// let v = AppendOnly::new();
/// let first = { v.push("a".to_string()); v.get(0).unwrap() };
/// for i in 0..5000 { v.push(i.to_string()); }
/// assert_eq!(first, "a"); // still valid: nothing moved
/// assert_eq!(v.len(), 5001);
/// assert_eq!(v.get(5000).map(String::as_str), Some("4999"));
/// assert!(v.get(5001).is_none());
/// ```
pub struct AppendOnly<T> {
    buckets: [OnceLock<Box<[OnceLock<T>]>>; BUCKETS],
    len: AtomicUsize,
    push: Mutex<()>,
}

impl<T> Default for AppendOnly<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for AppendOnly<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendOnly")
            .field("len", &self.len())
            .finish()
    }
}

/// The bucket and the offset in it of element `i`.
fn locate(i: usize) -> (usize, usize) {
    let j = i + (1 << SHIFT);
    let bit = (usize::BITS - 1 - j.leading_zeros()) as usize;
    (bit - SHIFT as usize, j - (1 << bit))
}

impl<T> AppendOnly<T> {
    /// An empty vector (allocates nothing until the first push).
    pub fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
            push: Mutex::new(()),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `value` and returns its position.
    pub fn push(&self, value: T) -> usize {
        let _one_writer = self.push.lock().unwrap_or_else(PoisonError::into_inner);
        let i = self.len.load(Ordering::Relaxed);
        let (bucket, offset) = locate(i);
        let slots = self.buckets[bucket].get_or_init(|| {
            (0..1usize << (bucket as u32 + SHIFT))
                .map(|_| OnceLock::new())
                .collect()
        });
        if slots[offset].set(value).is_err() {
            unreachable!("slot {i} is written once, under the push lock");
        }
        self.len.store(i + 1, Ordering::Release);
        i
    }

    /// Element `i`, if pushed.
    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len() {
            return None;
        }
        let (bucket, offset) = locate(i);
        self.buckets[bucket].get()?.get(offset)?.get()
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len()).map_while(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_cross_bucket_edges() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(1024 + 2047), (1, 2047));
        assert_eq!(locate(1024 + 2048), (2, 0));
    }

    #[test]
    fn readers_see_every_pushed_element_while_a_writer_appends() {
        let v = std::sync::Arc::new(AppendOnly::new());
        let writer = {
            let v = v.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    v.push(i);
                }
            })
        };
        while v.len() < 20_000 {
            let n = v.len();
            for i in (0..n).step_by(97) {
                assert_eq!(v.get(i), Some(&(i as u32)));
            }
        }
        writer.join().unwrap();
        assert!(v.iter().copied().eq(0..20_000));
    }
}
