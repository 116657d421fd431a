//! A chain opened for one connection: every layer's handle, and what
//! each layer answered about its capabilities.
//!
//! nbdkit asks each layer `can_write`, `can_zero`, ... once per connection
//! and remembers the answer (server/backend.c); so do we, per layer, so
//! that a filter asking `next.can_zero()` on every request costs an atomic
//! load after the first time. Errors are not remembered: the question is
//! asked again.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use nbd_core::errno::host;
use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use super::filter::FilterHandle;
use super::Chain;

/// The capabilities remembered per layer, as indexes into [`Caps`].
#[derive(Clone, Copy)]
enum Cap {
    Write,
    Flush,
    Fua,
    Trim,
    Zero,
    FastZero,
    MultiConn,
    Extents,
    Cache,
    Rotational,
}
const CAPS: usize = 10;

/// One layer's remembered answers: 0 not asked yet, 1 false, 2 true; and
/// its size (`u64::MAX`: not asked yet; sizes are below 2^63).
struct Caps {
    caps: [AtomicU8; CAPS],
    size: AtomicU64,
}

impl Caps {
    fn new() -> Caps {
        Caps {
            caps: Default::default(),
            size: AtomicU64::new(u64::MAX),
        }
    }
}

/// A chain opened for one connection. Dropping it closes every layer that
/// was opened, the outermost first, and then the plugin's handle.
pub struct Opened {
    layers: Arc<Layers>,
}

/// The layers of a chain opened for one connection. Shared (with a
/// filter's own thread, through [`Lower`]) once they are open.
struct Layers {
    chain: Arc<Chain>,
    info: ConnectionInfo,
    /// One per filter, outermost first; `None` where a filter above did
    /// not open the layers below it.
    filters: Vec<Option<Box<dyn FilterHandle>>>,
    plugin: Option<Box<dyn Backend>>,
    /// One per layer: the filters, then the plugin.
    caps: Vec<Caps>,
    /// The filters from this index down were prepared (and so are
    /// finalized at the end).
    prepared_from: AtomicUsize,
}

/// What a filter's `open` gets to open the layers below it.
pub struct OpenNext<'a> {
    opened: &'a mut Layers,
    layer: usize,
}

impl OpenNext<'_> {
    /// Opens the layers below for this connection, on `info.export_name`.
    pub fn open(&mut self, info: &ConnectionInfo) -> Result<()> {
        open_layer(self.opened, self.layer, info)
    }

    /// The layers below as a chain of their own, for a filter that opens
    /// more connections to them (`nbdkit_next_context_open`).
    pub fn chain_below(&self) -> Arc<Chain> {
        let c = &self.opened.chain;
        Arc::new(Chain::new(
            Arc::clone(&c.plugin),
            c.filters[self.layer..].to_vec(),
        ))
    }
}

fn open_layer(o: &mut Layers, layer: usize, info: &ConnectionInfo) -> Result<()> {
    let chain = Arc::clone(&o.chain);
    if layer == chain.filters.len() {
        if o.plugin.is_none() {
            o.plugin = Some(Arc::clone(&chain.plugin).open(info)?);
        }
        return Ok(());
    }
    if o.filters[layer].is_some() {
        return Ok(());
    }
    let mut next = OpenNext {
        opened: o,
        layer: layer + 1,
    };
    let h = Arc::clone(&chain.filters[layer]).open(info, &mut next)?;
    o.filters[layer] = Some(h);
    Ok(())
}

