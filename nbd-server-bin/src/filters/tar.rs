//! The tar filter: serves one file (`tar-entry=NAME`) inside an
//! uncompressed tar file, as nbdkit-tar-filter(1); reads and writes go to
//! the file's data in place. ustar prefixes, GNU long names and pax path
//! records are understood. The tar file is searched when a connection
//! opens the filter.

use nbd_core::server::backend::{Backend, Result};

use super::window::{self, fail, read_at, size_below};
use super::FilterSpec;

const NAME: &str = "tar";

pub const FILTER: FilterSpec = FilterSpec {
    name: NAME,
    params: &[
        (
            "tar-entry",
            "the name of the file inside the tar file to serve (required)",
        ),
        (
            "tar-limit",
            "how far into the tar file to search for the entry (default 0: no limit)",
        ),
    ],
    open: |p, _| {
        let entry = p
            .take("tar-entry")
            .ok_or_else(|| p.err("the tar-entry parameter is required"))?;
        let limit = p.take_size("tar-limit")?.unwrap_or(0);
        Ok(window::filter(NAME, move |next: &dyn Backend| {
            locate(next, &entry, limit)
        }))
    },
};

/// The byte range (start, length) of the data of `entry` in the tar file
/// `next`, searching headers that start before `limit` (0: anywhere).
fn locate(next: &dyn Backend, entry: &str, limit: u64) -> Result<(u64, u64)> {
    let size = size_below(NAME, next)?;
    let want = entry.trim_start_matches("./");
    let mut pos = 0u64;
    let mut long_name: Option<String> = None;
    while pos + 512 <= size && (limit == 0 || pos < limit) {
        let h = read_at(NAME, next, pos, 512)?;
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u64
                }
            })
            .sum();
        if tar_num(&h[148..156]) != Some(sum) {
            return Err(fail(
                NAME,
                format!("not a tar file (bad header checksum at {pos})"),
            ));
        }
        let len = tar_num(&h[124..136])
            .ok_or_else(|| fail(NAME, format!("bad size in tar header at {pos}")))?;
        let data = pos + 512;
        let kind = h[156];
        let cstr = |b: &[u8]| {
            let e = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..e]).into_owned()
        };
        match kind {
            b'L' => {
                let n = read_at(NAME, next, data, len.min(1 << 16) as usize)?;
                long_name = Some(cstr(&n));
            }
            b'x' => {
                let rec = read_at(NAME, next, data, len.min(1 << 20) as usize)?;
                for line in String::from_utf8_lossy(&rec).split('\n') {
                    if let Some(i) = line.find(" path=") {
                        long_name = Some(line[i + 6..].to_string());
                    }
                }
            }
            _ => {
                let mut name = cstr(&h[0..100]);
                if &h[257..262] == b"ustar" && h[345] != 0 {
                    name = format!("{}/{name}", cstr(&h[345..500]));
                }
                let name = long_name.take().unwrap_or(name);
                if name.trim_start_matches("./") == want && matches!(kind, 0 | b'0' | b'7') {
                    return Ok((data, len));
                }
            }
        }
        pos = data + len.div_ceil(512) * 512;
    }
    Err(fail(NAME, format!("{entry}: not found in the tar file")))
}

/// A tar numeric field: octal text, or base-256 when the top bit is set.
fn tar_num(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v = (f[0] & 0x7f) as u64;
        for &b in &f[1..] {
            v = v.checked_mul(256)? | b as u64;
        }
        return Some(v);
    }
    let s: String = f
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nbd_core::server::backend::{Backend, Result};

    use super::tar_num;
    use crate::chain::testing::{filter_over, info};
    use crate::chain::Opened;
    use crate::plugins::memory::Memory;

    fn open(mem: &Arc<Memory>, entry: &str) -> Result<Opened> {
        filter_over(
            &super::FILTER,
            &[("tar-entry", entry)],
            Arc::clone(mem) as _,
        )
        .open(info())
    }

    /// A ustar header for a regular file.
    fn header(name: &str, len: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{len:011o}").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    #[test]
    fn finds_an_entry_and_serves_it_in_place() {
        let mem = Arc::new(Memory::new(1 << 20));
        mem.pwrite(&header("a.txt", 5), 0, false).unwrap();
        mem.pwrite(b"hello", 512, false).unwrap();
        mem.pwrite(&header("disk.img", 1024), 1024, false).unwrap();
        mem.pwrite(&[7u8; 1024], 1536, false).unwrap();
        let c = open(&mem, "./disk.img").unwrap();
        assert_eq!(c.size().unwrap(), 1024);
        let mut b = [0u8; 4];
        c.pread(&mut b, 1020).unwrap();
        assert_eq!(b, [7; 4]);
        c.pwrite(b"new", 0, false).unwrap();
        mem.pread(&mut b[..3], 1536).unwrap();
        assert_eq!(&b[..3], b"new");
        assert_eq!(open(&mem, "a.txt").unwrap().size().unwrap(), 5);
        let e = open(&mem, "missing").err().unwrap();
        assert_eq!(e.message, "tar: missing: not found in the tar file");
        assert_eq!(tar_num(b"0000012\0"), Some(10));
        assert_eq!(tar_num(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
    }
}
