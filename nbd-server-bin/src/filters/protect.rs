//! The protect filter (nbdkit-protect-filter(1)): makes ranges of the
//! disk read-only. `protect=START-END` (inclusive; `START-` to the end,
//! `-END` from 0, `~RANGE` for everything outside it; may be repeated):
//! writes, trims and zeroes that would change a protected byte fail
//! EPERM; writes that leave it unchanged are allowed.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::{parse_size, Params};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "protect",
    params: &[(
        "protect",
        "a range to protect, START-END or ~START-END for outside it (repeatable)",
    )],
    open: |p, _| Ok(Arc::new(Protect::open(p)?)),
};

pub struct Protect {
    /// Protected half-open ranges, sorted, merged.
    ranges: Vec<(u64, u64)>,
}

fn parse_range(v: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| format!("could not parse range (expecting START-END): {v}"))?;
    let a = if a.trim().is_empty() {
        0
    } else {
        parse_size(a)?
    };
    let b = if b.trim().is_empty() {
        u64::MAX
    } else {
        parse_size(b)?.checked_add(1).ok_or("range end too large")?
    };
    if b <= a {
        return Err(format!("range end is before its start: {v}"));
    }
    Ok((a, b))
}

impl Protect {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let mut ranges = Vec::new();
        for v in p.take_all("protect") {
            let (inv, r) = match v.strip_prefix('~') {
                Some(r) => (true, r),
                None => (false, v.as_str()),
            };
            let (a, b) = parse_range(r).map_err(|e| p.err(e))?;
            if inv {
                if a > 0 {
                    ranges.push((0, a));
                }
                if b < u64::MAX {
                    ranges.push((b, u64::MAX));
                }
            } else {
                ranges.push((a, b));
            }
        }
        ranges.sort();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(l) if a <= l.1 => l.1 = l.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(Protect { ranges: merged })
    }

    /// Fails EPERM if writing `new` (None: zeroes) at `offset` would change
    /// a protected byte.
    fn check(&self, next: &dyn Backend, offset: u64, len: u64, new: Option<&[u8]>) -> Result<()> {
        let end = offset + len;
        for &(a, b) in &self.ranges {
            let s = a.max(offset);
            let e = b.min(end);
            if s >= e {
                continue;
            }
            let mut cur = vec![0u8; (e - s) as usize];
            next.pread(&mut cur, s)?;
            let same = match new {
                Some(n) => cur[..] == n[(s - offset) as usize..(e - offset) as usize],
                None => cur.iter().all(|&x| x == 0),
            };
            if !same {
                return Err(Error::new(
                    libc::EPERM,
                    "protect: write to a protected range",
                ));
            }
        }
        Ok(())
    }
}

impl Filter for Protect {
    /// Only reshapes requests and answers: never blocks by itself.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Protect {
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.check(next, offset, buf.len() as u64, Some(buf))?;
        next.pwrite(buf, offset, fua)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.check(next, offset, count as u64, None)?;
        next.trim(count, offset, fua)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.check(next, offset, count as u64, None)?;
        next.zero(count, offset, flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over, info};
    use crate::plugins::memory::Memory;

    fn params(ranges: &[&str]) -> Params {
        let pairs = ranges
            .iter()
            .map(|v| ("protect".to_string(), v.to_string()))
            .collect();
        Params::new("protect", pairs)
    }

    #[test]
    fn ranges_parse_and_merge() {
        let p = Protect::open(&mut params(&["100-199", "150-299", "1000-"])).unwrap();
        assert_eq!(p.ranges, [(100, 300), (1000, u64::MAX)]);
        let p = Protect::open(&mut params(&["~-99", "~1k-"])).unwrap();
        assert_eq!(p.ranges, [(0, u64::MAX)]);
        let p = Protect::open(&mut params(&["~100-199"])).unwrap();
        assert_eq!(p.ranges, [(0, 100), (200, u64::MAX)]);
        assert!(Protect::open(&mut params(&["100"])).is_err());
        assert!(Protect::open(&mut params(&["200-100"])).is_err());
    }

    #[test]
    fn protected_bytes_do_not_change() {
        let args = [("protect", "100-199")];
        let chain = filter_over(&FILTER, &args, Arc::new(Memory::new(4096)));
        let c = chain.open(info()).unwrap();
        c.pwrite(&[1; 100], 0, false).unwrap();
        c.pwrite(&[1; 100], 200, false).unwrap();
        let e = c.pwrite(&[1; 10], 195, false).unwrap_err();
        assert_eq!(e.errno, libc::EPERM);
        // Writing what is already there (zeroes) is allowed.
        c.pwrite(&[0; 300], 0, false).unwrap();
        c.zero(100, 100, ZeroFlags::default()).unwrap();
        c.trim(100, 100, false).unwrap();
        c.pwrite(&[0; 50], 90, false).unwrap();
        assert_eq!(
            c.pwrite(&[2; 1], 199, false).unwrap_err().errno,
            libc::EPERM
        );
        c.pwrite(&[2; 1], 200, false).unwrap();
        let mut buf = [9u8; 4];
        c.pread(&mut buf, 198).unwrap();
        assert_eq!(buf, [0, 0, 2, 0]);
    }
}
