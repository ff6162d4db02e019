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