impl Opened {
    /// Opens `chain` for the connection `info`: each filter from the
    /// outermost in, as it asks for the layer below, then the plugin; then
    /// each filter's `prepare`, innermost first.
    pub(super) fn open(chain: Arc<Chain>, info: ConnectionInfo) -> Result<Opened> {
        let n = chain.filters.len();
        let mut layers = Layers {
            chain,
            info,
            filters: (0..n).map(|_| None).collect(),
            plugin: None,
            caps: (0..=n).map(|_| Caps::new()).collect(),
            prepared_from: AtomicUsize::new(n),
        };
        let info = layers.info.clone();
        if let Err(e) = open_layer(&mut layers, 0, &info) {
            // Close what was opened.
            drop(Opened {
                layers: Arc::new(layers),
            });
            return Err(e);
        }
        let o = Opened {
            layers: Arc::new(layers),
        };
        let l = &o.layers;
        for i in (0..n).rev() {
            if let Some(h) = &l.filters[i] {
                h.attach(Lower {
                    layers: Arc::clone(l),
                    layer: i + 1,
                });
                h.prepare(&l.next(i + 1), &l.info)?;
                l.prepared_from.store(i, Ordering::Relaxed);
                h.keep_next(Lower {
                    layers: Arc::clone(l),
                    layer: i + 1,
                });
            }
        }
        Ok(o)
    }

    /// The connection this chain was opened for.
    pub fn info(&self) -> &ConnectionInfo {
        &self.layers.info
    }
}

/// The layers below a filter, owned: what a filter's own thread uses to
/// call them outside any request (see [`FilterHandle::keep_next`]).
pub struct Lower {
    layers: Arc<Layers>,
    layer: usize,
}

impl Layers {
    /// The layers from `layer` down, as a backend.
    fn next(&self, layer: usize) -> Next<'_> {
        Next {
            opened: self,
            layer,
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let l = &self.layers;
        let from = l.prepared_from.load(Ordering::Relaxed);
        for (i, h) in l.filters.iter().enumerate().skip(from) {
            if let Some(h) = h {
                if let Err(e) = h.finalize(&l.next(i + 1)) {
                    crate::log::error!("finalize: {}", e.message);
                }
            }
        }
        for h in self.layers.filters.iter().flatten() {
            h.close(&self.layers.info);
        }
    }
}

/// The layers of an opened chain from one layer down: what a filter gets
/// as `next`.
struct Next<'a> {
    opened: &'a Layers,
    layer: usize,
}

fn not_open() -> Error {
    Error::new(host::EIO, "this layer of the chain was not opened")
}

impl Next<'_> {
    /// Calls the filter at this layer (with the layers below as `next`),
    /// or the plugin.
    fn call<T>(
        &self,
        filter: impl FnOnce(&dyn FilterHandle, &dyn Backend) -> Result<T>,
        plugin: impl FnOnce(&dyn Backend) -> Result<T>,
    ) -> Result<T> {
        let o = self.opened;
        if self.layer < o.filters.len() {
            match &o.filters[self.layer] {
                Some(h) => filter(&**h, &o.next(self.layer + 1)),
                None => Err(not_open()),
            }
        } else {
            match &o.plugin {
                Some(p) => plugin(&**p),
                None => Err(not_open()),
            }
        }
    }

    /// A capability, asked once per connection and layer.
    fn cap(
        &self,
        cap: Cap,
        filter: fn(&dyn FilterHandle, &dyn Backend) -> Result<bool>,
        plugin: fn(&dyn Backend) -> Result<bool>,
    ) -> Result<bool> {
        let slot = &self.opened.caps[self.layer].caps[cap as usize];
        match slot.load(Ordering::Relaxed) {
            1 => return Ok(false),
            2 => return Ok(true),
            _ => {}
        }
        let v = self.call(filter, plugin)?;
        slot.store(if v { 2 } else { 1 }, Ordering::Relaxed);
        Ok(v)
    }
}

