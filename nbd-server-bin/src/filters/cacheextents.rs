//! The cacheextents filter (nbdkit-cacheextents-filter(1)): remembers
//! the layer below's last block status answer, and answers a query that
//! starts inside it from memory. For clients that walk a disk one extent
//! at a time (REQ_ONE) over a plugin whose answers are slow but long:
//! the layer below is always asked for everything it knows about the
//! query, without REQ_ONE.
//!
//! One answer is kept for the whole server, as in nbdkit, but it is
//! tagged with its export, so that a plugin with several exports never
//! answers for one from another's extents. Any write, trim or zero
//! forgets it.

use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "cacheextents",
    params: &[],
    open: |_, _| Ok(Arc::new(CacheExtents::default())),
};

/// The last answer: its export, and its extents as (offset, length,
/// flags), contiguous.
struct Cached {
    export: Vec<u8>,
    list: Vec<(u64, u64, u32)>,
}

impl Cached {
    fn covers(&self, export: &[u8], offset: u64) -> bool {
        let (Some(first), Some(last)) = (self.list.first(), self.list.last()) else {
            return false;
        };
        self.export == export && first.0 <= offset && offset < last.0 + last.1
    }
}

#[derive(Default)]
struct CacheExtents {
    cache: Mutex<Option<Cached>>,
}

/// The filter for one connection: which export it is on.
struct Handle {
    filter: Arc<CacheExtents>,
    export: Vec<u8>,
}

impl Handle {
    fn forget(&self) {
        *self.filter.cache.lock() = None;
    }
}

fn replay(list: &[(u64, u64, u32)], sink: &mut Extents) -> Result<()> {
    for &(off, len, flags) in list {
        if !sink.add(off, len, flags)? {
            break;
        }
    }
    Ok(())
}

impl Filter for CacheExtents {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(Handle {
            filter: self,
            export: info.export_name.clone(),
        }))
    }
}

impl FilterHandle for Handle {
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.forget();
        next.pwrite(buf, offset, fua)
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.forget();
        next.trim(count, offset, fua)
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.forget();
        next.zero(count, offset, flags)
    }

    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        {
            let cache = self.filter.cache.lock();
            if let Some(c) = cache.as_ref().filter(|c| c.covers(&self.export, offset)) {
                return replay(&c.list, sink);
            }
        }
        let mut all = Extents::new();
        all.reset(offset, count, false);
        next.extents(count, offset, &mut all)?;
        let mut list = Vec::with_capacity(all.as_slice().len());
        let mut pos = offset;
        for &(len, flags) in all.as_slice() {
            list.push((pos, len, flags));
            pos += len;
        }
        replay(&list, sink)?;
        if !list.is_empty() {
            *self.filter.cache.lock() = Some(Cached {
                export: self.export.clone(),
                list,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over, info};
    use crate::plugins::memory::Memory;
    use nbd_core::wire::consts::allocation;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A memory disk that counts block status queries.
    struct Counting(Arc<Memory>, AtomicUsize);
    impl Backend for Counting {
        fn size(&self) -> Result<u64> {
            self.0.size()
        }
        fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.0.pread(buf, offset)
        }
        fn can_write(&self) -> Result<bool> {
            Ok(true)
        }
        fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
            self.0.pwrite(buf, offset, fua)
        }
        fn can_extents(&self) -> Result<bool> {
            Ok(true)
        }
        fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.extents(count, offset, sink)
        }
    }
    impl crate::chain::Plugin for Counting {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    fn query(c: &dyn Backend, count: u32, offset: u64, one: bool) -> Vec<(u64, u32)> {
        let mut e = Extents::new();
        e.reset(offset, count, one);
        c.extents(count, offset, &mut e).unwrap();
        e.as_slice().to_vec()
    }

    #[test]
    fn answers_from_the_last_query_until_a_write() {
        let mem = Arc::new(Memory::new(1 << 20));
        mem.pwrite(&[1; 10], 65536, false).unwrap();
        let plugin = Arc::new(Counting(mem, AtomicUsize::new(0)));
        let c = filter_over(&FILTER, &[], Arc::clone(&plugin) as _)
            .open(info())
            .unwrap();
        let hz = allocation::HOLE | allocation::ZERO;
        let asked = || plugin.1.load(Ordering::Relaxed);
        assert_eq!(query(&c, 1 << 20, 0, true), [(65536, hz)]);
        assert_eq!(asked(), 1);
        assert_eq!(query(&c, 1 << 19, 65536, true), [(32768, 0)]);
        assert_eq!(query(&c, 1 << 19, 98304, false), [(1 << 19, hz)]);
        assert_eq!(asked(), 1);
        c.pwrite(&[1], 0, false).unwrap();
        assert_eq!(query(&c, 1 << 20, 0, true), [(32768, 0)]);
        assert_eq!(asked(), 2);
    }
}
