//! The delay filter: slows requests down by a fixed time each, to test
//! clients against a slow server (nbdkit-delay-filter(1)).
//!
//! `rdelay=`/`delay-read=`, `wdelay=` (write, zero, trim), `delay-write=`,
//! `delay-zero=`, `delay-trim=`, `delay-extents=`, `delay-cache=`,
//! `delay-open=`, `delay-close=`: seconds (fractions allowed) or `NNms`.
//! `delay-fast-zero=false` fails fast zeroes at once.

use std::sync::Arc;
use std::time::Duration;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::{parse_duration, Params};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "delay",
    params: &[
        ("rdelay", "the delay of each read (seconds, or NNms)"),
        ("wdelay", "the delay of each write, zero and trim"),
        ("delay-read", "the delay of each read (as rdelay)"),
        ("delay-write", "the delay of each write"),
        ("delay-zero", "the delay of each zero"),
        ("delay-trim", "the delay of each trim"),
        ("delay-extents", "the delay of each extents query"),
        ("delay-cache", "the delay of each cache request"),
        ("delay-open", "the delay when a client opens the export"),
        ("delay-close", "the delay when a client's connection closes"),
        (
            "delay-fast-zero",
            "false: fail fast zero requests at once (default true)",
        ),
    ],
    open: |p, _| Ok(Arc::new(Delay::open(p)?)),
};

#[derive(Default)]
struct Delays {
    read: Duration,
    write: Duration,
    zero: Duration,
    trim: Duration,
    extents: Duration,
    cache: Duration,
    open: Duration,
    close: Duration,
}

pub struct Delay {
    d: Delays,
    fast_zero: bool,
}

/// Waits `d`; cut short (ESHUTDOWN, as nbdkit's delay fails then) when
/// the client hangs up or the server shuts down, so a dead connection is
/// not kept open for the rest of its delays.
fn sleep(d: Duration) -> Result<()> {
    if d.is_zero() {
        return Ok(());
    }
    // nbdkit's words, logged as its nbdkit_nanosleep logs them.
    crate::hangup::sleep(d).map_err(|_| {
        Error::new(
            libc::ESHUTDOWN,
            "aborting sleep because of connection close or error",
        )
    })
}

impl Delay {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let rdelay = p.take_with("rdelay", parse_duration)?;
        let wdelay = p.take_with("wdelay", parse_duration)?;
        let d = Delays {
            read: p
                .take_with("delay-read", parse_duration)?
                .or(rdelay)
                .unwrap_or_default(),
            write: p
                .take_with("delay-write", parse_duration)?
                .or(wdelay)
                .unwrap_or_default(),
            zero: p
                .take_with("delay-zero", parse_duration)?
                .or(wdelay)
                .unwrap_or_default(),
            trim: p
                .take_with("delay-trim", parse_duration)?
                .or(wdelay)
                .unwrap_or_default(),
            extents: p
                .take_with("delay-extents", parse_duration)?
                .unwrap_or_default(),
            cache: p
                .take_with("delay-cache", parse_duration)?
                .unwrap_or_default(),
            open: p
                .take_with("delay-open", parse_duration)?
                .unwrap_or_default(),
            close: p
                .take_with("delay-close", parse_duration)?
                .unwrap_or_default(),
        };
        let fast_zero = p.take_bool("delay-fast-zero")?.unwrap_or(true);
        Ok(Delay { d, fast_zero })
    }
}

impl Filter for Delay {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        sleep(self.d.open)?;
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Delay {
    fn close(&self, _info: &ConnectionInfo) {
        let _ = sleep(self.d.close);
    }
    // The read is passed on after the sleep: a lent read and a copied one
    // sleep once each.
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        sleep(self.d.read)?;
        next.read(r)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        sleep(self.d.write)?;
        next.pwrite(buf, offset, fua)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast && !self.fast_zero {
            return Err(Error::new(libc::ENOTSUP, "delay: fast zero refused"));
        }
        sleep(self.d.zero)?;
        next.zero(count, offset, flags)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        sleep(self.d.trim)?;
        next.trim(count, offset, fua)
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        sleep(self.d.extents)?;
        next.extents(count, offset, sink)
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        sleep(self.d.cache)?;
        next.cache(count, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over_memory, info};
    use std::time::Instant;

    #[test]
    fn delays_and_fast_zero() {
        let chain = filter_over_memory(
            &FILTER,
            &[
                ("rdelay", "20ms"),
                ("delay-write", "0"),
                ("delay-fast-zero", "false"),
            ],
        );
        let c = chain.open(info()).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 512];
        c.pread(&mut buf, 0).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        c.pwrite(&buf, 0, false).unwrap();
        let fast = ZeroFlags {
            fast: true,
            ..Default::default()
        };
        assert_eq!(c.zero(512, 0, fast).unwrap_err().errno, libc::ENOTSUP);
        c.zero(512, 0, ZeroFlags::default()).unwrap();
    }

    #[test]
    fn bad_delay() {
        let mut p = Params::new("delay", vec![("rdelay".into(), "fast".into())]);
        assert!((FILTER.open)(&mut p, false)
            .err()
            .unwrap()
            .contains("rdelay"));
    }
}
