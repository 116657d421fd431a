//! The extentlist filter (nbdkit-extentlist-filter(1)): block status
//! from a list in a file (`extentlist=FILE`) instead of from the layer
//! below, for plugins that cannot tell (ssh, curl) when another source
//! can. Data is untouched, and the list is not updated by writes.
//!
//! Each line of the file is `OFFSET LENGTH [TYPE]`: sizes as
//! nbdkit_parse_size takes them, and a type that is a number (the
//! NBD_STATE bits: 1 hole, 2 zero), missing (data), or words containing
//! `hole` and/or `zero`. The lines may come in any order but must not
//! overlap; what they leave out is a hole that reads as zeroes. Empty
//! extents are skipped. The file is read once, when the server starts.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result};
use nbd_core::wire::consts::allocation;

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::parse_size;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "extentlist",
    params: &[(
        "extentlist",
        "the file listing the extents, one `offset length [type]` a line (required)",
    )],
    open: |p, _| {
        let mut files = p.take_all("extentlist");
        if files.len() > 1 {
            return Err("extentlist cannot appear twice".into());
        }
        let Some(file) = files.pop() else {
            return Err("you must supply the extentlist parameter on the command line".into());
        };
        let text = std::fs::read(&file).map_err(|e| {
            let e = std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO));
            format!("open: {file}: {e}")
        })?;
        let list = parse(&file, &String::from_utf8_lossy(&text))?;
        Ok(Arc::new(ExtentList { list }))
    },
};

const HOLE: u32 = allocation::HOLE | allocation::ZERO;

/// The extents as (offset, length, type): in order, without gaps, from 0
/// to 2^64-1.
struct ExtentList {
    list: Vec<(u64, u64, u32)>,
}

/// The type field: a number as `%u` reads it, or the words.
fn parse_type(t: &str) -> u32 {
    let digits = t.trim_start_matches('+');
    let n = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if n > 0 {
        if let Ok(v) = digits[..n].parse::<u32>() {
            return v;
        }
    }
    let mut ty = 0;
    if t.contains("hole") {
        ty |= allocation::HOLE;
    }
    if t.contains("zero") {
        ty |= allocation::ZERO;
    }
    ty
}

/// Parses the file `name` holding `text` into the full list.
fn parse(name: &str, text: &str) -> std::result::Result<Vec<(u64, u64, u32)>, String> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    let mut list = Vec::new();
    for line in lines {
        let mut f = line.split([' ', '\t']).filter(|s| !s.is_empty());
        let cannot = || format!("{name}: cannot parse {line}");
        let offset = parse_size(f.next().ok_or_else(cannot)?)?;
        let length = parse_size(f.next().ok_or_else(cannot)?)?;
        if length == 0 {
            continue;
        }
        let ty = f.next().map(parse_type).unwrap_or(0);
        list.push((offset, length, ty));
    }
    list.sort_by_key(|e| e.0);
    let mut end = 0u64;
    for &(off, len, _) in &list {
        if off < end {
            return Err("extents in the extent list are overlapping".into());
        }
        end = off
            .checked_add(len)
            .ok_or("extents in the extent list are overlapping")?;
    }
    // Fill the gaps, before, between and after, with holes.
    let mut full = Vec::with_capacity(list.len() * 2 + 1);
    let mut pos = 0u64;
    for (off, len, ty) in list {
        if off > pos {
            full.push((pos, off - pos, HOLE));
        }
        full.push((off, len, ty));
        pos = off + len;
    }
    if pos < u64::MAX {
        full.push((pos, u64::MAX - pos, HOLE));
    }
    Ok(full)
}

impl Filter for ExtentList {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for ExtentList {
    fn can_extents(&self, _: &dyn Backend) -> Result<bool> {
        Ok(true)
    }

    fn extents(&self, _: &dyn Backend, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // The first extent that ends after `offset`.
        let i = self.list.partition_point(|&(o, l, _)| o + l <= offset);
        let end = offset + count as u64;
        for &(o, l, ty) in &self.list[i..] {
            if o >= end || !sink.add(o, l, ty)? {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_gaps_sorts_and_types() {
        let l = parse(
            "f",
            "1M\t1M  hole,zero\n0 4096\n8192 4096 3\n\n".trim_end_matches('\n'),
        )
        .unwrap();
        assert_eq!(
            l,
            vec![
                (0, 4096, 0),
                (4096, 4096, HOLE),
                (8192, 4096, 3),
                (12288, (1 << 20) - 12288, HOLE),
                (1 << 20, 1 << 20, HOLE),
                (2 << 20, u64::MAX - (2 << 20), HOLE),
            ]
        );
        assert_eq!(parse_type("hole"), allocation::HOLE);
        assert_eq!(parse_type("zero"), allocation::ZERO);
        assert_eq!(parse_type("2x"), 2);
        assert_eq!(parse("f", "").unwrap(), vec![(0, u64::MAX, HOLE)]);
        assert_eq!(parse("f", "0 0 hole").unwrap(), vec![(0, u64::MAX, HOLE)]);
    }

    #[test]
    fn refuses_overlaps_and_bad_lines() {
        assert_eq!(
            parse("f", "0 10\n5 10").unwrap_err(),
            "extents in the extent list are overlapping"
        );
        assert_eq!(parse("f", "0\n").unwrap_err(), "f: cannot parse 0");
        assert_eq!(parse("f", "0 1\n\n0 1").unwrap_err(), "f: cannot parse ");
        assert!(parse("f", "x 1")
            .unwrap_err()
            .contains("could not parse size"));
    }

    #[test]
    fn answers_from_the_list() {
        let f = ExtentList {
            list: parse("f", "0 4096\n8192 4096 zero").unwrap(),
        };
        let mem = crate::plugins::memory::Memory::new(16384);
        let mut e = Extents::new();
        e.reset(1000, 15000, false);
        f.extents(&mem, 15000, 1000, &mut e).unwrap();
        assert_eq!(
            e.as_slice(),
            &[
                (3096, 0),
                (4096, HOLE),
                (4096, allocation::ZERO),
                (3712, HOLE)
            ]
        );
    }
}
