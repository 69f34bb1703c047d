//! Hashing for maps keyed by addresses.

use std::hash::{BuildHasher, Hasher};

/// A [`BuildHasher`] for maps keyed by a request's (or any object's) address, as `usize`: the
/// module's own keys, not client input, so a multiply-fold replaces SipHash on hot paths.
/// Same function as the `PtrHash` of `src/glue/worker.rs`.
///
/// Not for keys a client can choose (no protection against crafted collisions).
#[derive(Debug, Default, Clone, Copy)]
pub struct PtrHash;

/// The [`Hasher`] of [`PtrHash`].
#[derive(Debug)]
pub struct PtrHasher(u64);

impl BuildHasher for PtrHash {
    type Hasher = PtrHasher;
    fn build_hasher(&self) -> PtrHasher {
        PtrHasher(0)
    }
}

impl Hasher for PtrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_usize(&mut self, x: usize) {
        // Addresses are aligned: fold the high bits of the product down so that both the
        // bucket index (low bits) and the control byte (high bits) vary.
        let h = (x as u64 ^ (x as u64 >> 4)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn hash(x: usize) -> u64 {
        PtrHash.hash_one(x)
    }

    /// Distinct values among `keys` after `f`.
    fn distinct(keys: &[usize], f: impl Fn(u64) -> u64) -> usize {
        keys.iter()
            .map(|&k| f(hash(k)))
            .collect::<HashSet<_>>()
            .len()
    }

    #[test]
    fn aligned_addresses_spread_over_buckets_and_control_bytes() {
        // 4 096 addresses of 8-, 64-, 4096-byte-aligned objects, as a heap hands them out.
        for stride in [8usize, 16, 64, 256, 4096] {
            let base = 0x5555_5555_0000usize;
            let keys: Vec<usize> = (0..4096).map(|i| base + i * stride).collect();
            // Low bits pick the bucket: 4 096 keys over 4 096 buckets should fill most of
            // them (a random function fills about 63 %; aligned keys without mixing would
            // land in 1/stride of them).
            let buckets = distinct(&keys, |h| h & 4095);
            assert!(
                buckets > 2400,
                "stride {stride}: {buckets} of 4096 buckets used"
            );
            // The top 7 bits are hashbrown's control byte: all 128 values should appear.
            let tags = distinct(&keys, |h| h >> 57);
            assert!(
                tags > 120,
                "stride {stride}: {tags} of 128 control bytes used"
            );
            // And no two keys collide on the full hash.
            assert_eq!(distinct(&keys, |h| h), keys.len(), "stride {stride}");
        }
    }

    #[test]
    fn works_as_a_map_hasher() {
        let mut m: HashMap<usize, u32, PtrHash> = HashMap::default();
        for i in 0..1000usize {
            m.insert(0x7f00_0000_0000 + i * 48, i as u32);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get(&(0x7f00_0000_0000 + 999 * 48)), Some(&999));
        assert_eq!(m.get(&1), None);
        let s: HashSet<usize, PtrHash> = (0..10).collect();
        assert!(s.contains(&3));
        // Deterministic: no per-process state.
        assert_eq!(hash(0x1234_5678), hash(0x1234_5678));
        assert_ne!(hash(0x1000), hash(0x1008));
        // Other key types go through `write`.
        assert_ne!(PtrHash.hash_one(b"ab"), PtrHash.hash_one(b"ba"));
    }
}
