//! The blocksize filter (nbdkit-blocksize-filter(1)): lets a client send
//! requests of any alignment and size to a layer that needs them aligned
//! and bounded. The layer below sees only requests aligned to `minblock`
//! (unaligned reads and writes become read-modify-write of whole blocks)
//! and no longer than `maxdata` (reads, writes) or `maxlen` (trim, zero,
//! cache); the size is rounded down to `minblock`.

use std::borrow::Cow;
use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::zeroes::ZEROES;
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "blocksize",
    params: &[
        (
            "minblock",
            "the alignment the layer below needs, a power of 2 (default 1)",
        ),
        (
            "maxdata",
            "the largest read or write passed down (default 64M)",
        ),
        (
            "maxlen",
            "the largest trim, zero or cache passed down (default 4G - minblock)",
        ),
    ],
    open: |p, _| Ok(Arc::new(BlockSize::open(p)?)),
};

/// `minblock=` (power of 2, default 1), `maxdata=` (default 64M),
/// `maxlen=` (default 4G - minblock).
pub struct BlockSize {
    min: u64,
    maxdata: u64,
    maxlen: u64,
    rmw: Mutex<()>,
}

impl BlockSize {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let min = p.take_size("minblock")?.unwrap_or(1);
        if min == 0 || !min.is_power_of_two() || min > 64 << 20 {
            return Err(p.err(format!("minblock must be a power of 2 up to 64M: {min}")));
        }
        let maxdata = p.take_size("maxdata")?.unwrap_or(64 << 20);
        if maxdata < min || maxdata % min != 0 || maxdata > 1 << 31 {
            return Err(p.err(format!(
                "maxdata must be a multiple of minblock up to 2G: {maxdata}"
            )));
        }
        let maxlen = p
            .take_size("maxlen")?
            .unwrap_or(((1u64 << 32) - 1) / min * min);
        if maxlen < min || maxlen % min != 0 {
            return Err(p.err(format!("maxlen must be a multiple of minblock: {maxlen}")));
        }
        Ok(BlockSize {
            min,
            maxdata,
            maxlen,
            rmw: Mutex::new(()),
        })
    }

    fn aligned(&self, offset: u64, len: u64) -> bool {
        (offset | len) & (self.min - 1) == 0
    }

    /// Runs `f(offset, len)` over `[offset, offset+len)` (aligned) in
    /// pieces of at most `max`.
    fn chunks(
        &self,
        offset: u64,
        len: u64,
        max: u64,
        mut f: impl FnMut(u64, u64, bool) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(max);
            f(offset + done, n, done + n == len)?;
            done += n;
        }
        Ok(())
    }

    /// Splits `[offset, offset+len)` into (block start, range in block) for
    /// unaligned head and tail and one aligned middle.
    fn pieces(&self, offset: u64, len: u64) -> Vec<(u64, u64, bool)> {
        // (offset, len, is_partial)
        let mut v = Vec::new();
        let end = offset + len;
        let mut pos = offset;
        if pos & (self.min - 1) != 0 {
            let bend = (pos / self.min + 1) * self.min;
            let e = bend.min(end);
            v.push((pos, e - pos, true));
            pos = e;
        }
        let mid_end = end / self.min * self.min;
        if mid_end > pos {
            v.push((pos, mid_end - pos, false));
            pos = mid_end;
        }
        if pos < end {
            v.push((pos, end - pos, true));
        }
        v
    }
}

impl Filter for BlockSize {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for BlockSize {
    fn size(&self, next: &dyn Backend) -> Result<u64> {
        Ok(next.size()? / self.min * self.min)
    }
    fn block_size(&self, _next: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        // We accept anything: what we advertise is only a preference.
        Ok(Some((
            1,
            self.min.max(4096) as u32,
            self.maxdata.min(1 << 25).max(self.min) as u32,
        )))
    }
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let count = r.count() as u64;
        if self.aligned(offset, count) && count <= self.maxdata {
            // Already what the layer below takes: pass it on (lent, if
            // the layers below can).
            return next.read(r);
        }
        let buf = r.buf();
        let mut block = vec![
            0u8;
            if self.aligned(offset, buf.len() as u64) {
                0
            } else {
                self.min as usize
            }
        ];
        for (o, n, partial) in self.pieces(offset, buf.len() as u64) {
            let r = (o - offset) as usize..(o - offset + n) as usize;
            if partial {
                let bstart = o / self.min * self.min;
                next.pread(&mut block, bstart)?;
                let s = (o - bstart) as usize;
                buf[r].copy_from_slice(&block[s..s + n as usize]);
            } else {
                let dst = &mut buf[r];
                self.chunks(o, n, self.maxdata, |co, cn, _| {
                    let s = (co - o) as usize;
                    next.pread(&mut dst[s..s + cn as usize], co)
                })?;
            }
        }
        Ok(())
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let pieces = self.pieces(offset, buf.len() as u64);
        let last = pieces.len().saturating_sub(1);
        for (i, (o, n, partial)) in pieces.into_iter().enumerate() {
            let f = fua && i == last;
            let src = &buf[(o - offset) as usize..(o - offset + n) as usize];
            if partial {
                let _g = self.rmw.lock();
                let bstart = o / self.min * self.min;
                let mut block = vec![0u8; self.min as usize];
                next.pread(&mut block, bstart)?;
                let s = (o - bstart) as usize;
                block[s..s + n as usize].copy_from_slice(src);
                next.pwrite(&block, bstart, f)?;
            } else {
                self.chunks(o, n, self.maxdata, |co, cn, l| {
                    let s = (co - o) as usize;
                    next.pwrite(&src[s..s + cn as usize], co, f && l)
                })?;
            }
        }
        Ok(())
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        // Trim is advisory: only the aligned middle is passed down.
        for (o, n, partial) in self.pieces(offset, count as u64) {
            if !partial {
                self.chunks(o, n, self.maxlen, |co, cn, l| {
                    next.trim(cn as u32, co, fua && l)
                })?;
            }
        }
        if fua {
            next.flush()?;
        }
        Ok(())
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        for (o, n, partial) in self.pieces(offset, count as u64) {
            if partial {
                if flags.fast {
                    return Err(Error::new(libc::ENOTSUP, "unaligned fast zero"));
                }
                // A partial block is shorter than minblock, which may be
                // larger than our buffer of zeroes.
                let zeroes: Cow<[u8]> = match ZEROES.get(..n as usize) {
                    Some(z) => Cow::Borrowed(z),
                    None => Cow::Owned(vec![0; n as usize]),
                };
                self.pwrite(next, &zeroes, o, flags.fua)?;
            } else {
                self.chunks(o, n, self.maxlen, |co, cn, _| {
                    next.zero(cn as u32, co, flags)
                })?;
            }
        }
        Ok(())
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        let start = offset / self.min * self.min;
        let end = (offset + count as u64).div_ceil(self.min) * self.min;
        self.chunks(start, end - start, self.maxlen, |co, cn, _| {
            next.cache(cn as u32, co)
        })
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        let start = offset / self.min * self.min;
        let end = (offset + count as u64).div_ceil(self.min) * self.min;
        let len = (end - start)
            .min(self.maxlen)
            .min(u32::MAX as u64 / self.min * self.min);
        next.extents(len as u32, start, sink)
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::chain::testing::{filter_over, info, params};
    use crate::chain::Plugin;
    use crate::plugins::memory::Memory;

