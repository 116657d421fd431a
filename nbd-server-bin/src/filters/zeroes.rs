//! Zeroes written as data, for layers that turn a zero request into
//! writes (nozero's `zeromode=emulate`, blocksize's unaligned zeroes, and
//! the tmpdisk, ondemand and partitioning plugins, as nbdkit emulates zero
//! for plugins without it).

use nbd_core::server::backend::{Backend, Result};

/// A buffer of zeroes to write from.
pub static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes `count` zero bytes at `offset` with pwrite; with `fua`, the
/// last write carries it.
pub fn write_zeroes(b: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
    let mut done = 0u64;
    while done < count as u64 {
        let n = (count as u64 - done).min(ZEROES.len() as u64) as usize;
        let last = done + n as u64 == count as u64;
        b.pwrite(&ZEROES[..n], offset + done, fua && last)?;
        done += n as u64;
    }
    Ok(())
}
