//! Blocks of the layer below kept in memory, for the filters that keep
//! them (cow, cache): reading a whole block, cutting a request into
//! blocks, and checking a block size parameter.

use nbd_core::server::backend::{Backend, Result};

use crate::params::Params;

/// Reads block `b` (of `bs` bytes) of `inner`, whose size is `size`,
/// zero-padded past its end.
pub fn read_block(inner: &dyn Backend, size: u64, b: u64, bs: u64) -> Result<Box<[u8]>> {
    let mut v = vec![0u8; bs as usize].into_boxed_slice();
    let start = b * bs;
    let n = size.saturating_sub(start).min(bs) as usize;
    if n > 0 {
        inner.pread(&mut v[..n], start)?;
    }
    Ok(v)
}

/// Calls `f(block, offset in block, range in request)` per block of `bs`
/// bytes that `len` bytes at `offset` touch.
pub fn per_block(
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

/// Checks the block size `bs` given as `key`: a power of 2 from 4K to 32M.
pub fn check_block_size(p: &Params, key: &str, bs: u64) -> std::result::Result<u64, String> {
    if !(4096..=(32 << 20)).contains(&bs) || !bs.is_power_of_two() {
        return Err(p.err(format!(
            "{key} must be a power of 2 between 4K and 32M: {bs}"
        )));
    }
    Ok(bs)
}
