//! The checkwrite filter (nbdkit-checkwrite-filter(1)): for testing
//! copying tools. The layer below is opened read-only and never written;
//! a write succeeds (doing nothing) when its data is what is already
//! there, a zero or trim when the range already reads as zeroes, and
//! anything else fails with EIO. Sparseness is not compared: data that
//! reads as zeroes matches a zero request and the other way round.
//!
//! Every write-like request is advertised, whatever the layer below
//! supports. A fast zero fails with ENOTSUP when it would have to read
//! data to check it.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::extents::extents_full;
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "checkwrite",
    params: &[],
    open: |_, _| Ok(Arc::new(CheckWrite)),
};

/// The most bytes read at once when checking a zero or trim.
const CHUNK: u64 = 64 << 20;

struct CheckWrite;

fn mismatch() -> Error {
    Error::new(libc::EIO, "data written does not match expected")
}

impl CheckWrite {
    /// Checks that `count` bytes at `offset` read as zeroes.
    fn check_zero(&self, next: &dyn Backend, count: u32, offset: u64, fast: bool) -> Result<()> {
        let ranges = if next.can_extents()? {
            extents_full(next, count, offset)?
        } else {
            vec![(offset, count as u64, 0)]
        };
        let mut buf = Vec::new();
        for (start, len, flags) in ranges {
            if flags & allocation::ZERO != 0 {
                continue;
            }
            if fast {
                return Err(Error::new(
                    libc::ENOTSUP,
                    "checkwrite: fast zero would have to read data",
                ));
            }
            let mut pos = start;
            let end = start + len;
            while pos < end {
                let n = (end - pos).min(CHUNK) as usize;
                buf.resize(n, 0);
                next.pread(&mut buf, pos)?;
                if buf.iter().any(|&b| b != 0) {
                    return Err(mismatch());
                }
                pos += n as u64;
            }
        }
        Ok(())
    }
}

impl Filter for CheckWrite {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        // Whatever the client may do, the layers below are read-only.
        next.open(&ConnectionInfo {
            readonly: true,
            ..info.clone()
        })?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for CheckWrite {
    answers!(
        true: can_write, can_flush, can_fua, can_trim, can_zero, can_fast_zero, can_multi_conn;
    );

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        let mut there = vec![0u8; buf.len()];
        next.pread(&mut there, offset)?;
        if there != buf {
            return Err(mismatch());
        }
        Ok(())
    }

    fn flush(&self, _: &dyn Backend) -> Result<()> {
        Ok(())
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, _fua: bool) -> Result<()> {
        self.check_zero(next, count, offset, false)
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.check_zero(next, count, offset, flags.fast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over, info};
    use crate::chain::{Opened, Plugin};
    use crate::plugins::memory::Memory;
    use std::sync::Mutex;

    /// A memory disk that records whether it was opened read-only and
    /// refuses writes.
    struct Watch {
        mem: Arc<Memory>,
        readonly: Mutex<Option<bool>>,
    }

    impl Plugin for Watch {
        fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            *self.readonly.lock().unwrap() = Some(info.readonly);
            Ok(Box::new(ReadOnly(Arc::clone(&self.mem))))
        }
    }

    struct ReadOnly(Arc<Memory>);
    impl Backend for ReadOnly {
        fn size(&self) -> Result<u64> {
            self.0.size()
        }
        fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.0.pread(buf, offset)
        }
        fn can_extents(&self) -> Result<bool> {
            Ok(true)
        }
        fn extents(
            &self,
            count: u32,
            offset: u64,
            sink: &mut nbd_core::server::backend::Extents,
        ) -> Result<()> {
            self.0.extents(count, offset, sink)
        }
    }

    fn open(mem: &Arc<Memory>) -> (Opened, Arc<Watch>) {
        let w = Arc::new(Watch {
            mem: Arc::clone(mem),
            readonly: Mutex::new(None),
        });
        let c = filter_over(&FILTER, &[], Arc::clone(&w) as _)
            .open(info())
            .unwrap();
        (c, w)
    }

    #[test]
    fn writes_matching_data_succeed_others_fail() {
        let mem = Arc::new(Memory::new(1 << 20));
        // Page 2 of the memory disk (64 KiB on) is data: 9s, then zeroes.
        mem.pwrite(&[9; 4096], 65536, false).unwrap();
        let (c, w) = open(&mem);
        assert_eq!(*w.readonly.lock().unwrap(), Some(true));
        assert!(c.can_write().unwrap() && c.can_trim().unwrap() && c.can_zero().unwrap());
        assert!(c.can_fua().unwrap() && c.can_flush().unwrap());
        assert!(c.can_fast_zero().unwrap() && c.can_multi_conn().unwrap());

        c.pwrite(&[9; 100], 65600, true).unwrap();
        c.pwrite(&[0; 100], 0, false).unwrap();
        assert_eq!(
            c.pwrite(&[8; 1], 65600, false).unwrap_err().errno,
            libc::EIO
        );
        c.flush().unwrap();

        let z = ZeroFlags::default();
        c.zero(65536, 0, z).unwrap();
        // Data that reads as zeroes matches too.
        c.trim(4096, 73728, false).unwrap();
        assert_eq!(c.zero(1, 65536, z).unwrap_err().errno, libc::EIO);
        assert_eq!(c.trim(8192, 61440, false).unwrap_err().errno, libc::EIO);
        let fast = ZeroFlags { fast: true, ..z };
        c.zero(65536, 0, fast).unwrap();
        assert_eq!(c.zero(4096, 73728, fast).unwrap_err().errno, libc::ENOTSUP);
    }
}
