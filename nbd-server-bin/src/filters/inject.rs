//! Filters that inject trouble or cope with it: error, delay, retry.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags};

use super::super::Params;
use super::flags::lend_through;
use super::{parse_duration, parse_probability};

/// The errno of a name the NBD protocol can carry.
fn errno_of(name: &str) -> Option<i32> {
    Some(match name {
        "EPERM" => libc::EPERM,
        "EIO" => libc::EIO,
        "ENOMEM" => libc::ENOMEM,
        "EINVAL" => libc::EINVAL,
        "ENOSPC" => libc::ENOSPC,
        "ESHUTDOWN" => libc::ESHUTDOWN,
        _ => return None,
    })
}

#[derive(Clone, Debug, Default)]
struct Rule {
    errno: i32,
    rate: f64,
    file: Option<PathBuf>,
}

const OPS: [&str; 6] = ["pread", "pwrite", "trim", "zero", "extents", "cache"];

/// `error=`, `error-rate=`, `error-file=` and per-operation
/// `error-OP`, `error-OP-rate`, `error-OP-file` for OP in pread, pwrite,
/// trim, zero, extents, cache.
pub struct ErrorFilter {
    inner: Arc<dyn Backend>,
    rules: [Rule; 6],
    rng: AtomicU64,
}

impl ErrorFilter {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        fn errno(p: &mut Params, k: &str) -> std::result::Result<Option<i32>, String> {
            p.take_with(k, |v| {
                errno_of(v).ok_or_else(|| {
                    format!("unknown error '{v}' (expecting EPERM, EIO, ENOMEM, EINVAL, ENOSPC or ESHUTDOWN)")
                })
            })
        }
        let base = Rule {
            errno: errno(p, "error")?.unwrap_or(libc::EIO),
            rate: p.take_with("error-rate", parse_probability)?.unwrap_or(0.0),
            file: p.take("error-file").map(PathBuf::from),
        };
        let mut rules: [Rule; 6] = Default::default();
        for (i, op) in OPS.iter().enumerate() {
            rules[i] = Rule {
                errno: errno(p, &format!("error-{op}"))?.unwrap_or(base.errno),
                rate: p
                    .take_with(&format!("error-{op}-rate"), parse_probability)?
                    .unwrap_or(base.rate),
                file: p
                    .take(&format!("error-{op}-file"))
                    .map(PathBuf::from)
                    .or_else(|| base.file.clone()),
            };
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Ok(ErrorFilter {
            inner,
            rules,
            rng: AtomicU64::new(seed),
        })
    }

    fn random(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self
                .rng
                .compare_exchange_weak(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return (y >> 11) as f64 / (1u64 << 53) as f64,
                Err(cur) => x = cur,
            }
        }
    }

    fn inject(&self, op: usize) -> Result<()> {
        let r = &self.rules[op];
        if r.rate <= 0.0 {
            return Ok(());
        }
        if let Some(f) = &r.file {
            if !f.exists() {
                return Ok(());
            }
        }
        if r.rate >= 1.0 || self.random() < r.rate {
            return Err(Error::new(
                r.errno,
                format!(
                    "injecting {} error into {}",
                    std::io::Error::from_raw_os_error(r.errno),
                    OPS[op]
                ),
            ));
        }
        Ok(())
    }
}

impl Backend for ErrorFilter {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        if let Err(e) = self.inject(0) {
            return Some(Err(e));
        }
        self.inner.pread_lend(count, offset, send)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inject(0)?;
        self.inner.pread(buf, offset)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.inject(1)?;
        self.inner.pwrite(buf, offset, fua)
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.inject(2)?;
        self.inner.trim(count, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.inject(3)?;
        self.inner.zero(count, offset, flags)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        self.inject(4)?;
        self.inner.extents(count, offset, sink)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.inject(5)?;
        self.inner.cache(count, offset)
    }
}

// ---- delay ----

