//! Scaffolding shared by the unit tests of the chain, the plugins and the
//! filters: a connection's facts, a filter built from its declaration
//! over a plugin, and test plugins more than one filter's tests use.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Peer, Result};

use crate::chain::{Chain, Filter, Plugin};
use crate::filters::FilterSpec;
use crate::params::Params;
use crate::plugins::memory::Memory;

/// Connection 1, on the default export (""), without TLS.
pub fn info() -> ConnectionInfo {
    info_for(1, "", false)
}

/// Connection `id`, on the default export (""), without TLS.
pub fn info_id(id: u64) -> ConnectionInfo {
    info_for(id, "", false)
}

/// Connection `id` asking for `export`, with or without TLS; writable,
/// from a peer that is neither TCP nor Unix.
pub fn info_for(id: u64, export: &str, tls: bool) -> ConnectionInfo {
    ConnectionInfo {
        id,
        peer: Peer::Other,
        export_name: export.as_bytes().to_vec(),
        readonly: false,
        tls,
    }
}

/// The `key=value` parameters `args`, for the layer `name`.
pub fn params(name: &str, args: &[(&str, &str)]) -> Params {
    let pairs = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Params::new(name, pairs)
}

/// The filter `spec` with the parameters `args`, every one of them taken.
pub fn filter(spec: &FilterSpec, args: &[(&str, &str)]) -> Arc<dyn Filter> {
    let mut p = params(spec.name, args);
    let f = (spec.open)(&mut p, false).unwrap();
    p.finish().unwrap();
    f
}

/// The filter `spec` with the parameters `args`, over `plugin`.
pub fn filter_over(
    spec: &FilterSpec,
    args: &[(&str, &str)],
    plugin: Arc<dyn Plugin>,
) -> Arc<Chain> {
    Arc::new(Chain::new(plugin, vec![filter(spec, args)]))
}

/// The filter `spec` with the parameters `args`, over a 1 MiB memory disk.
pub fn filter_over_memory(spec: &FilterSpec, args: &[(&str, &str)]) -> Arc<Chain> {
    filter_over(spec, args, Arc::new(Memory::new(1 << 20)))
}

/// A writable 1 MiB disk of sevens that fails the first `fail` opens,
/// reads and writes; counts opens and reopens.
#[derive(Default)]
pub struct Flaky {
    pub fail: AtomicU32,
    pub opens: AtomicU32,
    pub reopens: AtomicU32,
}

impl Flaky {
    fn attempt(&self) -> Result<()> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(Error::new(libc::EIO, "flaky"));
        }
        Ok(())
    }
}

impl Backend for Flaky {
    fn size(&self) -> Result<u64> {
        Ok(1 << 20)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(true)
    }
    fn reopen(&self) -> Result<()> {
        self.reopens.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn pread(&self, buf: &mut [u8], _offset: u64) -> Result<()> {
        self.attempt()?;
        buf.fill(7);
        Ok(())
    }
    fn pwrite(&self, _buf: &[u8], _offset: u64, _fua: bool) -> Result<()> {
        self.attempt()
    }
}

impl Plugin for Flaky {
    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        self.attempt()?;
        Ok(Box::new(self))
    }
}
