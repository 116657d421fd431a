//! Block status for filters that move offsets (offset, partition, tar,
//! truncate): the layer below's extents, re-based.

use nbd_core::server::backend::{Backend, Extents, Result};

/// Asks `inner` for the extents of `count` bytes at `inner_offset` and adds
/// them to `sink` at `outer_offset` (for filters that move offsets).
pub fn extents_at(
    inner: &dyn Backend,
    count: u32,
    inner_offset: u64,
    outer_offset: u64,
    sink: &mut Extents,
) -> Result<()> {
    let mut e = Extents::new();
    e.reset(inner_offset, count, false);
    inner.extents(count, inner_offset, &mut e)?;
    let mut pos = outer_offset;
    for &(len, flags) in e.as_slice() {
        if !sink.add(pos, len, flags)? {
            return Ok(());
        }
        pos += len;
    }
    if pos < outer_offset + count as u64 {
        sink.add(pos, outer_offset + count as u64 - pos, 0)?;
    }
    Ok(())
}
