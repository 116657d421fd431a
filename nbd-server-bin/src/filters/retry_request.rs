//! The retry-request filter: a request that fails is tried again, on the
//! same connection, after a pause; the layers below are not reopened
//! (nbdkit-retry-request-filter(1); the retry filter is the one that
//! reopens).
//!
//! `retry-request-retries=N` (default 2, at most 1000; 0 turns retrying
//! off), `retry-request-delay=SECS` (whole seconds, default 2, not 0),
//! `retry-request-open=false` (opening the layers below is then tried
//! once; by default it is retried as any request).

use std::sync::Arc;
use std::time::Duration;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "retry-request",
    params: &[
        (
            "retry-request-retries",
            "how many times a failed request is retried (default 2)",
        ),
        (
            "retry-request-delay",
            "whole seconds to wait before each retry (default 2)",
        ),
        (
            "retry-request-open",
            "false: do not retry opening the layers below (default true)",
        ),
    ],
    open: |p, _| Ok(Arc::new(RetryRequest::open(p)?)),
};

pub struct RetryRequest {
    retries: u32,
    delay: Duration,
    retry_open: bool,
}

fn parse_unsigned(v: &str) -> std::result::Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| format!("could not parse number: \"{v}\""))
}

impl RetryRequest {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let retries = p
            .take_with("retry-request-retries", parse_unsigned)?
            .unwrap_or(2);
        if retries > 1000 {
            return Err("retry-request-retries: value too large".into());
        }
        let delay = p
            .take_with("retry-request-delay", parse_unsigned)?
            .unwrap_or(2);
        if delay == 0 {
            return Err("retry-request-delay cannot be 0".into());
        }
        let retry_open = p.take_bool("retry-request-open")?.unwrap_or(true);
        Ok(RetryRequest {
            retries,
            delay: Duration::from_secs(delay.into()),
            retry_open,
        })
    }

    /// Runs `f`, and again after each failure up to the number of
    /// retries, pausing before each retry; the last error comes through.
    fn run<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if attempt < self.retries => {
                    attempt += 1;
                    crate::log::debug!(
                        "retry {attempt}: waiting {} seconds before retrying ({e})",
                        self.delay.as_secs()
                    );
                    std::thread::sleep(self.delay);
                }
                r => return r,
            }
        }
    }
}

impl Filter for RetryRequest {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        if self.retry_open {
            self.run(|| next.open(info))?;
        } else {
            next.open(info)?;
        }
        Ok(Box::new(self))
    }
}

impl FilterHandle for RetryRequest {
    // `r` is passed on, so a read may be lent. A lent read fails only
    // before it sends anything, and a retry after such a failure reads
    // into the buffer.
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        self.run(|| next.read(r))
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.run(|| next.pwrite(buf, offset, fua))
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        self.run(|| next.flush())
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.run(|| next.trim(count, offset, fua))
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.run(|| next.zero(count, offset, flags))
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        self.run(|| next.cache(count, offset))
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        // Extents a failed attempt added are skipped when added again.
        self.run(|| next.extents(count, offset, sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{info, Flaky};
    use crate::chain::Chain;

    use std::sync::atomic::Ordering;

    /// A filter with a delay of zero, which the parameters refuse.
    fn quick(retries: u32, retry_open: bool) -> Arc<dyn Filter> {
        Arc::new(RetryRequest {
            retries,
            delay: Duration::ZERO,
            retry_open,
        })
    }

    #[test]
    fn retries_without_reopening() {
        let flaky = Arc::new(Flaky::default());
        let chain = Arc::new(Chain::new(flaky.clone(), vec![quick(2, true)]));
        let c = chain.open(info()).unwrap();
        flaky.fail.store(2, Ordering::SeqCst);
        let mut buf = [0u8; 16];
        c.pread(&mut buf, 0).unwrap();
        assert_eq!(buf, [7; 16]);
        assert_eq!(flaky.reopens.load(Ordering::SeqCst), 0);
        flaky.fail.store(3, Ordering::SeqCst);
        assert_eq!(c.pwrite(&buf, 0, false).unwrap_err().errno, libc::EIO);
        assert_eq!(flaky.fail.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn open_retried_unless_told() {
        let flaky = Arc::new(Flaky::default());
        flaky.fail.store(1, Ordering::SeqCst);
        let chain = Arc::new(Chain::new(flaky.clone(), vec![quick(2, true)]));
        chain.open(info()).unwrap();
        assert_eq!(flaky.opens.load(Ordering::SeqCst), 2);
        flaky.fail.store(1, Ordering::SeqCst);
        let chain = Arc::new(Chain::new(flaky.clone(), vec![quick(2, false)]));
        assert!(chain.open(info()).is_err());
        assert_eq!(flaky.opens.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn bad_values() {
        for (k, v, needle) in [
            ("retry-request-delay", "0", "cannot be 0"),
            ("retry-request-delay", "0.5", "retry-request-delay"),
            ("retry-request-retries", "1001", "too large"),
            ("retry-request-retries", "-1", "retry-request-retries"),
            ("retry-request-open", "maybe", "retry-request-open"),
        ] {
            let mut p = Params::new("retry-request", vec![(k.into(), v.into())]);
            let e = (FILTER.open)(&mut p, false).err().unwrap();
            assert!(e.contains(needle), "{k}={v}: {e}");
        }
    }
}
