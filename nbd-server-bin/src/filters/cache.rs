//! The cache filter: a cache of 64K blocks of the layer below in memory,
//! as nbdkit-cache-filter(1), shared by every connection.
//!
//! `cache=writeback` (the default) keeps writes until a flush (or FUA)
//! writes them down; `writethrough` writes down at once; `unsafe` ignores
//! flush and FUA (writes reach the layer below only when a flush...
//! never: as nbdkit's, an unsafe cache is for throwaway data).
//! `cache-max-size=` drops clean blocks beyond it; `cache-on-read=`
//! (default true) says whether reads fill the cache.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::blocks::{per_block, read_block};
use super::extents::extents_at;
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "cache",
    params: &[
        (
            "cache",
            "writeback (default), writethrough or unsafe: when writes reach the layer below",
        ),
        (
            "cache-max-size",
            "the most memory the cache may use; clean blocks beyond it are dropped",
        ),
        (
            "cache-high-threshold",
            "accepted for compatibility; not used",
        ),
        (
            "cache-low-threshold",
            "accepted for compatibility; not used",
        ),
        (
            "cache-on-read",
            "whether reads fill the cache (default true)",
        ),
        (
            "cache-min-block-size",
            "accepted for compatibility; blocks are 64K",
        ),
    ],
    open: |p, _| {
        let mode = match p
            .take_enum("cache", &["writeback", "writethrough", "unsafe"])?
            .as_deref()
        {
            Some("writethrough") => CacheMode::Writethrough,
            Some("unsafe") => CacheMode::Unsafe,
            _ => CacheMode::Writeback,
        };
        let max = p.take_size("cache-max-size")?;
        p.take("cache-high-threshold");
        p.take("cache-low-threshold");
        p.take_size("cache-min-block-size")?;
        let on_read = p.take_bool("cache-on-read")?.unwrap_or(true);
        Ok(Arc::new(Cache {
            mode,
            max_blocks: max.map_or(usize::MAX, |m| (m / CACHE_BS).max(1) as usize),
            on_read,
            blocks: Mutex::new(HashMap::new()),
        }))
    },
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum CacheMode {
    Writeback,
    Writethrough,
    Unsafe,
}

const CACHE_BS: u64 = 64 << 10;

/// block -> (data, dirty)
type BlockMap = HashMap<u64, (Box<[u8]>, bool)>;

/// The cache, shared by every connection.
struct Cache {
    mode: CacheMode,
    max_blocks: usize,
    on_read: bool,
    blocks: Mutex<BlockMap>,
}

impl Cache {
    fn evict(&self, m: &mut BlockMap) {
        if m.len() <= self.max_blocks {
            return;
        }
        let clean: Vec<u64> = m.iter().filter(|(_, v)| !v.1).map(|(k, _)| *k).collect();
        for k in clean {
            if m.len() <= self.max_blocks {
                break;
            }
            m.remove(&k);
        }
    }

    fn write_down(
        &self,
        next: &dyn Backend,
        b: u64,
        data: &[u8],
        size: u64,
        fua: bool,
    ) -> Result<()> {
        let start = b * CACHE_BS;
        let n = size.saturating_sub(start).min(CACHE_BS) as usize;
        next.pwrite(&data[..n], start, fua)
    }

