//! A part of the users, for batches split across processes or machines.

use pinnersage_core::hash::stable_hash;

/// One of `count` disjoint parts of the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with `I < N`.
    ///
    /// ```
    /// use pinnersage_pipeline::batch::Shard;
    /// assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
    /// assert!(Shard::parse("4/4").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("shard {text:?} is not I/N"))?;
        let (index, count) = (i.trim().parse::<u32>(), n.trim().parse::<u32>());
        match (index, count) {
            (Ok(index), Ok(count)) if count > 0 && index < count => Ok(Self { index, count }),
            _ => Err(format!("shard {text:?} must be I/N with 0 <= I < N")),
        }
    }

    /// Whether `user` belongs to this shard.
    pub fn contains(&self, user: &str) -> bool {
        stable_hash(user.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}
