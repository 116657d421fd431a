//! The full plugin: reads return zeroes, every write fails with ENOSPC
//! (nbdkit-full-plugin(1)).

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::chain::Plugin;
use crate::params::{size_param, Params};

use super::PluginSpec;

const ENOSPC: i32 = libc::ENOSPC;
const HOLE_ZERO: u32 = allocation::HOLE | allocation::ZERO;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "full",
    magic: Some("size"),
    params: &[("size", "the size of the disk whose writes fail with ENOSPC")],
    open: |p, _| Ok(Arc::new(Full::open(p)?)),
};

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

/// The same disk for every connection.
impl Plugin for Full {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}
