//! The rate filter: limits the bandwidth of reads and writes, for the
//! server as a whole and per connection (nbdkit-rate-filter(1)).
//!
//! `rate=BITSPERSEC` (all connections together), `connection-rate=`
//! (each connection), both sizes in bits per second with nbdkit's
//! suffixes (`1M` is 2^20 bits per second); neither turns the filter off.
//! `rate-file=FILE` and `connection-rate-file=FILE` name a file whose
//! first line, read again before each request, replaces the rate (a
//! missing or unreadable file leaves the rate as it was; `0` lifts it).
//! `burstiness=SECS` (default 2.0) is the bucket's capacity in seconds of
//! the rate: how long a client may burst after a quiet spell.
//!
//! Reads and writes have separate token buckets, one pair for the server
//! and one pair per connection; each starts full. A request takes its
//! size in bits from the server's bucket, then from its connection's,
//! sleeping while a bucket lacks tokens. Zeroes, trims and the like cost
//! nothing, as they carry no data.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nbd_core::server::backend::{Backend, ConnectionInfo, Read, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::{parse_size, Params};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "rate",
    params: &[
        (
            "rate",
            "the bandwidth of all connections together, bits per second",
        ),
        (
            "connection-rate",
            "the bandwidth of each connection, bits per second",
        ),
        (
            "rate-file",
            "a file holding the server's rate, read again as it runs",
        ),
        (
            "connection-rate-file",
            "a file holding the per-connection rate, read again as it runs",
        ),
        (
            "burstiness",
            "the buckets' capacity in seconds of the rate (default 2.0)",
        ),
    ],
    open: |p, _| Ok(Arc::new(Rate::open(p)?)),
};

/// A token bucket of bits, refilled at `rate` bits per second up to
/// `capacity_secs` seconds' worth. A rate of 0 means no limit.
struct Bucket {
    rate: u64,
    capacity_secs: f64,
    level: u64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, capacity_secs: f64) -> Bucket {
        Bucket {
            rate,
            capacity_secs,
            level: Bucket::capacity_of(rate, capacity_secs),
            last: Instant::now(),
        }
    }

    fn capacity_of(rate: u64, secs: f64) -> u64 {
        (rate as f64 * secs) as u64
    }

    fn capacity(&self) -> u64 {
        Bucket::capacity_of(self.rate, self.capacity_secs)
    }

    /// A new rate (from a rate file); returns the old one.
    fn set_rate(&mut self, rate: u64) -> u64 {
        let old = std::mem::replace(&mut self.rate, rate);
        self.level = self.level.min(self.capacity());
        old
    }

    /// Takes up to `n` bits at `now`. Returns the bits still owed and how
    /// long to wait for them to arrive (0 when all were taken).
    fn take(&mut self, n: u64, now: Instant) -> (u64, Duration) {
        if self.rate == 0 {
            return (0, Duration::ZERO);
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let add = (u128::from(self.rate) * elapsed.as_micros() / 1_000_000) as u64;
        let room = self.capacity().saturating_sub(self.level);
        self.level += add.min(room);
        if self.level >= n {
            self.level -= n;
            return (0, Duration::ZERO);
        }
        let owed = n - self.level;
        self.level = 0;
        let nanos = u128::from(owed) * 1_000_000_000 / u128::from(self.rate);
        (owed, Duration::from_nanos(nanos as u64))
    }
}

/// A bucket and, perhaps, the file its rate is read from.
struct Limiter<'a> {
    bucket: &'a Mutex<Bucket>,
    file: Option<&'a PathBuf>,
}

impl Limiter<'_> {
    /// Reads the rate file, if there is one and it holds a rate.
    fn adjust(&self) {
        let Some(file) = self.file else { return };
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        let Ok(rate) = parse_size(text.lines().next().unwrap_or("")) else {
            return;
        };
        let old = self.bucket.lock().unwrap().set_rate(rate);
        if old != rate {
            crate::log::debug!("rate adjusted from {old} to {rate}");
        }
    }

    /// Waits until `bytes` may pass.
    fn wait(&self, bytes: u32) {
        self.adjust();
        let mut bits = u64::from(bytes) * 8;
        while bits > 0 {
            let (owed, wait) = self.bucket.lock().unwrap().take(bits, Instant::now());
            bits = owed;
            if bits > 0 {
                std::thread::sleep(wait);
            }
        }
    }
}

pub struct Rate {
    connection_rate: u64,
    burstiness: f64,
    rate_file: Option<PathBuf>,
    connection_rate_file: Option<PathBuf>,
    /// The server's buckets, for reads and for writes.
    read: Mutex<Bucket>,
    write: Mutex<Bucket>,
}

