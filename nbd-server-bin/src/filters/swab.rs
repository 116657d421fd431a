//! The swab filter (nbdkit-swab-filter(1)): swaps the bytes of each
//! 2-, 4- or 8-byte word (`swab-bits=16`, the default, `32` or `64`;
//! `8` swaps nothing) between the client and the layer below, as for
//! disks of machines whose controller is wired the other way round.
//!
//! Words are never split: the size is rounded down to a whole word, the
//! minimum block size is raised to one, and a request whose offset or
//! length is not a multiple of the word fails with EINVAL. Block status
//! is reported in whole words too: a word that straddles extents of
//! different types is data unless every part of it is a hole (or zero).

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::extents::extents_full;
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "swab",
    params: &[(
        "swab-bits",
        "the size of the words whose bytes are swapped: 8, 16 (default), 32 or 64",
    )],
    open: |p, _| {
        let bits = p
            .take_with("swab-bits", |v| {
                v.trim()
                    .parse::<i32>()
                    .map_err(|_| format!("could not parse number: {v}"))
            })?
            .unwrap_or(16);
        if ![8, 16, 32, 64].contains(&bits) {
            return Err(p.err("invalid swab-bits, must be 8, 16, 32 or 64"));
        }
        Ok(Arc::new(Swab {
            word: (bits / 8) as u64,
        }))
    },
};

/// Swaps the bytes of each `word`-byte word.
struct Swab {
    word: u64,
}

impl Swab {
    fn check(&self, count: u64, offset: u64) -> Result<()> {
        if !count.is_multiple_of(self.word) || !offset.is_multiple_of(self.word) {
            return Err(Error::new(
                libc::EINVAL,
                "swab: requests to this filter must be aligned",
            ));
        }
        Ok(())
    }

    /// Reverses each word of `buf` in place.
    fn swap(&self, buf: &mut [u8]) {
        if self.word > 1 {
            for w in buf.chunks_exact_mut(self.word as usize) {
                w.reverse();
            }
        }
    }
}

impl Filter for Swab {
    /// Only reshapes requests and answers: never blocks by itself.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Swab {
    fn size(&self, next: &dyn Backend) -> Result<u64> {
        Ok(next.size()? / self.word * self.word)
    }

    fn block_size(&self, next: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        let w = self.word as u32;
        Ok(Some(match next.block_size()? {
            None | Some((0, _, _)) => (w, 512, u32::MAX),
            Some((min, pref, max)) => (min.max(w), pref, max),
        }))
    }

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        self.check(r.count() as u64, r.offset)?;
        let offset = r.offset;
        if self.word == 1 {
            return next.read(r);
        }
        let buf = r.buf();
        next.pread(buf, offset)?;
        self.swap(buf);
        Ok(())
    }

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.check(buf.len() as u64, offset)?;
        if self.word == 1 {
            return next.pwrite(buf, offset, fua);
        }
        let mut swapped = buf.to_vec();
        self.swap(&mut swapped);
        next.pwrite(&swapped, offset, fua)
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.check(count as u64, offset)?;
        next.trim(count, offset, fua)
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.check(count as u64, offset)?;
        next.zero(count, offset, flags)
    }

    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        self.check(count as u64, offset)?;
        next.cache(count, offset)
    }

    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        self.check(count as u64, offset)?;
        if self.word == 1 {
            return next.extents(count, offset, sink);
        }
        let list = extents_full(next, count, offset)?;
        add_aligned(&list, self.word, sink)
    }
}

