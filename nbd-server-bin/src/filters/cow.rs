//! The cow filter: copy-on-write, as nbdkit-cow-filter(1). Writes, trims
//! and zeroes go to an in-memory overlay of `cow-block-size` blocks
//! (default 64K); the layer below is never written. Reads come from the
//! overlay where it has the block, else from below (and with
//! `cow-on-read=true` the block read is kept in the overlay). The overlay
//! is shared by every connection and lost at exit.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::blocks::{check_block_size, per_block, read_block};
use super::extents::extents_at;
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "cow",
    params: &[
        (
            "cow-block-size",
            "the size of the overlay's blocks, a power of 2 from 4K to 32M (default 64K)",
        ),
        (
            "cow-on-cache",
            "accepted for compatibility; cache requests are passed below",
        ),
        (
            "cow-on-read",
            "keep blocks read from below in the overlay (default false)",
        ),
    ],
    open: |p, _| {
        let bs = p.take_size("cow-block-size")?.unwrap_or(64 << 10);
        let bs = check_block_size(p, "cow-block-size", bs)?;
        let on_read = p.take_bool("cow-on-read")?.unwrap_or(false);
        p.take_bool("cow-on-cache")?;
        Ok(Arc::new(Cow {
            bs,
            overlay: RwLock::new(HashMap::new()),
            on_read,
        }))
    },
};

/// The overlay, shared by every connection.
struct Cow {
    bs: u64,
    overlay: RwLock<HashMap<u64, Box<[u8]>>>,
    on_read: bool,
}

impl Cow {
    /// Changes `len` bytes at `offset` in the overlay with `f(bytes of a
    /// block, range in the request)`, copying blocks up from below first.
    fn modify(
        &self,
        next: &dyn Backend,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&mut [u8], std::ops::Range<usize>),
    ) -> Result<()> {
        let size = next.size()?;
        per_block(self.bs, offset, len, |b, inb, r| {
            let mut ov = self.overlay.write();
            let blk = match ov.entry(b) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(read_block(next, size, b, self.bs)?),
            };
            let n = r.len();
            f(&mut blk[inb..inb + n], r);
            Ok(())
        })
    }
}

impl Filter for Cow {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Cow {
    answers!(
        true: can_write, can_flush, can_fua, can_trim, can_zero, can_multi_conn, can_extents;
        false: can_fast_zero;
    );

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let buf = r.buf();
        let size = next.size()?;
        per_block(self.bs, offset, buf.len() as u64, |b, inb, r| {
            {
                let ov = self.overlay.read();
                if let Some(blk) = ov.get(&b) {
                    let n = r.len();
                    buf[r].copy_from_slice(&blk[inb..inb + n]);
                    return Ok(());
                }
            }
            if self.on_read {
                let blk = read_block(next, size, b, self.bs)?;
                let n = r.len();
                buf[r].copy_from_slice(&blk[inb..inb + n]);
                self.overlay.write().entry(b).or_insert(blk);
                Ok(())
            } else {
                next.pread(&mut buf[r.clone()], offset + r.start as u64)
            }
        })
    }

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        self.modify(next, offset, buf.len() as u64, |dst, r| {
            dst.copy_from_slice(&buf[r])
        })
    }

    fn flush(&self, _: &dyn Backend) -> Result<()> {
        Ok(())
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, _fua: bool) -> Result<()> {
        self.modify(next, offset, count as u64, |dst, _| dst.fill(0))
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "cow: zero is not fast"));
        }
        self.modify(next, offset, count as u64, |dst, _| dst.fill(0))
    }

    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        if next.can_cache()? {
            next.cache(count, offset)
        } else {
            Ok(())
        }
    }

    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        // Overlay blocks are data; runs of other blocks are asked below.
        let end = offset + count as u64;
        let mut pos = offset;
        while pos < end && sink.wants_more() {
            let b = pos / self.bs;
            let in_ov = self.overlay.read().contains_key(&b);
            let mut run_end = ((b + 1) * self.bs).min(end);
            while run_end < end && self.overlay.read().contains_key(&(run_end / self.bs)) == in_ov {
                run_end = ((run_end / self.bs + 1) * self.bs).min(end);
            }
            let len = run_end - pos;
            if in_ov {
                sink.add(pos, len, 0)?;
            } else if next.can_extents()? {
                extents_at(next, len as u32, pos, pos, sink)?;
            } else {
                sink.add(pos, len, 0)?;
            }
            pos = run_end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nbd_core::server::backend::{Backend, ZeroFlags};

    use crate::chain::testing::{filter_over, info_id};
    use crate::params::Params;
    use crate::plugins::memory::Memory;

    #[test]
    fn writes_stay_in_the_overlay_shared_by_connections() {
        let mem = Arc::new(Memory::new(1 << 20));
        mem.pwrite(&[3u8; 8192], 0, false).unwrap();
        let args = [("cow-block-size", "4K")];
        let chain = filter_over(&super::FILTER, &args, Arc::clone(&mem) as _);
        let c = chain.open(info_id(1)).unwrap();
        assert!(c.can_write().unwrap());
        c.pwrite(b"xy", 4095, false).unwrap();
        c.zero(10, 100, ZeroFlags::default()).unwrap();
        assert!(c
            .zero(
                10,
                100,
                ZeroFlags {
                    fast: true,
                    ..Default::default()
                }
            )
            .is_err());
        let mut b = [0u8; 4];
        mem.pread(&mut b, 4094).unwrap();
        assert_eq!(b, [3; 4]);
        let c2 = chain.open(info_id(2)).unwrap();
        c2.pread(&mut b, 4094).unwrap();
        assert_eq!(&b, &[3, b'x', b'y', 3]);
        let mut z = [9u8; 12];
        c2.pread(&mut z, 99).unwrap();
        assert_eq!(z[0], 3);
        assert_eq!(z[1..11], [0; 10]);
        assert_eq!(z[11], 3);

        let mut p = Params::new("cow", vec![("cow-block-size".into(), "1K".into())]);
        let e = (super::FILTER.open)(&mut p, false).err().unwrap();
        assert!(e.contains("power of 2 between 4K and 32M"), "{e}");
    }
}
