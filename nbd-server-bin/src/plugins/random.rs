//! The random plugin (nbdkit-random-plugin(1)): byte i is the low byte
//! of the third output of xoshiro256** seeded (through splitmix64) with
//! `seed + i`, as nbdkit computes it, so a seed gives the same disk as
//! nbdkit's. Writes that match what is there are accepted, others fail
//! with EIO, so `nbdcopy $uri $uri` checks a copy.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Result};

use crate::chain::Plugin;
use crate::params::{size_param, Params};

use super::prng::{check_write, random_byte, seed_param};
use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "random",
    magic: Some("size"),
    params: &[
        ("size", "the size of the random disk"),
        ("seed", "the seed of the random data"),
    ],
    open: |p, _| Ok(Arc::new(Random::open(p)?)),
};

pub struct Random {
    size: u64,
    seed: u64,
}

impl Random {
    pub fn open(p: &mut Params) -> std::result::Result<Random, String> {
        Ok(Random {
            size: size_param(p, true)?,
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

/// The same disk for every connection.
impl Plugin for Random {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}