/// A rate given at most once, and not 0.
fn take_rate(p: &mut Params, key: &str, all: Vec<String>) -> std::result::Result<u64, String> {
    if all.len() > 1 {
        return Err(format!("{key} set twice on the command line"));
    }
    match all.first() {
        None => Ok(0),
        Some(v) => match parse_size(v).map_err(|e| p.err(format!("{key}: {e}")))? {
            0 => Err(format!("{key} cannot be set to 0")),
            r => Ok(r),
        },
    }
}

/// A file name made absolute, as the server may change directory.
fn absolute(f: String) -> std::result::Result<PathBuf, String> {
    std::path::absolute(&f).map_err(|e| format!("{f}: {e}"))
}

impl Rate {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let all = p.take_all("rate");
        let rate = take_rate(p, "rate", all)?;
        let all = p.take_all("connection-rate");
        let connection_rate = take_rate(p, "connection-rate", all)?;
        let rate_file = p.take("rate-file").map(absolute).transpose()?;
        let connection_rate_file = p.take("connection-rate-file").map(absolute).transpose()?;
        let burstiness = p
            .take_with("burstiness", |v| match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() => Ok(s.max(0.0)),
                _ => Err("burstiness must be a floating point number (seconds)".into()),
            })?
            .unwrap_or(2.0);
        Ok(Rate {
            connection_rate,
            burstiness,
            rate_file,
            connection_rate_file,
            read: Mutex::new(Bucket::new(rate, burstiness)),
            write: Mutex::new(Bucket::new(rate, burstiness)),
        })
    }
}

impl Filter for Rate {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(RateHandle {
            read: Mutex::new(Bucket::new(self.connection_rate, self.burstiness)),
            write: Mutex::new(Bucket::new(self.connection_rate, self.burstiness)),
            rate: self,
        }))
    }
}

/// One connection: its own buckets.
struct RateHandle {
    rate: Arc<Rate>,
    read: Mutex<Bucket>,
    write: Mutex<Bucket>,
}

impl RateHandle {
    fn wait(&self, server: &Mutex<Bucket>, conn: &Mutex<Bucket>, bytes: u32) {
        Limiter {
            bucket: server,
            file: self.rate.rate_file.as_ref(),
        }
        .wait(bytes);
        Limiter {
            bucket: conn,
            file: self.rate.connection_rate_file.as_ref(),
        }
        .wait(bytes);
    }
}

impl FilterHandle for RateHandle {
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        self.wait(&self.rate.read, &self.read, r.count());
        next.read(r)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.wait(&self.rate.write, &self.write, buf.len() as u32);
        next.pwrite(buf, offset, fua)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_starts_full_then_owes() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 2.0);
        b.last = t0;
        assert_eq!(b.take(1500, t0), (0, Duration::ZERO));
        // 500 left; 1500 more owes 1000 bits: one second.
        assert_eq!(b.take(1500, t0), (1000, Duration::from_secs(1)));
        // After a second the owed bits are there.
        assert_eq!(b.take(1000, t0 + Duration::from_secs(1)).0, 0);
        // A long rest fills only up to the capacity.
        assert_eq!(b.take(2000, t0 + Duration::from_secs(100)).0, 0);
        assert_eq!(b.take(1, t0 + Duration::from_secs(100)).0, 1);
    }

    #[test]
    fn no_rate_no_limit_and_adjusting() {
        let mut b = Bucket::new(0, 2.0);
        assert_eq!(b.take(u64::MAX, Instant::now()).0, 0);
        let mut b = Bucket::new(1000, 2.0);
        assert_eq!(b.set_rate(10), 1000);
        assert_eq!(b.level, 20);
    }

    #[test]
    fn parameters() {
        let p = |args: &[(&str, &str)]| {
            let mut p = Params::new(
                "rate",
                args.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            (FILTER.open)(&mut p, false).map(|_| ())
        };
        assert!(p(&[("rate", "1M"), ("burstiness", "0.5")]).is_ok());
        assert!(p(&[("rate", "0")])
            .unwrap_err()
            .contains("rate cannot be set to 0"));
        assert!(p(&[("rate", "1M"), ("rate", "2M")])
            .unwrap_err()
            .contains("rate set twice"));
        assert!(p(&[("connection-rate", "0")])
            .unwrap_err()
            .contains("connection-rate cannot be set to 0"));
        assert!(p(&[("burstiness", "x")])
            .unwrap_err()
            .contains("floating point"));
        assert!(p(&[("rate", "1x")]).unwrap_err().contains("rate"));
    }
}
