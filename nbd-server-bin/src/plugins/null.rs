//! The null plugin: writes are discarded, reads return zeroes
//! (nbdkit-null-plugin(1)).

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::chain::Plugin;
use crate::params::{size_param, Params};

use super::PluginSpec;

const HOLE_ZERO: u32 = allocation::HOLE | allocation::ZERO;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "null",
    magic: Some("size"),
    params: &[(
        "size",
        "the size of the disk that reads as zeroes and discards writes",
    )],
    open: |p, _| Ok(Arc::new(Null::open(p)?)),
};

/// `null [size=]SIZE`: writes are discarded, reads return zeroes.
/// The zero plugin is the same with size 0.
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

/// The same disk for every connection.
impl Plugin for Null {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}