/// `rdelay=`/`delay-read=`, `wdelay=` (write, zero, trim), `delay-write=`,
/// `delay-zero=`, `delay-trim=`, `delay-extents=`, `delay-cache=`,
/// `delay-open=`, `delay-close=`: seconds (fractions allowed) or `NNms`.
/// `delay-fast-zero=false` fails fast zeroes at once.
#[derive(Default)]
pub struct Delays {
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
    inner: Arc<dyn Backend>,
    d: Delays,
    fast_zero: bool,
}

fn sleep(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

impl Delay {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let mut take = |k: &str| p.take_with(k, parse_duration);
        let rdelay = take("rdelay")?;
        let wdelay = take("wdelay")?;
        let d = Delays {
            read: take("delay-read")?.or(rdelay).unwrap_or_default(),
            write: take("delay-write")?.or(wdelay).unwrap_or_default(),
            zero: take("delay-zero")?.or(wdelay).unwrap_or_default(),
            trim: take("delay-trim")?.or(wdelay).unwrap_or_default(),
            extents: take("delay-extents")?.unwrap_or_default(),
            cache: take("delay-cache")?.unwrap_or_default(),
            open: take("delay-open")?.unwrap_or_default(),
            close: take("delay-close")?.unwrap_or_default(),
        };
        let fast_zero = p.take_bool("delay-fast-zero")?.unwrap_or(true);
        Ok(Delay {
            inner,
            d,
            fast_zero,
        })
    }
}

impl Backend for Delay {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        sleep(self.d.open);
        self.inner.open_connection(info)
    }
    fn close_connection(&self, info: &ConnectionInfo) {
        sleep(self.d.close);
        self.inner.close_connection(info)
    }
    // No zero-copy reads here: every read path must sleep once.
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        sleep(self.d.read);
        self.inner.pread(buf, offset)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        sleep(self.d.write);
        self.inner.pwrite(buf, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast && !self.fast_zero {
            return Err(Error::new(libc::ENOTSUP, "delay: fast zero refused"));
        }
        sleep(self.d.zero);
        self.inner.zero(count, offset, flags)
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        sleep(self.d.trim);
        self.inner.trim(count, offset, fua)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        sleep(self.d.extents);
        self.inner.extents(count, offset, sink)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        sleep(self.d.cache);
        self.inner.cache(count, offset)
    }
}

// ---- retry ----

/// `retries=N` (default 5), `retry-delay=SECS` (default 2; fractions
/// allowed), `retry-exponential=yes|no` (default yes), `retry-readonly=`:
/// a failed request is retried after [`Backend::reopen`] of the layer
/// below; with retry-readonly, after the first failure writes fail EROFS.
pub struct Retry {
    inner: Arc<dyn Backend>,
    retries: u32,
    delay: Duration,
    exponential: bool,
    readonly_on_fail: bool,
    failed: std::sync::atomic::AtomicBool,
}

impl Retry {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
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
            inner,
            retries,
            delay,
            exponential,
            readonly_on_fail,
            failed: Default::default(),
        })
    }

    fn run<T>(&self, write: bool, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut delay = self.delay;
        let mut attempt = 0;
        loop {
            if write && self.readonly_on_fail && self.failed.load(Ordering::Relaxed) {
                return Err(Error::new(libc::EROFS, "retry: read-only after a failure"));
            }
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if attempt >= self.retries => return Err(e),
                Err(_) => {
                    attempt += 1;
                    self.failed.store(true, Ordering::Relaxed);
                    sleep(delay);
                    if self.exponential {
                        delay *= 2;
                    }
                    // A failed reopen is one more failure; the next
                    // attempt will tell.
                    let _ = self.inner.reopen();
                }
            }
        }
    }
}

impl Backend for Retry {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    lend_through!();
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.run(false, || self.inner.pread(buf, offset))
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.run(true, || self.inner.pwrite(buf, offset, fua))
    }
    fn flush(&self) -> Result<()> {
        self.run(true, || self.inner.flush())
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.run(true, || self.inner.trim(count, offset, fua))
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.run(true, || self.inner.zero(count, offset, flags))
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.run(false, || self.inner.cache(count, offset))
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // Extents a failed attempt added are skipped when added again.
        self.run(false, || self.inner.extents(count, offset, sink))
    }
}