    /// Changes `len` bytes at `offset` in the cache with `f(bytes of a
    /// block, range in the request)`, reading blocks in first, and writes
    /// them down as the mode says.
    fn modify(
        &self,
        next: &dyn Backend,
        offset: u64,
        len: u64,
        fua: bool,
        mut f: impl FnMut(&mut [u8], std::ops::Range<usize>),
    ) -> Result<()> {
        let size = next.size()?;
        let through =
            self.mode == CacheMode::Writethrough || (fua && self.mode == CacheMode::Writeback);
        per_block(CACHE_BS, offset, len, |b, inb, r| {
            let mut m = self.blocks.lock();
            let (blk, dirty) = match m.entry(b) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert((read_block(next, size, b, CACHE_BS)?, false)),
            };
            let n = r.len();
            f(&mut blk[inb..inb + n], r);
            if through {
                self.write_down(next, b, blk, size, fua)?;
                *dirty = false;
            } else {
                *dirty = true;
            }
            self.evict(&mut m);
            Ok(())
        })
    }

    /// Reads `buf.len()` bytes at `offset` through the cache.
    fn read_into(&self, next: &dyn Backend, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = next.size()?;
        per_block(CACHE_BS, offset, buf.len() as u64, |b, inb, r| {
            let mut m = self.blocks.lock();
            let n = r.len();
            if let Some((blk, _)) = m.get(&b) {
                buf[r].copy_from_slice(&blk[inb..inb + n]);
                return Ok(());
            }
            if !self.on_read {
                drop(m);
                return next.pread(&mut buf[r.clone()], offset + r.start as u64);
            }
            let blk = read_block(next, size, b, CACHE_BS)?;
            buf[r].copy_from_slice(&blk[inb..inb + n]);
            m.insert(b, (blk, false));
            self.evict(&mut m);
            Ok(())
        })
    }

    /// Writes dirty blocks down; with a range, also drops the blocks it
    /// touches.
    fn flush_blocks(&self, next: &dyn Backend, range: Option<(u64, u64)>) -> Result<()> {
        let size = next.size()?;
        let mut m = self.blocks.lock();
        let mut keys: Vec<u64> = m.keys().copied().collect();
        keys.sort_unstable();
        for b in keys {
            let touches = match range {
                None => true,
                Some((s, e)) => b * CACHE_BS < e && (b + 1) * CACHE_BS > s,
            };
            if !touches {
                continue;
            }
            if let Some((blk, dirty)) = m.get_mut(&b) {
                if *dirty {
                    self.write_down(next, b, blk, size, false)?;
                    *dirty = false;
                }
            }
            if range.is_some() {
                m.remove(&b);
            }
        }
        Ok(())
    }
}

impl Filter for Cache {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Cache {
    answers!(
        true: can_flush, can_fua, can_multi_conn, can_cache;
        false: can_fast_zero;
    );

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        self.read_into(next, r.buf(), offset)
    }

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.modify(next, offset, buf.len() as u64, fua, |d, r| {
            d.copy_from_slice(&buf[r])
        })
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "cache: zero is not fast"));
        }
        self.modify(next, offset, count as u64, flags.fua, |d, _| d.fill(0))
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        // Drop what the trim covers from the cache (writing any dirty part
        // around it first), then pass it down.
        self.flush_blocks(next, Some((offset, offset + count as u64)))?;
        next.trim(count, offset, fua)
    }

    fn flush(&self, next: &dyn Backend) -> Result<()> {
        if self.mode == CacheMode::Unsafe {
            return Ok(());
        }
        self.flush_blocks(next, None)?;
        if next.can_flush()? {
            next.flush()?;
        }
        Ok(())
    }

    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        let mut tmp = vec![0u8; count as usize];
        self.read_into(next, &mut tmp, offset)
    }

    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        // Dirty blocks are data whatever the layer below says.
        let end = offset + count as u64;
        let dirty = {
            let m = self.blocks.lock();
            m.iter()
                .any(|(b, v)| v.1 && b * CACHE_BS < end && (b + 1) * CACHE_BS > offset)
        };
        if dirty {
            sink.add(offset, count as u64, 0).map(|_| ())
        } else {
            extents_at(next, count, offset, offset, sink)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nbd_core::server::backend::Backend;

    use crate::chain::testing::{filter_over, info};
    use crate::chain::Chain;
    use crate::params::Params;
    use crate::plugins::memory::Memory;

    fn chain(mem: &Arc<Memory>, mode: &str) -> Arc<Chain> {
        filter_over(&super::FILTER, &[("cache", mode)], Arc::clone(mem) as _)
    }

    #[test]
    fn writeback_reaches_the_disk_on_flush() {
        for mode in ["writeback", "writethrough", "unsafe"] {
            let mem = Arc::new(Memory::new(1 << 20));
            let c = chain(&mem, mode).open(info()).unwrap();
            assert!(c.can_flush().unwrap());
            c.pwrite(b"abc", 70_000, false).unwrap();
            let mut b = [0u8; 3];
            c.pread(&mut b, 70_000).unwrap();
            assert_eq!(&b, b"abc", "{mode}");
            mem.pread(&mut b, 70_000).unwrap();
            let through = mode == "writethrough";
            assert_eq!(&b == b"abc", through, "{mode}");
            c.flush().unwrap();
            mem.pread(&mut b, 70_000).unwrap();
            assert_eq!(&b == b"abc", mode != "unsafe", "{mode}");
        }
        let mut p = Params::new("cache", vec![("cache".into(), "bogus".into())]);
        assert!((super::FILTER.open)(&mut p, false).is_err());
    }
}
