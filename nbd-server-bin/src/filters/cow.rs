//! Filters that keep blocks in memory: cow (a private overlay; the layer
//! below is never written), cache (a block cache, writeback, writethrough
//! or unsafe) and readahead (a growing read-ahead buffer).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use nbd_core::server::backend::{Backend, Error, Extents, Result, ZeroFlags};

use super::super::Params;
use super::extents_at;

/// Reads block `b` (of `bs` bytes) of `inner`, zero-padded past its end.
fn read_block(inner: &dyn Backend, size: u64, b: u64, bs: u64) -> Result<Box<[u8]>> {
    let mut v = vec![0u8; bs as usize].into_boxed_slice();
    let start = b * bs;
    let n = size.saturating_sub(start).min(bs) as usize;
    if n > 0 {
        inner.pread(&mut v[..n], start)?;
    }
    Ok(v)
}

/// Calls `f(block, offset in block, range in request)` per block.
fn per_block(
    bs: u64,
    offset: u64,
    len: u64,
    mut f: impl FnMut(u64, usize, std::ops::Range<usize>) -> Result<()>,
) -> Result<()> {
    let mut done = 0u64;
    while done < len {
        let pos = offset + done;
        let b = pos / bs;
        let inb = (pos - b * bs) as usize;
        let n = (bs - inb as u64).min(len - done);
        f(b, inb, done as usize..(done + n) as usize)?;
        done += n;
    }
    Ok(())
}

fn block_size_param(p: &mut Params, key: &str, default: u64) -> std::result::Result<u64, String> {
    let bs = p.take_size(key)?.unwrap_or(default);
    if !(4096..=(32 << 20)).contains(&bs) || !bs.is_power_of_two() {
        return Err(p.err(format!(
            "{key} must be a power of 2 between 4K and 32M: {bs}"
        )));
    }
    Ok(bs)
}

// ---- cow ----

/// Copy-on-write: writes go to an in-memory overlay of `cow-block-size`
/// blocks (default 64K); the layer below is opened read-only in spirit
/// and never written. The overlay is lost at exit.
pub struct Cow {
    inner: Arc<dyn Backend>,
    bs: u64,
    overlay: RwLock<HashMap<u64, Box<[u8]>>>,
    on_read: bool,
}

impl Cow {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let bs = block_size_param(p, "cow-block-size", 64 << 10)?;
        let on_read = p.take_bool("cow-on-read")?.unwrap_or(false);
        p.take_bool("cow-on-cache")?;
        Ok(Cow {
            inner,
            bs,
            overlay: RwLock::new(HashMap::new()),
            on_read,
        })
    }

    fn modify(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&mut [u8], std::ops::Range<usize>),
    ) -> Result<()> {
        let size = self.inner.size()?;
        per_block(self.bs, offset, len, |b, inb, r| {
            let mut ov = self.overlay.write();
            let blk = match ov.entry(b) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(read_block(&*self.inner, size, b, self.bs)?),
            };
            let n = r.len();
            f(&mut blk[inb..inb + n], r);
            Ok(())
        })
    }
}

impl Backend for Cow {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    supports!(
        can_write,
        can_flush,
        can_fua,
        can_trim,
        can_zero,
        can_multi_conn,
        can_extents
    );
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(false)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = self.inner.size()?;
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
                let blk = read_block(&*self.inner, size, b, self.bs)?;
                let n = r.len();
                buf[r].copy_from_slice(&blk[inb..inb + n]);
                self.overlay.write().entry(b).or_insert(blk);
                Ok(())
            } else {
                self.inner
                    .pread(&mut buf[r.clone()], offset + r.start as u64)
            }
        })
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        self.modify(offset, buf.len() as u64, |dst, r| {
            dst.copy_from_slice(&buf[r])
        })
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn trim(&self, count: u32, offset: u64, _fua: bool) -> Result<()> {
        self.modify(offset, count as u64, |dst, _| dst.fill(0))
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "cow: zero is not fast"));
        }
        self.modify(offset, count as u64, |dst, _| dst.fill(0))
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        if self.inner.can_cache()? {
            self.inner.cache(count, offset)
        } else {
            Ok(())
        }
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
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
            } else if self.inner.can_extents()? {
                extents_at(&*self.inner, len as u32, pos, pos, sink)?;
            } else {
                sink.add(pos, len, 0)?;
            }
            pos = run_end;
        }
        Ok(())
    }
}

// ---- cache ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum CacheMode {
    Writeback,
    Writethrough,
    Unsafe,
}

/// `cache=writeback|writethrough|unsafe` (default writeback),
/// `cache-max-size=` (clean blocks are dropped beyond it),
/// `cache-on-read=` (default true: reads fill the cache). Blocks of 64K in
/// memory. writeback keeps writes until a flush (or FUA) writes them down;
/// writethrough writes down at once; unsafe ignores flush and FUA (writes
/// reach the layer below only when a flush... never: as nbdkit's, an
/// unsafe cache is for throwaway data).
pub struct Cache {
    inner: Arc<dyn Backend>,
    mode: CacheMode,
    max_blocks: usize,
    on_read: bool,
    /// block -> (data, dirty)
    blocks: Mutex<BlockMap>,
}

const CACHE_BS: u64 = 64 << 10;

/// block -> (data, dirty)
type BlockMap = HashMap<u64, (Box<[u8]>, bool)>;

