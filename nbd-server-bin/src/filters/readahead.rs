//! The readahead filter: reads more than asked and keeps it, as
//! nbdkit-readahead-filter(1). The filter keeps the last window read (one
//! window, shared by every connection); a read that starts where the previous window
//! ended doubles the window (64K up to 4M), any other read starts again at
//! 64K. Writes, trims and zeroes drop the window.

use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "readahead",
    params: &[],
    open: |_, _| Ok(Arc::new(Readahead::new())),
};

/// The window, shared by every connection: a write through one connection
/// must drop what another would read.
struct Readahead {
    /// (offset, data, next window)
    buf: Mutex<(u64, Vec<u8>, u64)>,
}

impl Readahead {
    fn new() -> Readahead {
        Readahead {
            buf: Mutex::new((0, Vec::new(), 64 << 10)),
        }
    }

    fn invalidate(&self) {
        let mut g = self.buf.lock();
        g.1.clear();
        g.2 = 64 << 10;
    }
}

impl Filter for Readahead {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Readahead {
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let buf = r.buf();
        let mut g = self.buf.lock();
        let (start, data, window) = &mut *g;
        let end = offset + buf.len() as u64;
        if offset >= *start && end <= *start + data.len() as u64 {
            let s = (offset - *start) as usize;
            buf.copy_from_slice(&data[s..s + buf.len()]);
            return Ok(());
        }
        let sequential = offset == *start + data.len() as u64 && !data.is_empty();
        *window = if sequential {
            (*window * 2).min(4 << 20)
        } else {
            64 << 10
        };
        let size = next.size()?;
        let len = (buf.len() as u64).max(*window).min(size - offset);
        data.resize(len as usize, 0);
        if let Err(e) = next.pread(data, offset) {
            data.clear();
            return Err(e);
        }
        *start = offset;
        buf.copy_from_slice(&data[..buf.len()]);
        Ok(())
    }

    // The window is dropped before and after: a read racing the write
    // could refill it with the old data in between.
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.invalidate();
        let r = next.pwrite(buf, offset, fua);
        self.invalidate();
        r
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.invalidate();
        let r = next.trim(count, offset, fua);
        self.invalidate();
        r
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.invalidate();
        let r = next.zero(count, offset, flags);
        self.invalidate();
        r
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nbd_core::server::backend::Backend;

    use crate::chain::testing::{filter_over, info_id};
    use crate::plugins::memory::Memory;

    #[test]
    fn reads_ahead_and_drops_the_window_on_writes() {
        let mem = Arc::new(Memory::new(1 << 20));
        let chain = filter_over(&super::FILTER, &[], Arc::clone(&mem) as _);
        let (c1, c2) = (
            chain.open(info_id(1)).unwrap(),
            chain.open(info_id(2)).unwrap(),
        );
        let mut b = [0u8; 4];
        c1.pread(&mut b, 0).unwrap();
        // Changed below the filter: the window still has the old data.
        mem.pwrite(b"new!", 100, false).unwrap();
        c1.pread(&mut b, 100).unwrap();
        assert_eq!(b, [0; 4]);
        // A write through any connection drops it.
        c2.pwrite(b"abcd", 200, false).unwrap();
        c1.pread(&mut b, 100).unwrap();
        assert_eq!(&b, b"new!");
        c1.pread(&mut b, (1 << 20) - 4).unwrap();
    }
}