impl Backend for Next<'_> {
    fn size(&self) -> Result<u64> {
        let slot = &self.opened.caps[self.layer].size;
        let known = slot.load(Ordering::Relaxed);
        if known != u64::MAX {
            return Ok(known);
        }
        let v = self.call(|h, n| h.size(n), |p| p.size())?;
        slot.store(v, Ordering::Relaxed);
        Ok(v)
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        self.call(|h, n| h.block_size(n), |p| p.block_size())
    }
    fn reopen(&self) -> Result<()> {
        self.call(|h, n| h.reopen(n), |p| p.reopen())
    }
    fn can_write(&self) -> Result<bool> {
        self.cap(Cap::Write, |h, n| h.can_write(n), |p| p.can_write())
    }
    fn can_flush(&self) -> Result<bool> {
        self.cap(Cap::Flush, |h, n| h.can_flush(n), |p| p.can_flush())
    }
    fn can_fua(&self) -> Result<bool> {
        self.cap(Cap::Fua, |h, n| h.can_fua(n), |p| p.can_fua())
    }
    fn can_trim(&self) -> Result<bool> {
        self.cap(Cap::Trim, |h, n| h.can_trim(n), |p| p.can_trim())
    }
    fn can_zero(&self) -> Result<bool> {
        self.cap(Cap::Zero, |h, n| h.can_zero(n), |p| p.can_zero())
    }
    fn can_fast_zero(&self) -> Result<bool> {
        self.cap(
            Cap::FastZero,
            |h, n| h.can_fast_zero(n),
            |p| p.can_fast_zero(),
        )
    }
    fn can_multi_conn(&self) -> Result<bool> {
        self.cap(
            Cap::MultiConn,
            |h, n| h.can_multi_conn(n),
            |p| p.can_multi_conn(),
        )
    }
    fn can_extents(&self) -> Result<bool> {
        self.cap(Cap::Extents, |h, n| h.can_extents(n), |p| p.can_extents())
    }
    fn can_cache(&self) -> Result<bool> {
        self.cap(Cap::Cache, |h, n| h.can_cache(n), |p| p.can_cache())
    }
    fn is_rotational(&self) -> Result<bool> {
        self.cap(
            Cap::Rotational,
            |h, n| h.is_rotational(n),
            |p| p.is_rotational(),
        )
    }
    fn export_description(&self) -> Result<Option<String>> {
        self.call(|h, n| h.export_description(n), |p| p.export_description())
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read(&mut Read::new(buf, offset))
    }
    fn read(&self, r: &mut Read<'_>) -> Result<()> {
        let o = self.opened;
        if self.layer < o.filters.len() {
            match &o.filters[self.layer] {
                Some(h) => h.pread(&o.next(self.layer + 1), r),
                None => Err(not_open()),
            }
        } else {
            match &o.plugin {
                Some(p) => p.read(r),
                None => Err(not_open()),
            }
        }
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.call(
            |h, n| h.pwrite(n, buf, offset, fua),
            |p| p.pwrite(buf, offset, fua),
        )
    }
    fn flush(&self) -> Result<()> {
        self.call(|h, n| h.flush(n), |p| p.flush())
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.call(
            |h, n| h.trim(n, count, offset, fua),
            |p| p.trim(count, offset, fua),
        )
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.call(
            |h, n| h.zero(n, count, offset, flags),
            |p| p.zero(count, offset, flags),
        )
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.call(|h, n| h.cache(n, count, offset), |p| p.cache(count, offset))
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // As nbdkit's backend_extents: a layer that cannot report extents
        // is all data, whatever the layers below it would say (a filter
        // that moves data around, such as ext2, must not pass on the
        // holes of what is below it).
        if !self.can_extents()? {
            sink.add(offset, count as u64, 0)?;
            return Ok(());
        }
        let o = self.opened;
        if self.layer < o.filters.len() {
            match &o.filters[self.layer] {
                Some(h) => h.extents(&o.next(self.layer + 1), count, offset, sink),
                None => Err(not_open()),
            }
        } else {
            match &o.plugin {
                Some(p) => p.extents(count, offset, sink),
                None => Err(not_open()),
            }
        }
    }
}

