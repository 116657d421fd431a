//! The random and sparse-random plugins: deterministic pseudo-random disks.
//!
//! random: byte i is the low byte of the third output of xoshiro256**
//! seeded (through splitmix64) with `seed + i`, as nbdkit-random-plugin
//! computes it, so a seed gives the same disk as nbdkit's.
//!
//! sparse-random: the disk is cut into segments of `runlength * 100 /
//! percent` bytes (4 KiB blocks); each segment holds one run of data whose
//! length (around `runlength`) and place are drawn from the seed and the
//! segment number, so any byte is computed without state. Data blocks hold
//! one random non-zero byte repeated (or random bytes with
//! `random-content=true`); the rest reads as zeroes and is reported as
//! holes. The layout is ours, not nbdkit's.
//!
//! Both accept writes that match what is there, and fail others with EIO,
//! so `nbdcopy $uri $uri` checks a copy.

use nbd_core::server::backend::{Backend, Error, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use super::{parse_size, Params};

fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Xoshiro([u64; 4]);

impl Xoshiro {
    fn new(mut seed: u64) -> Xoshiro {
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = splitmix(&mut seed);
        }
        Xoshiro(s)
    }
    fn next(&mut self) -> u64 {
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
fn random_byte(seed: u64, pos: u64) -> u8 {
    let mut x = Xoshiro::new(seed.wrapping_add(pos));
    x.next();
    x.next();
    x.next() as u8
}

fn seed_param(p: &mut Params) -> std::result::Result<u64, String> {
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

fn size_param(p: &mut Params) -> std::result::Result<u64, String> {
    p.take_size("size")?
        .ok_or_else(|| p.err("the size parameter is required (eg. size=1G)"))
}

fn check_write(expected: &mut dyn FnMut(&mut [u8], u64), buf: &[u8], offset: u64) -> Result<()> {
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

pub struct Random {
    size: u64,
    seed: u64,
}

impl Random {
    pub fn open(p: &mut Params) -> std::result::Result<Random, String> {
        Ok(Random {
            size: size_param(p)?,
            seed: seed_param(p)?,
        })
    }
    fn fill(&self, buf: &mut [u8], offset: u64) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = random_byte(self.seed, offset + i as u64);
        }
    }
}

impl Backend for Random {
    fn name(&self) -> &str {
        "random"
    }
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    supports!(can_write, can_multi_conn, can_cache);
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.fill(buf, offset);
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        check_write(&mut |b, o| self.fill(b, o), buf, offset)
    }
}

const BLOCK: u64 = 4096;

pub struct SparseRandom {
    size: u64,
    seed: u64,
    /// Segment length in blocks (0: no data at all).
    segment: u64,
    /// Average run length in blocks.
    run: u64,
    random_content: bool,
}

impl SparseRandom {
    pub fn open(p: &mut Params) -> std::result::Result<SparseRandom, String> {
        let size = size_param(p)?;
        let seed = seed_param(p)?;
        let percent = p
            .take_with("percent", |v| {
                let v = v.trim_end_matches('%');
                match v.parse::<f64>() {
                    Ok(f) if (0.0..=100.0).contains(&f) => Ok(f),
                    _ => Err(format!("percent must be between 0 and 100: {v}")),
                }
            })?
            .unwrap_or(10.0);
        let runlength = p.take_with("runlength", parse_size)?.unwrap_or(16 << 20);
        if runlength == 0 {
            return Err(p.err("runlength must be > 0"));
        }
        let random_content = p.take_bool("random-content")?.unwrap_or(false);
        let run = runlength.div_ceil(BLOCK).max(1);
        let segment = if percent <= 0.0 {
            0
        } else {
            ((run as f64) * 100.0 / percent).round().max(run as f64) as u64
        };
        Ok(SparseRandom {
            size,
            seed,
            segment,
            run,
            random_content,
        })
    }

    /// The data run of segment `s`, as a block range relative to the
    /// segment's start.
    fn run_of(&self, s: u64) -> (u64, u64) {
        if self.segment == self.run {
            return (0, self.segment);
        }
        let mut x = Xoshiro::new(self.seed ^ s.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Length uniformly in [run/2, 3*run/2], within the segment.
        let half = self.run / 2;
        let len = (half + x.next() % (self.run + 1)).clamp(1, self.segment);
        let start = x.next() % (self.segment - len + 1);
        (start, start + len)
    }

    fn is_data(&self, block: u64) -> bool {
        if self.segment == 0 {
            return false;
        }
        let (a, b) = self.run_of(block / self.segment);
        let r = block % self.segment;
        r >= a && r < b
    }

    fn fill(&self, buf: &mut [u8], offset: u64) {
        let mut i = 0usize;
        while i < buf.len() {
            let pos = offset + i as u64;
            let block = pos / BLOCK;
            let n = ((block + 1) * BLOCK - pos).min((buf.len() - i) as u64) as usize;
            let out = &mut buf[i..i + n];
            if !self.is_data(block) {
                out.fill(0);
            } else if self.random_content {
                for (j, b) in out.iter_mut().enumerate() {
                    *b = random_byte(self.seed, pos + j as u64);
                }
            } else {
                let mut x = Xoshiro::new(self.seed.wrapping_add(block).rotate_left(17));
                let v = (x.next() % 255) as u8 + 1;
                out.fill(v);
            }
            i += n;
        }
    }
}

impl Backend for SparseRandom {
    fn name(&self) -> &str {
        "sparse-random"
    }
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    supports!(can_write, can_multi_conn, can_extents, can_cache);
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.fill(buf, offset);
        Ok(())
    }
    // nbdkit's sparse-random offers flush, FUA, trim and zero too, and
    // copying tools choose their paths by them (nbdcopy falls back to
    // writing zeroes itself when a target cannot zero): offer the same.
    // Nothing is cached, so flush and FUA have nothing to do; trim leaves
    // the contents undefined, so it may leave them as they are.
    supports!(can_flush, can_fua, can_trim, can_zero);
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn trim(&self, _count: u32, _offset: u64, _fua: bool) -> Result<()> {
        Ok(())
    }
    /// Zeroing is a write of zeroes: verified like any write, so it
    /// succeeds only where the disk reads as zeroes.
    fn zero(&self, count: u32, offset: u64, _flags: ZeroFlags) -> Result<()> {
        const ZEROES: [u8; 4096] = [0; 4096];
        let mut done = 0u64;
        while done < u64::from(count) {
            let n = (u64::from(count) - done).min(ZEROES.len() as u64) as usize;
            check_write(&mut |b, o| self.fill(b, o), &ZEROES[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        check_write(&mut |b, o| self.fill(b, o), buf, offset)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        const HZ: u32 = allocation::HOLE | allocation::ZERO;
        if self.segment == 0 {
            return sink.add(offset, count as u64, HZ).map(|_| ());
        }
        let end = offset + count as u64;
        let seg_bytes = self.segment * BLOCK;
        let mut s = offset / seg_bytes;
        while s * seg_bytes < end {
            let base = s * seg_bytes;
            let (a, b) = self.run_of(s);
            for (st, en, fl) in [(0, a, HZ), (a, b, 0), (b, self.segment, HZ)] {
                if en > st && !sink.add(base + st * BLOCK, (en - st) * BLOCK, fl)? {
                    return Ok(());
                }
            }
            s += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(args: &[&str]) -> SparseRandom {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut p = Params::parse("sparse-random", "size", &a).unwrap();
        SparseRandom::open(&mut p).unwrap()
    }

    #[test]
    fn sparse_random_shape() {
        let s = sr(&["64M", "seed=7", "percent=25", "runlength=256K"]);
        let blocks = (64 << 20) / BLOCK;
        let data = (0..blocks).filter(|&b| s.is_data(b)).count() as f64;
        let pct = data * 100.0 / blocks as f64;
        assert!((15.0..35.0).contains(&pct), "{pct}");
        assert_eq!(sr(&["1M", "percent=0"]).segment, 0);
        let full = sr(&["1M", "percent=100"]);
        assert!((0..256).all(|b| full.is_data(b)));
    }
}
