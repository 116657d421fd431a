//! The pseudo-random numbers of the random and sparse-random plugins:
//! xoshiro256** seeded through splitmix64, as nbdkit-random-plugin
//! computes them, and what both plugins share about seeds and writes.

use nbd_core::server::backend::{Error, Result};

use crate::params::Params;

pub fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub struct Xoshiro([u64; 4]);

impl Xoshiro {
    pub fn new(mut seed: u64) -> Xoshiro {
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = splitmix(&mut seed);
        }
        Xoshiro(s)
    }
    pub fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
}

/// The random plugin's byte at `pos`.
pub fn random_byte(seed: u64, pos: u64) -> u8 {
    let mut x = Xoshiro::new(seed.wrapping_add(pos));
    x.next();
    x.next();
    x.next() as u8
}

pub fn seed_param(p: &mut Params) -> std::result::Result<u64, String> {
    Ok(
        match p.take_with("seed", |v| {
            v.parse::<u32>()
                .map_err(|_| format!("could not parse number: {v}"))
        })? {
            Some(s) => s as u64,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32 as u64)
                .unwrap_or(0),
        },
    )
}

/// Accepts a write only if it writes what is already there (so that
/// `nbdcopy $uri $uri` checks a copy); `expected` fills a buffer with the
/// disk's bytes at an offset.
pub fn check_write(
    expected: &mut dyn FnMut(&mut [u8], u64),
    buf: &[u8],
    offset: u64,
) -> Result<()> {
    let mut tmp = [0u8; 4096];
    let mut done = 0;
    while done < buf.len() {
        let n = (buf.len() - done).min(tmp.len());
        expected(&mut tmp[..n], offset + done as u64);
        if tmp[..n] != buf[done..done + n] {
            return Err(Error::new(
                libc::EIO,
                "data written does not match expected data",
            ));
        }
        done += n;
    }
    Ok(())
}
