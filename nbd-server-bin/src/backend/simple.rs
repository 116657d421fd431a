//! The null, zero, full and pattern plugins: disks computed, not stored.

use nbd_core::server::backend::{Backend, Error, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use super::Params;

const ENOSPC: i32 = libc::ENOSPC;
const HOLE_ZERO: u32 = allocation::HOLE | allocation::ZERO;

fn size_param(p: &mut Params, required: bool) -> std::result::Result<u64, String> {
    match p.take_size("size")? {
        Some(s) => Ok(s),
        None if !required => Ok(0),
        None => Err(p.err("the size parameter is required (eg. size=1G)")),
    }
}

/// `null [size=]SIZE`: writes are discarded, reads return zeroes.
/// `zero` is the same with size 0.
pub struct Null {
    size: u64,
}

impl Null {
    pub fn new(size: u64) -> Null {
        Null { size }
    }
    pub fn open(p: &mut Params) -> std::result::Result<Null, String> {
        Ok(Null::new(size_param(p, false)?))
    }
}

impl Backend for Null {
    fn name(&self) -> &str {
        "null"
    }
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    supports!(
        can_write,
        can_flush,
        can_fua,
        can_trim,
        can_zero,
        can_fast_zero,
        can_multi_conn,
        can_extents,
        can_cache
    );
    fn pread(&self, buf: &mut [u8], _offset: u64) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn pwrite(&self, _buf: &[u8], _offset: u64, _fua: bool) -> Result<()> {
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn trim(&self, _count: u32, _offset: u64, _fua: bool) -> Result<()> {
        Ok(())
    }
    fn zero(&self, _count: u32, _offset: u64, _flags: ZeroFlags) -> Result<()> {
        Ok(())
    }
    fn cache(&self, _count: u32, _offset: u64) -> Result<()> {
        Ok(())
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        sink.add(offset, count as u64, HOLE_ZERO).map(|_| ())
    }
}

/// `full [size=]SIZE`: reads return zeroes, every write fails ENOSPC.
pub struct Full {
    size: u64,
}

impl Full {
    pub fn open(p: &mut Params) -> std::result::Result<Full, String> {
        Ok(Full {
            size: size_param(p, true)?,
        })
    }
}

fn enospc() -> Error {
    Error::new(ENOSPC, "No space left on device")
}

impl Backend for Full {
    fn name(&self) -> &str {
        "full"
    }
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    supports!(
        can_write,
        can_flush,
        can_trim,
        can_zero,
        can_multi_conn,
        can_extents,
        can_cache
    );
    fn pread(&self, buf: &mut [u8], _offset: u64) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn pwrite(&self, _buf: &[u8], _offset: u64, _fua: bool) -> Result<()> {
        Err(enospc())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn trim(&self, _count: u32, _offset: u64, _fua: bool) -> Result<()> {
        Err(enospc())
    }
    fn zero(&self, _count: u32, _offset: u64, _flags: ZeroFlags) -> Result<()> {
        Err(enospc())
    }
    fn cache(&self, _count: u32, _offset: u64) -> Result<()> {
        Ok(())
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        sink.add(offset, count as u64, HOLE_ZERO).map(|_| ())
    }
}

/// `pattern [size=]SIZE`: every 8-byte-aligned offset holds itself as a
/// big-endian u64; read-only.
pub struct Pattern {
    size: u64,
}

impl Pattern {
    pub fn open(p: &mut Params) -> std::result::Result<Pattern, String> {
        Ok(Pattern {
            size: size_param(p, true)?,
        })
    }
}

/// Fills `buf` with the pattern as seen from `offset`.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    let mut i = 0usize;
    while i < buf.len() {
        let pos = offset + i as u64;
        let word = pos & !7;
        let in_word = (pos - word) as usize;
        let bytes = word.to_be_bytes();
        let n = (8 - in_word).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&bytes[in_word..in_word + n]);
        i += n;
    }
}

impl Backend for Pattern {
    fn name(&self) -> &str {
        "pattern"
    }
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    supports!(can_multi_conn, can_cache);
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        fill_pattern(buf, offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_bytes() {
        let mut b = [0u8; 13];
        fill_pattern(&mut b, 5);
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]);
        let mut b = [0u8; 4];
        fill_pattern(&mut b, 0x1_0000_0006);
        assert_eq!(b, [0, 0, 0, 0]);
        fill_pattern(&mut b, 0x1_0000_0004 + 0x100);
        assert_eq!(b, [0x00, 0x00, 0x01, 0x00]);
    }
}