/// Adds `list` (contiguous extents as (offset, length, flags), starting
/// and ending on multiples of `align`) to `sink` with every boundary
/// moved to a multiple of `align`: a block cut by a boundary gets the
/// flags all of its parts share.
fn add_aligned(list: &[(u64, u64, u32)], align: u64, sink: &mut Extents) -> Result<()> {
    let Some(&(mut pos, _, _)) = list.first() else {
        return Ok(());
    };
    let mut i = 0;
    while i < list.len() {
        let (start, len, flags) = list[i];
        let end = start + len;
        let whole = end / align * align;
        if whole > pos {
            if !sink.add(pos, whole - pos, flags)? {
                return Ok(());
            }
            pos = whole;
        }
        if pos >= end {
            i += 1;
            continue;
        }
        // The block [pos, pos+align) ends inside a later extent (or is
        // the tail of the list).
        let block_end = pos + align;
        let mut shared = flags;
        i += 1;
        while i < list.len() && list[i].0 < block_end {
            shared &= list[i].2;
            if list[i].0 + list[i].1 > block_end {
                break;
            }
            i += 1;
        }
        if !sink.add(pos, align, shared)? {
            return Ok(());
        }
        pos = block_end;
        // The extent that continues past the block is resumed from there.
        if i < list.len() && list[i].0 + list[i].1 <= pos {
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{info, params};
    use crate::chain::{Chain, Opened};
    use crate::plugins::memory::Memory;
    use nbd_core::wire::consts::allocation;

    fn open(mem: &Arc<Memory>, args: &[(&str, &str)]) -> std::result::Result<Opened, String> {
        let mut p = params(FILTER.name, args);
        let f = (FILTER.open)(&mut p, false)?;
        p.finish()?;
        Ok(Arc::new(Chain::new(Arc::clone(mem) as _, vec![f]))
            .open(info())
            .unwrap())
    }

    #[test]
    fn swaps_words_both_ways() {
        let mem = Arc::new(Memory::new(1003));
        let data: Vec<u8> = (0..16).collect();
        mem.pwrite(&data, 0, false).unwrap();
        for (bits, want) in [
            ("8", vec![0u8, 1, 2, 3, 4, 5, 6, 7]),
            ("16", vec![1, 0, 3, 2, 5, 4, 7, 6]),
            ("32", vec![3, 2, 1, 0, 7, 6, 5, 4]),
            ("64", vec![7, 6, 5, 4, 3, 2, 1, 0]),
        ] {
            let c = open(&mem, &[("swab-bits", bits)]).unwrap();
            let w: u64 = bits.parse::<u64>().unwrap() / 8;
            assert_eq!(c.size().unwrap(), 1003 / w * w);
            assert_eq!(c.block_size().unwrap(), Some((w as u32, 512, u32::MAX)));
            let mut b = [0u8; 8];
            c.pread(&mut b, 0).unwrap();
            assert_eq!(b.to_vec(), want, "swab-bits={bits}");
            // Writing what was read puts the original bytes back.
            c.pwrite(&b, 8, false).unwrap();
            let mut raw = [0u8; 8];
            mem.pread(&mut raw, 8).unwrap();
            assert_eq!(raw, [0, 1, 2, 3, 4, 5, 6, 7]);
            mem.pwrite(&data, 0, false).unwrap();
        }
    }

    #[test]
    fn unaligned_requests_fail_with_einval() {
        let mem = Arc::new(Memory::new(4096));
        let c = open(&mem, &[("swab-bits", "32")]).unwrap();
        let mut b = [0u8; 4];
        assert_eq!(c.pread(&mut b, 2).unwrap_err().errno, libc::EINVAL);
        assert_eq!(c.pread(&mut b[..2], 0).unwrap_err().errno, libc::EINVAL);
        assert_eq!(c.pwrite(&b, 1, false).unwrap_err().errno, libc::EINVAL);
        let z = ZeroFlags::default();
        assert_eq!(c.zero(3, 0, z).unwrap_err().errno, libc::EINVAL);
        assert_eq!(c.trim(4, 6, false).unwrap_err().errno, libc::EINVAL);
        c.zero(8, 4, z).unwrap();
    }

    #[test]
    fn bad_bits() {
        let mem = Arc::new(Memory::new(4096));
        for v in ["12", "x", "0"] {
            let e = open(&mem, &[("swab-bits", v)]).err().unwrap();
            assert!(e.starts_with("swab: "), "{e}");
        }
    }

    #[test]
    fn blocks_straddling_extents_take_shared_flags() {
        let hz = allocation::HOLE | allocation::ZERO;
        let list = [
            (0, 6, 0),
            (6, 5, hz),
            (11, 3, allocation::HOLE),
            (14, 18, hz),
        ];
        let mut e = Extents::new();
        e.reset(0, 32, false);
        add_aligned(&list, 8, &mut e).unwrap();
        // [0,8) data (has data in it); [8,16) hole only (shared by hz and
        // hole); [16,32) hole and zero.
        assert_eq!(e.as_slice(), &[(8, 0), (8, allocation::HOLE), (16, hz)]);
    }
}
