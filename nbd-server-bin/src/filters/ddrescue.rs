//! The ddrescue filter: serves a disk image recovered with GNU ddrescue,
//! failing reads of the areas its mapfile does not mark as rescued
//! (nbdkit-ddrescue-filter(1)).
//!
//! `ddrescue-mapfile=FILE` is read once, when the server starts. Comment
//! lines (`#`) are skipped, the first other line is the status line (also
//! skipped), and each further `POS SIZE STATUS` line names a block; only
//! blocks with status `+` (finished) can be read. A read must lie wholly
//! inside one such block, else it fails with EIO. Without a mapfile every
//! read fails. The export is read-only and offers no cache requests.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Read, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "ddrescue",
    params: &[(
        "ddrescue-mapfile",
        "the GNU ddrescue mapfile: only its '+' blocks can be read",
    )],
    open: |p, _| Ok(Arc::new(Ddrescue::open(p)?)),
};

pub struct Ddrescue {
    /// The rescued blocks as (first byte, last byte), in file order.
    rescued: Vec<(u64, u64)>,
}

/// Parses an integer as C's `%i`: decimal, `0x` hex or `0` octal, with an
/// optional sign.
fn parse_c_int(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// The rescued blocks of a mapfile's text.
fn parse_map(text: &str) -> std::result::Result<Vec<(u64, u64)>, String> {
    let mut rescued = Vec::new();
    let mut status_seen = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if !line.is_empty() && !status_seen {
            status_seen = true;
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(pos), Some(size), Some(status)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Some(pos), Some(size)) = (parse_c_int(pos), parse_c_int(size)) else {
            continue;
        };
        if pos < 0 {
            return Err("block offset must not be negative".into());
        }
        if size < 0 {
            return Err("block length must not be negative".into());
        }
        if status.starts_with('+') && size > 0 {
            rescued.push((pos as u64, pos as u64 + size as u64 - 1));
        }
    }
    Ok(rescued)
}

impl Ddrescue {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let rescued = match p.take("ddrescue-mapfile") {
            None => Vec::new(),
            Some(file) => {
                let text = std::fs::read(&file).map_err(|e| format!("{file}: ddrescue: {e}"))?;
                parse_map(&String::from_utf8_lossy(&text)).map_err(|e| p.err(e))?
            }
        };
        Ok(Ddrescue { rescued })
    }

    fn readable(&self, offset: u64, count: u32) -> bool {
        let last = offset + u64::from(count.max(1)) - 1;
        self.rescued
            .iter()
            .any(|&(first, end)| offset >= first && last <= end)
    }
}

impl Filter for Ddrescue {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Ddrescue {
    fn can_write(&self, _next: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    fn can_cache(&self, _next: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        if !self.readable(r.offset, r.count()) {
            return Err(Error::new(
                libc::EIO,
                format!(
                    "ddrescue: {} bytes at {:#x} are not all rescued",
                    r.count(),
                    r.offset
                ),
            ));
        }
        next.read(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "# Mapfile. Created by GNU ddrescue version 1.25\n\
        # current_pos  current_status  current_pass\n\
        0x00010000     +               1\n\
        #      pos        size  status\n\
        0x00000000  0x00010000  +\n\
        0x00010000  0x00000200  -\n\
        0x00010200  0x00000e00  /\n\
        0x00011000  0x0000F000  +\n";

    #[test]
    fn rescued_blocks_only() {
        let f = Ddrescue {
            rescued: parse_map(MAP).unwrap(),
        };
        assert_eq!(f.rescued, vec![(0, 0xffff), (0x11000, 0x1ffff)]);
        assert!(f.readable(0, 0x10000));
        assert!(!f.readable(0xfe00, 0x400));
        assert!(!f.readable(0x10000, 512));
        assert!(f.readable(0x11000, 4096));
        assert!(!f.readable(0x1f000, 0x2000));
    }

    #[test]
    fn c_integers_and_bad_lines() {
        assert_eq!(parse_c_int("0x10"), Some(16));
        assert_eq!(parse_c_int("010"), Some(8));
        assert_eq!(parse_c_int("10"), Some(10));
        assert_eq!(parse_c_int("0"), Some(0));
        assert!(parse_map("status\n-1 10 +\n").is_err());
        assert!(parse_map("status\n1 -10 +\n").is_err());
        assert_eq!(
            parse_map("status\nrubbish\n0 512 +\n").unwrap(),
            vec![(0, 511)]
        );
    }
}
