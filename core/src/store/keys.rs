//! Channel-id keys and the hashers of the store's maps.

use core::hash::{BuildHasher, Hash, Hasher};

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use hashbrown::Equivalent;

/// A channel id owned by the store.
pub(super) struct Key<A: Allocator>(pub(super) AVec<u8, A>);

impl<A: Allocator> Hash for Key<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0[..].hash(state)
    }
}

impl<A: Allocator> PartialEq for Key<A> {
    fn eq(&self, other: &Self) -> bool {
        self.0[..] == other.0[..]
    }
}

impl<A: Allocator> Eq for Key<A> {}

/// Looks a [`Key`] up by its bytes.
#[derive(Hash)]
pub(super) struct KeyRef<'a>(pub(super) &'a [u8]);

impl<A: Allocator> Equivalent<Key<A>> for KeyRef<'_> {
    fn equivalent(&self, key: &Key<A>) -> bool {
        self.0 == &key.0[..]
    }
}

/// Hasher state for the seq-keyed map: plain data, no per-process state. Sequence numbers are
/// ours (not attacker-chosen), so a multiplicative hash is enough.
#[derive(Clone, Copy, Default)]
pub(super) struct SeqHash;

pub(super) struct SeqHasher(u64);

impl BuildHasher for SeqHash {
    type Hasher = SeqHasher;
    fn build_hasher(&self) -> SeqHasher {
        SeqHasher(0)
    }
}

impl Hasher for SeqHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Copies `b` onto the process heap (temporary lists), or `None` when it is short of memory.
pub(super) fn try_copy(b: &[u8]) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(b.len()).ok()?;
    v.extend_from_slice(b);
    Some(v)
}