/// The opened chain serves the connection: its top layer.
impl Backend for Opened {
    fn size(&self) -> Result<u64> {
        self.layers.next(0).size()
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        self.layers.next(0).block_size()
    }
    fn reopen(&self) -> Result<()> {
        self.layers.next(0).reopen()
    }
    fn can_write(&self) -> Result<bool> {
        self.layers.next(0).can_write()
    }
    fn can_flush(&self) -> Result<bool> {
        self.layers.next(0).can_flush()
    }
    fn can_fua(&self) -> Result<bool> {
        self.layers.next(0).can_fua()
    }
    fn can_trim(&self) -> Result<bool> {
        self.layers.next(0).can_trim()
    }
    fn can_zero(&self) -> Result<bool> {
        self.layers.next(0).can_zero()
    }
    fn can_fast_zero(&self) -> Result<bool> {
        self.layers.next(0).can_fast_zero()
    }
    fn can_multi_conn(&self) -> Result<bool> {
        self.layers.next(0).can_multi_conn()
    }
    fn can_extents(&self) -> Result<bool> {
        self.layers.next(0).can_extents()
    }
    fn can_cache(&self) -> Result<bool> {
        self.layers.next(0).can_cache()
    }
    fn is_rotational(&self) -> Result<bool> {
        self.layers.next(0).is_rotational()
    }
    fn export_description(&self) -> Result<Option<String>> {
        self.layers.next(0).export_description()
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.layers.next(0).pread(buf, offset)
    }
    fn read(&self, r: &mut Read<'_>) -> Result<()> {
        self.layers.next(0).read(r)
    }
    /// The plugin's, when no filter is over it: a filter may act on the
    /// data or on a failure (retry, error, cache), which a read given up
    /// for want of cached data would confuse.
    fn pread_nowait(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        if !self.layers.filters.is_empty() {
            return None;
        }
        self.layers.plugin.as_ref()?.pread_nowait(buf, offset)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.layers.next(0).pwrite(buf, offset, fua)
    }
    fn flush(&self) -> Result<()> {
        self.layers.next(0).flush()
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.layers.next(0).trim(count, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.layers.next(0).zero(count, offset, flags)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.layers.next(0).cache(count, offset)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        self.layers.next(0).extents(count, offset, sink)
    }
}

/// The layers below a filter, for its own thread.
impl Backend for Lower {
    fn size(&self) -> Result<u64> {
        self.layers.next(self.layer).size()
    }
    fn export_description(&self) -> Result<Option<String>> {
        self.layers.next(self.layer).export_description()
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        self.layers.next(self.layer).block_size()
    }
    fn reopen(&self) -> Result<()> {
        self.layers.next(self.layer).reopen()
    }
    fn can_write(&self) -> Result<bool> {
        self.layers.next(self.layer).can_write()
    }
    fn can_flush(&self) -> Result<bool> {
        self.layers.next(self.layer).can_flush()
    }
    fn can_fua(&self) -> Result<bool> {
        self.layers.next(self.layer).can_fua()
    }
    fn can_trim(&self) -> Result<bool> {
        self.layers.next(self.layer).can_trim()
    }
    fn can_zero(&self) -> Result<bool> {
        self.layers.next(self.layer).can_zero()
    }
    fn can_fast_zero(&self) -> Result<bool> {
        self.layers.next(self.layer).can_fast_zero()
    }
    fn can_multi_conn(&self) -> Result<bool> {
        self.layers.next(self.layer).can_multi_conn()
    }
    fn can_extents(&self) -> Result<bool> {
        self.layers.next(self.layer).can_extents()
    }
    fn can_cache(&self) -> Result<bool> {
        self.layers.next(self.layer).can_cache()
    }
    fn is_rotational(&self) -> Result<bool> {
        self.layers.next(self.layer).is_rotational()
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.layers.next(self.layer).pread(buf, offset)
    }
    fn read(&self, r: &mut Read<'_>) -> Result<()> {
        self.layers.next(self.layer).read(r)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.layers.next(self.layer).pwrite(buf, offset, fua)
    }
    fn flush(&self) -> Result<()> {
        self.layers.next(self.layer).flush()
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.layers.next(self.layer).trim(count, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.layers.next(self.layer).zero(count, offset, flags)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.layers.next(self.layer).cache(count, offset)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        self.layers.next(self.layer).extents(count, offset, sink)
    }
}
