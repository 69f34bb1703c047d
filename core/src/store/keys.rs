//! Temporary copies of channel ids on the process heap.

/// Copies `b` onto the process heap (temporary lists), or `None` when it is short of memory.
pub(super) fn try_copy(b: &[u8]) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(b.len()).ok()?;
    v.extend_from_slice(b);
    Some(v)
}