impl Cache {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mode = match p
            .take_enum("cache", &["writeback", "writethrough", "unsafe"])?
            .as_deref()
        {
            Some("writethrough") => CacheMode::Writethrough,
            Some("unsafe") => CacheMode::Unsafe,
            _ => CacheMode::Writeback,
        };
        let max = p.take_size("cache-max-size")?;
        for k in ["cache-high-threshold", "cache-low-threshold"] {
            p.take(k);
        }
        p.take_size("cache-min-block-size")?;
        let on_read = p.take_bool("cache-on-read")?.unwrap_or(true);
        Ok(Cache {
            inner,
            mode,
            max_blocks: max.map_or(usize::MAX, |m| (m / CACHE_BS).max(1) as usize),
            on_read,
            blocks: Mutex::new(HashMap::new()),
        })
    }

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

    fn write_down(&self, b: u64, data: &[u8], size: u64, fua: bool) -> Result<()> {
        let start = b * CACHE_BS;
        let n = size.saturating_sub(start).min(CACHE_BS) as usize;
        self.inner.pwrite(&data[..n], start, fua)
    }

    fn modify(
        &self,
        offset: u64,
        len: u64,
        fua: bool,
        mut f: impl FnMut(&mut [u8], std::ops::Range<usize>),
    ) -> Result<()> {
        let size = self.inner.size()?;
        let through =
            self.mode == CacheMode::Writethrough || (fua && self.mode == CacheMode::Writeback);
        per_block(CACHE_BS, offset, len, |b, inb, r| {
            let mut m = self.blocks.lock();
            let (blk, dirty) = match m.entry(b) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert((read_block(&*self.inner, size, b, CACHE_BS)?, false)),
            };
            let n = r.len();
            f(&mut blk[inb..inb + n], r);
            if through {
                self.write_down(b, blk, size, fua)?;
                *dirty = false;
            } else {
                *dirty = true;
            }
            self.evict(&mut m);
            Ok(())
        })
    }
}

impl Backend for Cache {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    supports!(can_flush, can_fua, can_multi_conn, can_cache);
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(false)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = self.inner.size()?;
        per_block(CACHE_BS, offset, buf.len() as u64, |b, inb, r| {
            let mut m = self.blocks.lock();
            let n = r.len();
            if let Some((blk, _)) = m.get(&b) {
                buf[r].copy_from_slice(&blk[inb..inb + n]);
                return Ok(());
            }
            if !self.on_read {
                drop(m);
                return self
                    .inner
                    .pread(&mut buf[r.clone()], offset + r.start as u64);
            }
            let blk = read_block(&*self.inner, size, b, CACHE_BS)?;
            buf[r].copy_from_slice(&blk[inb..inb + n]);
            m.insert(b, (blk, false));
            self.evict(&mut m);
            Ok(())
        })
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.modify(offset, buf.len() as u64, fua, |d, r| {
            d.copy_from_slice(&buf[r])
        })
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "cache: zero is not fast"));
        }
        self.modify(offset, count as u64, flags.fua, |d, _| d.fill(0))
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        // Drop what the trim covers from the cache (writing any dirty part
        // around it first), then pass it down.
        self.flush_blocks(Some((offset, offset + count as u64)))?;
        self.inner.trim(count, offset, fua)
    }
    fn flush(&self) -> Result<()> {
        if self.mode == CacheMode::Unsafe {
            return Ok(());
        }
        self.flush_blocks(None)?;
        if self.inner.can_flush()? {
            self.inner.flush()?;
        }
        Ok(())
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        let mut tmp = vec![0u8; count as usize];
        self.pread(&mut tmp, offset)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
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
            extents_at(&*self.inner, count, offset, offset, sink)
        }
    }
}

impl Cache {
    /// Writes dirty blocks down; with a range, also drops the blocks it
    /// touches.
    fn flush_blocks(&self, range: Option<(u64, u64)>) -> Result<()> {
        let size = self.inner.size()?;
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
                    self.write_down(b, blk, size, false)?;
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

// ---- readahead ----

/// Keeps the last read-ahead window; a read that starts where the previous
/// one ended doubles the window (64K up to 4M). Writes, trims and zeroes
/// drop the window.
pub struct Readahead {
    inner: Arc<dyn Backend>,
    /// (offset, data, next window)
    buf: Mutex<(u64, Vec<u8>, u64)>,
}

impl Readahead {
    pub fn new(inner: Arc<dyn Backend>) -> Readahead {
        Readahead {
            inner,
            buf: Mutex::new((0, Vec::new(), 64 << 10)),
        }
    }
    fn invalidate(&self) {
        let mut g = self.buf.lock();
        g.1.clear();
        g.2 = 64 << 10;
    }
}

impl Backend for Readahead {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut g = self.buf.lock();
        let (start, data, window) = &mut *g;
        let end = offset + buf.len() as u64;
        if offset >= *start && end <= *start + data.len() as u64 {
            let s = (offset - *start) as usize;
            buf.copy_from_slice(&data[s..s + buf.len()]);
            return Ok(());
        }
        let sequential = offset == *start + data.len() as u64 && !data.is_empty();
        *window = if sequential {
            (*window * 2).min(4 << 20)
        } else {
            64 << 10
        };
        let size = self.inner.size()?;
        let len = (buf.len() as u64).max(*window).min(size - offset);
        data.resize(len as usize, 0);
        if let Err(e) = self.inner.pread(data, offset) {
            data.clear();
            return Err(e);
        }
        *start = offset;
        buf.copy_from_slice(&data[..buf.len()]);
        Ok(())
    }
    // The window is dropped before and after: a read racing the write
    // could refill it with the old data in between.
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.invalidate();
        let r = self.inner.pwrite(buf, offset, fua);
        self.invalidate();
        r
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.invalidate();
        let r = self.inner.trim(count, offset, fua);
        self.invalidate();
        r
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.invalidate();
        let r = self.inner.zero(count, offset, flags);
        self.invalidate();
        r
    }
}
