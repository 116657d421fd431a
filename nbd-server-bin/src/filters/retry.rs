//! The retry filter: a request that fails is retried, after reopening the
//! layers below, with a growing delay between attempts
//! (nbdkit-retry-filter(1)).
//!
//! `retries=N` (default 5), `retry-delay=SECS` (default 2; fractions
//! allowed), `retry-exponential=yes|no` (default yes), `retry-readonly=`:
//! a failed request is retried after [`Backend::reopen`] of the layers
//! below; with retry-readonly, after the first failure on a connection
//! that connection's writes fail EROFS (a new connection starts writable).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::{parse_duration, Params};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "retry",
    params: &[
        (
            "retries",
            "how many times a failed request is retried (default 5)",
        ),
        (
            "retry-delay",
            "seconds to wait before the first retry (default 2)",
        ),
        (
            "retry-exponential",
            "double the delay after each retry (default yes)",
        ),
        (
            "retry-readonly",
            "after a failure, fail writes with EROFS (default no)",
        ),
    ],
    open: |p, _| Ok(Arc::new(Retry::open(p)?)),
};

pub struct Retry {
    retries: u32,
    delay: Duration,
    exponential: bool,
    readonly_on_fail: bool,
}

/// The retry filter opened for one connection.
struct RetryHandle {
    filter: Arc<Retry>,
    /// Whether a request of this connection failed. With retry-readonly
    /// this makes the rest of the connection read-only; as in nbdkit, it
    /// is the handle's state, so a new connection starts writable.
    failed: AtomicBool,
}

impl Retry {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let retries = p
            .take_with("retries", |v| {
                v.parse::<u32>()
                    .map_err(|_| format!("could not parse number: {v}"))
            })?
            .unwrap_or(5);
        let delay = p
            .take_with("retry-delay", parse_duration)?
            .unwrap_or(Duration::from_secs(2));
        let exponential = p.take_bool("retry-exponential")?.unwrap_or(true);
        let readonly_on_fail = p.take_bool("retry-readonly")?.unwrap_or(false);
        Ok(Retry {
            retries,
            delay,
            exponential,
            readonly_on_fail,
        })
    }
}

impl RetryHandle {
    fn run<T>(
        &self,
        next: &dyn Backend,
        write: bool,
        mut f: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let cfg = &*self.filter;
        let mut delay = cfg.delay;
        let mut attempt = 0;
        loop {
            if write && cfg.readonly_on_fail && self.failed.load(Ordering::Relaxed) {
                return Err(Error::new(libc::EROFS, "retry: read-only after a failure"));
            }
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= cfg.retries => return Err(e),
                Err(_) => {
                    attempt += 1;
                    self.failed.store(true, Ordering::Relaxed);
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    if cfg.exponential {
                        delay *= 2;
                    }
                    // A failed reopen is one more failure; the next
                    // attempt will tell.
                    let _ = next.reopen();
                }
            }
        }
    }
}

impl Filter for Retry {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(RetryHandle {
            filter: self,
            failed: AtomicBool::new(false),
        }))
    }
}

impl FilterHandle for RetryHandle {
    // `r` is passed on, so a read may be lent. A lent read fails only
    // before it sends anything, and a retry after such a failure reads
    // into the buffer (the lending was used up).
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        self.run(next, false, || next.read(r))
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.run(next, true, || next.pwrite(buf, offset, fua))
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        self.run(next, true, || next.flush())
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.run(next, true, || next.trim(count, offset, fua))
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.run(next, true, || next.zero(count, offset, flags))
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        self.run(next, false, || next.cache(count, offset))
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        // Extents a failed attempt added are skipped when added again.
        self.run(next, false, || next.extents(count, offset, sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter, info, info_id, Flaky};
    use crate::chain::Chain;

    #[test]
    fn retries_after_reopening() {
        let flaky = Arc::new(Flaky::default());
        let f = filter(&FILTER, &[("retries", "3"), ("retry-delay", "0.001")]);
        let chain = Arc::new(Chain::new(flaky.clone(), vec![f]));
        let c = chain.open(info()).unwrap();
        flaky.fail.store(3, Ordering::SeqCst);
        let mut buf = [0u8; 16];
        c.pread(&mut buf, 0).unwrap();
        assert_eq!(buf, [7; 16]);
        assert_eq!(flaky.reopens.load(Ordering::SeqCst), 3);
        // One failure more than the retries: the error comes through.
        flaky.fail.store(4, Ordering::SeqCst);
        assert_eq!(c.pwrite(&buf, 0, false).unwrap_err().errno, libc::EIO);
    }

    #[test]
    fn readonly_after_a_failure() {
        let flaky = Arc::new(Flaky::default());
        let f = filter(&FILTER, &[("retry-delay", "0"), ("retry-readonly", "yes")]);
        let chain = Arc::new(Chain::new(flaky.clone(), vec![f]));
        let c = chain.open(info()).unwrap();
        let buf = [0u8; 16];
        c.pwrite(&buf, 0, false).unwrap();
        flaky.fail.store(1, Ordering::SeqCst);
        assert_eq!(c.pwrite(&buf, 0, false).unwrap_err().errno, libc::EROFS);
    }

    #[test]
    fn readonly_is_per_connection() {
        let flaky = Arc::new(Flaky::default());
        let f = filter(&FILTER, &[("retry-delay", "0"), ("retry-readonly", "yes")]);
        let chain = Arc::new(Chain::new(flaky.clone(), vec![f]));
        let a = chain.open(info_id(1)).unwrap();
        let b = chain.open(info_id(2)).unwrap();
        let mut buf = [0u8; 16];
        // A read of A fails once and is retried: A is read-only from now.
        flaky.fail.store(1, Ordering::SeqCst);
        a.pread(&mut buf, 0).unwrap();
        assert_eq!(flaky.fail.load(Ordering::SeqCst), 0);
        assert_eq!(a.pwrite(&buf, 0, false).unwrap_err().errno, libc::EROFS);
        // B, open already, and C, opened after, saw no failure: they write.
        b.pwrite(&buf, 0, false).unwrap();
        let c = chain.open(info_id(3)).unwrap();
        c.pwrite(&buf, 0, false).unwrap();
        // Reads of A still work.
        a.pread(&mut buf, 0).unwrap();
    }

    #[test]
    fn bad_values() {
        let mut p = Params::new("retry", vec![("retry-delay".into(), "soon".into())]);
        assert!((FILTER.open)(&mut p, false)
            .err()
            .unwrap()
            .contains("retry-delay"));
        let mut p = Params::new("retry", vec![("retries".into(), "-1".into())]);
        assert!((FILTER.open)(&mut p, false).is_err());
    }
}