    /// A memory disk that fails any request not aligned to 512 or longer
    /// than 4096 bytes (for data) or 8192 (for zero), and records them.
    struct Strict {
        mem: Memory,
        seen: Mutex<Vec<(char, u64, u64)>>,
    }
    impl Strict {
        fn check(&self, c: char, len: u64, offset: u64, max: u64) -> Result<()> {
            self.seen.lock().push((c, offset, len));
            if !(offset | len).is_multiple_of(512) || len > max {
                return Err(Error::new(libc::EINVAL, "unaligned"));
            }
            Ok(())
        }
    }
    impl Backend for Strict {
        fn size(&self) -> Result<u64> {
            Ok(self.mem.size()? + 100)
        }
        fn can_write(&self) -> Result<bool> {
            Ok(true)
        }
        fn can_flush(&self) -> Result<bool> {
            Ok(true)
        }
        fn can_zero(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.check('r', buf.len() as u64, offset, 4096)?;
            self.mem.pread(buf, offset)
        }
        fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
            self.check('w', buf.len() as u64, offset, 4096)?;
            self.mem.pwrite(buf, offset, fua)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
            self.check('t', count as u64, offset, 8192)?;
            self.mem.trim(count, offset, fua)
        }
        fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
            self.check('z', count as u64, offset, 8192)?;
            self.mem.zero(count, offset, flags)
        }
    }
    impl Plugin for Strict {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    #[test]
    fn requests_are_aligned_and_split() {
        let plugin = Arc::new(Strict {
            mem: Memory::new(64 << 10),
            seen: Mutex::new(Vec::new()),
        });
        let args = [("minblock", "512"), ("maxdata", "4k"), ("maxlen", "8k")];
        let chain = filter_over(&FILTER, &args, plugin.clone());
        let c = chain.open(info()).unwrap();
        assert_eq!(c.size().unwrap(), 64 << 10);
        assert_eq!(c.block_size().unwrap(), Some((1, 4096, 4096)));

        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        c.pwrite(&data, 3, true).unwrap();
        let mut buf = vec![0u8; 10_000];
        c.pread(&mut buf, 3).unwrap();
        assert_eq!(buf, data);
        let mut head = [0xffu8; 3];
        c.pread(&mut head, 0).unwrap();
        assert_eq!(head, [0; 3]);

        c.zero(20_000, 1, ZeroFlags::default()).unwrap();
        let mut buf = vec![1u8; 20_002];
        c.pread(&mut buf, 0).unwrap();
        assert_eq!(buf[0], 0);
        assert!(buf[1..20_001].iter().all(|&b| b == 0));
        let fast = ZeroFlags {
            fast: true,
            ..Default::default()
        };
        assert_eq!(c.zero(10, 1, fast).unwrap_err().errno, libc::ENOTSUP);

        c.trim(20_000, 1, false).unwrap();
        // Everything that reached the plugin was aligned and small enough.
        for &(op, offset, len) in plugin.seen.lock().iter() {
            let max = if op == 'r' || op == 'w' { 4096 } else { 8192 };
            assert!(
                (offset | len).is_multiple_of(512) && len <= max,
                "{op} {offset} {len}"
            );
        }
    }

    #[test]
    fn bad_parameters() {
        for args in [
            &[("minblock", "3")][..],
            &[("minblock", "512"), ("maxdata", "1000")],
            &[("minblock", "512"), ("maxlen", "256")],
        ] {
            assert!((FILTER.open)(&mut params(FILTER.name, args), false).is_err());
        }
    }
}
