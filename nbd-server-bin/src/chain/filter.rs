//! A layer between the server and the plugin: a filter (nbdkit-filter(3)).
//!
//! Every method of a filter receives the layers below it as `next`, and
//! by default passes the call on unchanged, as nbdkit does for a callback
//! a filter leaves NULL. A filter writes only what it changes.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Read, Result, ZeroFlags};

use super::opened::{Lower, OpenNext};
use super::Below;

/// A filter, configured once when the server starts and shared by every
/// connection.
pub trait Filter: Send + Sync {
    /// Runs once the server is in the process that will serve (after
    /// daemonising), before any client connects (nbdkit's `after_fork`):
    /// the place to start a thread that lives as long as the server. A
    /// thread started when the filter is made would not survive the fork.
    fn after_fork(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Whether this filter's requests never wait by themselves: it only
    /// moves, checks or reshapes requests and answers (offset, truncate,
    /// nozero...), with no I/O, sleep or long-held lock of its own. A
    /// chain whose filters all say so, over a plugin that says so (see
    /// [`super::Plugin::never_blocks`]), is served inline. False unless
    /// the filter says so.
    fn never_blocks(&self) -> bool {
        false
    }

    /// Whether this filter serves one connection at a time (nbdkit's
    /// SERIALIZE_CONNECTIONS thread model): the server then lets the next
    /// client in, greeting and all, only once the one before has gone.
    fn serializes_connections(&self) -> bool {
        false
    }

    /// A client connected, before any byte of the handshake.
    fn preconnect(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<()> {
        next.preconnect(info)
    }

    /// The exports offered (see [`super::Plugin::list_exports`]).
    fn list_exports(
        &self,
        next: &Below<'_>,
        info: &ConnectionInfo,
    ) -> Result<Option<Vec<(String, String)>>> {
        next.list_exports(info)
    }

    /// The export the empty name means.
    fn default_export(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<Option<String>> {
        next.default_export(info)
    }

    /// Opens the filter for one connection. `next.open(info)` opens the
    /// layers below (with another export name, if the filter wants); a
    /// filter that does not call it leaves them closed, and its handle
    /// must then answer every request itself (tls-fallback, for clients
    /// without TLS). Most filters call `next.open(info)?` and return
    /// `Ok(Box::new(self))`: one handle for every connection.
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>>;
}

/// A filter opened for one connection. Each method gets the layers below
/// as `next`; the defaults pass every call on unchanged.
pub trait FilterHandle: Send + Sync {
    /// Runs once every layer is open, the innermost first (nbdkit's
    /// `prepare`): the place to look at the layers below.
    fn prepare(&self, next: &dyn Backend, info: &ConnectionInfo) -> Result<()> {
        let _ = (next, info);
        Ok(())
    }

    /// Runs before `prepare` with the layers below as an owned handle, for
    /// a filter whose callers may keep their `next` for the connection's
    /// whole life (a C filter's `nbdkit_next` pointer). The same rule as
    /// for [`FilterHandle::keep_next`] holds: drop it by the end of
    /// `close`.
    fn attach(&self, next: Lower) {
        let _ = next;
    }

    /// Runs when the connection ends, for every handle whose `prepare`
    /// succeeded, the outermost first and before any handle's `close`
    /// (nbdkit's `finalize`).
    fn finalize(&self, next: &dyn Backend) -> Result<()> {
        let _ = next;
        Ok(())
    }

    /// Runs after `prepare` with the layers below as an owned handle, for
    /// a filter that calls them from a thread of its own, outside any
    /// request (the scan filter's prefetching). A handle that keeps
    /// `next` must drop it, and stop its thread, by the end of `close`:
    /// the layers below stay open until then.
    fn keep_next(&self, next: Lower) {
        let _ = next;
    }

    /// Runs exactly once, when the connection ends, for every handle that
    /// was opened, the outermost first (nbdkit's `close`; its `finalize`
    /// work may be done here too).
    fn close(&self, info: &ConnectionInfo) {
        let _ = info;
    }

    fn size(&self, next: &dyn Backend) -> Result<u64> {
        next.size()
    }
    fn block_size(&self, next: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        next.block_size()
    }
    fn reopen(&self, next: &dyn Backend) -> Result<()> {
        next.reopen()
    }
    fn can_write(&self, next: &dyn Backend) -> Result<bool> {
        next.can_write()
    }
    fn can_flush(&self, next: &dyn Backend) -> Result<bool> {
        next.can_flush()
    }
    fn can_fua(&self, next: &dyn Backend) -> Result<bool> {
        next.can_fua()
    }
    fn can_trim(&self, next: &dyn Backend) -> Result<bool> {
        next.can_trim()
    }
    fn can_zero(&self, next: &dyn Backend) -> Result<bool> {
        next.can_zero()
    }
    fn can_fast_zero(&self, next: &dyn Backend) -> Result<bool> {
        next.can_fast_zero()
    }
    fn can_multi_conn(&self, next: &dyn Backend) -> Result<bool> {
        next.can_multi_conn()
    }
    fn can_extents(&self, next: &dyn Backend) -> Result<bool> {
        next.can_extents()
    }
    fn can_cache(&self, next: &dyn Backend) -> Result<bool> {
        next.can_cache()
    }
    fn is_rotational(&self, next: &dyn Backend) -> Result<bool> {
        next.is_rotational()
    }
    fn export_description(&self, next: &dyn Backend) -> Result<Option<String>> {
        next.export_description()
    }

    /// A read. Passing `r` on (perhaps with another offset) keeps the
    /// plugin's zero-copy path; a filter that looks at or changes the data
    /// takes `r.buf()` and reads into it with `next.pread`.
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        next.read(r)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        next.pwrite(buf, offset, fua)
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        next.flush()
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        next.trim(count, offset, fua)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        next.zero(count, offset, flags)
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        next.cache(count, offset)
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        next.extents(count, offset, sink)
    }
}

/// A filter shared by every connection is its own handle.
impl<T: FilterHandle + ?Sized> FilterHandle for Arc<T> {
    fn prepare(&self, next: &dyn Backend, info: &ConnectionInfo) -> Result<()> {
        (**self).prepare(next, info)
    }
    fn attach(&self, next: Lower) {
        (**self).attach(next)
    }
    fn finalize(&self, next: &dyn Backend) -> Result<()> {
        (**self).finalize(next)
    }
    fn keep_next(&self, next: Lower) {
        (**self).keep_next(next)
    }
    fn close(&self, info: &ConnectionInfo) {
        (**self).close(info)
    }
    fn size(&self, next: &dyn Backend) -> Result<u64> {
        (**self).size(next)
    }
    fn block_size(&self, next: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        (**self).block_size(next)
    }
    fn reopen(&self, next: &dyn Backend) -> Result<()> {
        (**self).reopen(next)
    }
    fn can_write(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_write(next)
    }
    fn can_flush(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_flush(next)
    }
    fn can_fua(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_fua(next)
    }
    fn can_trim(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_trim(next)
    }
    fn can_zero(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_zero(next)
    }
    fn can_fast_zero(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_fast_zero(next)
    }
    fn can_multi_conn(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_multi_conn(next)
    }
    fn can_extents(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_extents(next)
    }
    fn can_cache(&self, next: &dyn Backend) -> Result<bool> {
        (**self).can_cache(next)
    }
    fn is_rotational(&self, next: &dyn Backend) -> Result<bool> {
        (**self).is_rotational(next)
    }
    fn export_description(&self, next: &dyn Backend) -> Result<Option<String>> {
        (**self).export_description(next)
    }
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        (**self).pread(next, r)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        (**self).pwrite(next, buf, offset, fua)
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        (**self).flush(next)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        (**self).trim(next, count, offset, fua)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        (**self).zero(next, count, offset, flags)
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        (**self).cache(next, count, offset)
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        (**self).extents(next, count, offset, sink)
    }
}
