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

/// The extents of all of `count` bytes at `offset` of `inner`, as
/// (offset, length, flags), asking again where an answer stops short
/// (nbdkit's `nbdkit_extents_full`). An answer with nothing in it is EIO.
pub fn extents_full(inner: &dyn Backend, count: u32, offset: u64) -> Result<Vec<(u64, u64, u32)>> {
    let end = offset + count as u64;
    let mut out: Vec<(u64, u64, u32)> = Vec::new();
    let mut pos = offset;
    let mut e = Extents::new();
    while pos < end {
        let n = (end - pos) as u32;
        e.reset(pos, n, false);
        inner.extents(n, pos, &mut e)?;
        if e.is_empty() {
            return Err(nbd_core::server::backend::Error::new(
                libc::EIO,
                "extents: the layer below returned no extents",
            ));
        }
        for &(len, flags) in e.as_slice() {
            match out.last_mut() {
                Some((_, l, f)) if *f == flags => *l += len,
                _ => out.push((pos, len, flags)),
            }
            pos += len;
        }
    }
    Ok(out)
}
