//! The error filter: injects errors into requests, at random, at a given
//! rate, perhaps only while a trigger file exists
//! (nbdkit-error-filter(1)).
//!
//! `error=`, `error-rate=`, `error-file=` set the errno, rate and trigger
//! file of every operation; `error-OP`, `error-OP-rate`, `error-OP-file`
//! (OP one of pread, pwrite, trim, zero, extents, cache) override them for
//! one operation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::{parse_probability, Params};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "error",
    params: &[
        (
            "error",
            "the errno injected (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, ESHUTDOWN; default EIO)",
        ),
        (
            "error-rate",
            "the probability of an injected error (0..1 or 0%..100%)",
        ),
        ("error-file", "inject errors only while this file exists"),
        ("error-pread", "the errno injected into reads"),
        (
            "error-pread-rate",
            "the probability of an error injected into reads",
        ),
        (
            "error-pread-file",
            "inject read errors only while this file exists",
        ),
        ("error-pwrite", "the errno injected into writes"),
        (
            "error-pwrite-rate",
            "the probability of an error injected into writes",
        ),
        (
            "error-pwrite-file",
            "inject write errors only while this file exists",
        ),
        ("error-trim", "the errno injected into trims"),
        (
            "error-trim-rate",
            "the probability of an error injected into trims",
        ),
        (
            "error-trim-file",
            "inject trim errors only while this file exists",
        ),
        ("error-zero", "the errno injected into zeroes"),
        (
            "error-zero-rate",
            "the probability of an error injected into zeroes",
        ),
        (
            "error-zero-file",
            "inject zero errors only while this file exists",
        ),
        ("error-extents", "the errno injected into extents queries"),
        (
            "error-extents-rate",
            "the probability of an error injected into extents queries",
        ),
        (
            "error-extents-file",
            "inject extents errors only while this file exists",
        ),
        ("error-cache", "the errno injected into cache requests"),
        (
            "error-cache-rate",
            "the probability of an error injected into cache requests",
        ),
        (
            "error-cache-file",
            "inject cache errors only while this file exists",
        ),
    ],
    open: |p, _| Ok(Arc::new(ErrorFilter::open(p)?)),
};

/// The errnos the NBD protocol can carry, by name.
const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("EIO", libc::EIO),
    ("ENOMEM", libc::ENOMEM),
    ("EINVAL", libc::EINVAL),
    ("ENOSPC", libc::ENOSPC),
    ("ESHUTDOWN", libc::ESHUTDOWN),
];

fn errno_of(name: &str) -> Option<i32> {
    ERRNOS.iter().find(|(n, _)| *n == name).map(|&(_, e)| e)
}

fn name_of(errno: i32) -> &'static str {
    ERRNOS
        .iter()
        .find(|&&(_, e)| e == errno)
        .map_or("EIO", |&(n, _)| n)
}

fn parse_errno(v: &str) -> std::result::Result<i32, String> {
    errno_of(v).ok_or_else(|| {
        format!("unknown error '{v}' (expecting EPERM, EIO, ENOMEM, EINVAL, ENOSPC or ESHUTDOWN)")
    })
}

#[derive(Clone, Debug, Default)]
struct Rule {
    errno: i32,
    rate: f64,
    file: Option<PathBuf>,
}

impl Rule {
    /// This rule with what one operation's keys override.
    fn or(&self, errno: Option<i32>, rate: Option<f64>, file: Option<String>) -> Rule {
        Rule {
            errno: errno.unwrap_or(self.errno),
            rate: rate.unwrap_or(self.rate),
            file: file.map(PathBuf::from).or_else(|| self.file.clone()),
        }
    }
}

const OPS: [&str; 6] = ["pread", "pwrite", "trim", "zero", "extents", "cache"];
const PREAD: usize = 0;
const PWRITE: usize = 1;
const TRIM: usize = 2;
const ZERO: usize = 3;
const EXTENTS: usize = 4;
const CACHE: usize = 5;

/// The rules of each operation (indexed as [`OPS`]), and the random
/// numbers shared by every connection.
pub struct ErrorFilter {
    rules: [Rule; 6],
    rng: AtomicU64,
}

impl ErrorFilter {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let base = Rule {
            errno: p.take_with("error", parse_errno)?.unwrap_or(libc::EIO),
            rate: p.take_with("error-rate", parse_probability)?.unwrap_or(0.0),
            file: p.take("error-file").map(PathBuf::from),
        };
        let rules = [
            base.or(
                p.take_with("error-pread", parse_errno)?,
                p.take_with("error-pread-rate", parse_probability)?,
                p.take("error-pread-file"),
            ),
            base.or(
                p.take_with("error-pwrite", parse_errno)?,
                p.take_with("error-pwrite-rate", parse_probability)?,
                p.take("error-pwrite-file"),
            ),
            base.or(
                p.take_with("error-trim", parse_errno)?,
                p.take_with("error-trim-rate", parse_probability)?,
                p.take("error-trim-file"),
            ),
            base.or(
                p.take_with("error-zero", parse_errno)?,
                p.take_with("error-zero-rate", parse_probability)?,
                p.take("error-zero-file"),
            ),
            base.or(
                p.take_with("error-extents", parse_errno)?,
                p.take_with("error-extents-rate", parse_probability)?,
                p.take("error-extents-file"),
            ),
            base.or(
                p.take_with("error-cache", parse_errno)?,
                p.take_with("error-cache-rate", parse_probability)?,
                p.take("error-cache-file"),
            ),
        ];
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Ok(ErrorFilter {
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
                format!("injecting {} error into {}", name_of(r.errno), OPS[op]),
            ));
        }
        Ok(())
    }
}

impl Filter for ErrorFilter {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for ErrorFilter {
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        self.inject(PREAD)?;
        next.read(r)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.inject(PWRITE)?;
        next.pwrite(buf, offset, fua)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.inject(TRIM)?;
        next.trim(count, offset, fua)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.inject(ZERO)?;
        next.zero(count, offset, flags)
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        self.inject(EXTENTS)?;
        next.extents(count, offset, sink)
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        self.inject(CACHE)?;
        next.cache(count, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over_memory, info};

    #[test]
    fn per_operation_rules_override_the_base() {
        let chain = filter_over_memory(
            &FILTER,
            &[("error-rate", "100%"), ("error-pwrite", "ENOSPC")],
        );
        let c = chain.open(info()).unwrap();
        let mut buf = [0u8; 512];
        assert_eq!(c.pread(&mut buf, 0).unwrap_err().errno, libc::EIO);
        assert_eq!(c.pwrite(&buf, 0, false).unwrap_err().errno, libc::ENOSPC);
        assert_eq!(c.cache(512, 0).unwrap_err().errno, libc::EIO);
        // Flush is not an operation of the error filter.
        assert!(c.flush().is_ok());

        let chain = filter_over_memory(&FILTER, &[("error-trim-rate", "1")]);
        let c = chain.open(info()).unwrap();
        assert!(c.pread(&mut buf, 0).is_ok());
        assert_eq!(c.trim(512, 0, false).unwrap_err().errno, libc::EIO);
    }

    #[test]
    fn bad_values() {
        let mut p = Params::new("error", vec![("error".into(), "EFOO".into())]);
        assert!((FILTER.open)(&mut p, false).err().unwrap().contains("EFOO"));
        let mut p = Params::new("error", vec![("error-zero-rate".into(), "150%".into())]);
        assert!((FILTER.open)(&mut p, false).is_err());
    }
}
