//! A stable 64-bit hash for ids: the same bytes hash to the same value in every release and on
//! every machine (unlike `std`'s randomised hasher), so it can key shards, seeds and dedupe keys.

/// FNV-1a over `bytes`, finished with the SplitMix64 mixer for well-spread low bits.
///
/// ```
/// use pinnersage_core::hash::stable_hash;
/// assert_eq!(stable_hash(b"user-1"), stable_hash(b"user-1"));
/// assert_ne!(stable_hash(b"user-1"), stable_hash(b"user-2"));
/// // Pinned: changing the hash would reshuffle shards and seeds of existing deployments.
/// assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
/// ```
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// CRC-32 (IEEE 802.3, the zlib/PNG/Ethernet checksum) of `bytes`: the fleet's partition hash,
/// chosen because load balancers compute it too (HAProxy's `crc32` converter, without its avalanche option), so a
/// user-affine routing rule can be written in their configuration.
///
/// ```
/// use pinnersage_core::hash::crc32;
/// assert_eq!(crc32(b"123456789"), 0xCBF4_3926); // the standard check value
/// assert_eq!(crc32(b""), 0);
/// ```
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The partition of `user` in a fleet of `partitions` partitions: `crc32(user's UTF-8 bytes) %
/// partitions` (CRC-32/IEEE, as zlib and HAProxy's `crc32` converter compute it), the rule the
/// event stream, shipped profiles and a user-affine load balancer share.
///
/// ```
/// use pinnersage_core::hash::partition_of;
/// assert_eq!(partition_of("u1", 8), 0x424f_9f76 % 8);
/// assert_eq!(partition_of("anyone", 1), 0);
/// ```
pub fn partition_of(user: &str, partitions: u32) -> u32 {
    crc32(user.as_bytes()) % partitions.max(1)
}

/// The users a fleet replica holds: those of the partitions `held` out of `count` (every user
/// when `held` is empty).
///
/// ```
/// use pinnersage_core::hash::{Share, partition_of};
/// let share = Share { count: 8, held: vec![0, 1] };
/// assert_eq!(share.holds("u1").is_ok(), partition_of("u1", 8) < 2);
/// assert!(Share::everyone().holds("anyone").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Partitions in the fleet.
    pub count: u32,
    /// The partitions held (empty: all of them).
    pub held: Vec<u32>,
}

impl Share {
    /// Every user: one partition, held.
    pub fn everyone() -> Self {
        Self {
            count: 1,
            held: Vec::new(),
        }
    }

    /// The partitions held, in order (all of them when `held` is empty).
    ///
    /// ```
    /// use pinnersage_core::hash::Share;
    /// assert_eq!(Share { count: 3, held: vec![] }.held_partitions(), [0, 1, 2]);
    /// assert_eq!(Share { count: 8, held: vec![5, 1] }.held_partitions(), [1, 5]);
    /// ```
    pub fn held_partitions(&self) -> Vec<u32> {
        (0..self.count)
            .filter(|&p| self.holds_partition(p))
            .collect()
    }

    /// Whether partition `p` is held.
    pub fn holds_partition(&self, p: u32) -> bool {
        self.held.is_empty() || self.held.contains(&p)
    }

    /// `Ok` when `user` is held, else the user's partition.
    pub fn holds(&self, user: &str) -> Result<(), u32> {
        let partition = partition_of(user, self.count);
        if self.holds_partition(partition) {
            Ok(())
        } else {
            Err(partition)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crc32;

    /// Values from an independent implementation (Python's `zlib.crc32`).
    #[test]
    fn crc32_matches_zlib() {
        for (text, expected) in [
            ("u1", 0x424f_9f76),
            ("user-42", 0x7d06_b873),
            ("n\u{e9}e", 0x2b49_e542),
            ("The quick brown fox jumps over the lazy dog", 0x414f_a339),
        ] {
            assert_eq!(crc32(text.as_bytes()), expected, "{text}");
        }
    }
}
