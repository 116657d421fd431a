//! Serving a window of the layer below: `len` bytes starting at `start`
//! (the offset, partition and tar filters). Each of those filters only
//! says how to find its window; this file serves it.
//!
//! The window is found when the filter is opened for a connection (in
//! `prepare`, as nbdkit's partition filter does), from the layers opened
//! for that connection: with a plugin of several exports (the file
//! plugin's `dir=`), each export has its own window. A window that cannot
//! be found, or that goes beyond the end of the layer below, fails the
//! open.

use std::sync::{Arc, OnceLock};

use nbd_core::errno::host;
use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::extents::extents_at;

/// How a window filter finds its window (start, length) in the layer below.
type Locate = dyn Fn(&dyn Backend) -> Result<(u64, u64)> + Send + Sync;

/// A filter serving a window of the layer below.
struct WindowFilter {
    name: &'static str,
    locate: Box<Locate>,
}

/// The window filter `name`, whose window `locate` finds for each
/// connection.
pub fn filter(
    name: &'static str,
    locate: impl Fn(&dyn Backend) -> Result<(u64, u64)> + Send + Sync + 'static,
) -> Arc<dyn Filter> {
    Arc::new(WindowFilter {
        name,
        locate: Box::new(locate),
    })
}

/// An error of the filter `name` that fails the open, worded as the old
/// startup errors were ("NAME: MSG").
pub fn fail(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(host::EINVAL, format!("{name}: {msg}"))
}

/// The size of the layer below, for the filter `name`.
pub fn size_below(name: &str, next: &dyn Backend) -> Result<u64> {
    next.size()
        .map_err(|e| Error::new(e.errno, format!("{name}: size of the layer below: {e}")))
}

/// Reads `len` bytes at `offset` of the layer below, for the filter `name`.
pub fn read_at(name: &str, next: &dyn Backend, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    next.pread(&mut b, offset)
        .map_err(|e| Error::new(e.errno, format!("{name}: read at {offset}: {e}")))?;
    Ok(b)
}

impl Filter for WindowFilter {
    /// Only reshapes requests and answers: never blocks by itself.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(Window {
            filter: self,
            at: OnceLock::new(),
        }))
    }
}

/// The filter opened for one connection: its window, once found.
struct Window {
    filter: Arc<WindowFilter>,
    /// (start, len), set by `prepare`.
    at: OnceLock<(u64, u64)>,
}

impl Window {
    fn start(&self) -> Result<u64> {
        self.at().map(|(s, _)| s)
    }

    fn at(&self) -> Result<(u64, u64)> {
        self.at.get().copied().ok_or_else(|| {
            Error::new(
                host::EIO,
                format!("{}: the window was not found", self.filter.name),
            )
        })
    }
}

impl FilterHandle for Window {
    fn prepare(&self, next: &dyn Backend, _: &ConnectionInfo) -> Result<()> {
        let name = self.filter.name;
        let (start, len) = (self.filter.locate)(next)?;
        let size = size_below(name, next)?;
        if start.checked_add(len).filter(|&e| e <= size).is_none() {
            return Err(fail(
                name,
                format!("the range {start}+{len} goes beyond the end of the disk ({size} bytes)"),
            ));
        }
        let _ = self.at.set((start, len));
        Ok(())
    }

    fn size(&self, _: &dyn Backend) -> Result<u64> {
        self.at().map(|(_, len)| len)
    }

    /// Passes the read on at the moved offset: the plugin may still lend.
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        r.offset = offset + self.start()?;
        let res = next.read(r);
        r.offset = offset;
        res
    }

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        next.pwrite(buf, offset + self.start()?, fua)
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        next.trim(count, offset + self.start()?, fua)
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        next.zero(count, offset + self.start()?, flags)
    }

    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        next.cache(count, offset + self.start()?)
    }

    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        extents_at(next, count, offset + self.start()?, offset, sink)
    }
}
