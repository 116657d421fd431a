//! The sparse-random plugin (nbdkit-sparse-random-plugin(1)).
//!
//! The disk is cut into segments of `runlength * 100 / percent` bytes
//! (4 KiB blocks); each segment holds one run of data whose length
//! (around `runlength`) and place are drawn from the seed and the
//! segment number, so any byte is computed without state. Data blocks hold
//! one random non-zero byte repeated (or random bytes with
//! `random-content=true`); the rest reads as zeroes and is reported as
//! holes. The layout is ours, not nbdkit's. Writes that match what is
//! there are accepted, others fail with EIO.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::chain::Plugin;
use crate::params::{parse_size, size_param, Params};

use super::prng::{check_write, random_byte, seed_param, Xoshiro};
use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "sparse-random",
    magic: Some("size"),
    params: &[
        ("size", "the size of the disk"),
        ("seed", "the seed of the random data"),
        ("percent", "the share of the disk that holds data"),
        ("runlength", "the mean length of a run of data"),
        (
            "random-content",
            "fill the data with random bytes instead of 1s",
        ),
    ],
    open: |p, _| Ok(Arc::new(SparseRandom::open(p)?)),
};

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
        let size = size_param(p, true)?;
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

/// The same disk for every connection.
impl Plugin for SparseRandom {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
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
