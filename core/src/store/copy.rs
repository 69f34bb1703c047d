//! Copies out of the store into the process heap. They are made while the zone lock is held,
//! so none of them may abort the process when the heap is exhausted (a worker that dies
//! holding the lock makes the next one rebuild the store, see `recovery`): every copy here
//! reserves fallibly and reports [`StoreError::HeapExhausted`] instead, and the callers stop
//! and leave the store unchanged.

use super::StoreError;

/// A copy that the heap refused.
const NO_HEAP: StoreError = StoreError::HeapExhausted;

/// `b` copied into a new vector.
pub(super) fn bytes(b: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut v = Vec::new();
    v.try_reserve_exact(b.len()).map_err(|_| NO_HEAP)?;
    v.extend_from_slice(b);
    Ok(v)
}

/// Appends `x` to `v`, growing it fallibly.
pub(super) fn push<T>(v: &mut Vec<T>, x: T) -> Result<(), StoreError> {
    v.try_reserve(1).map_err(|_| NO_HEAP)?;
    v.push(x);
    Ok(())
}

/// An empty vector with room for `n` items.
pub(super) fn with_capacity<T>(n: usize) -> Result<Vec<T>, StoreError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| NO_HEAP)?;
    Ok(v)
}
