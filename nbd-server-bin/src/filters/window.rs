//! Filters that serve a window of the layer below: offset (offset=,
//! range=), partition (partition=N of an MBR or GPT table), tar
//! (tar-entry=, a file inside an uncompressed tar), and truncate, which
//! changes the size.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, Error, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use super::super::{parse_size, Params};
use super::extents_at;

/// `len` bytes of `inner` starting at `start`.
pub struct Window {
    inner: Arc<dyn Backend>,
    start: u64,
    len: u64,
    name: &'static str,
}

fn inner_size(p: &Params, inner: &dyn Backend) -> std::result::Result<u64, String> {
    inner
        .size()
        .map_err(|e| p.err(format!("size of the layer below: {e}")))
}

fn read_at(
    p: &Params,
    inner: &dyn Backend,
    offset: u64,
    len: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut b = vec![0u8; len];
    inner
        .pread(&mut b, offset)
        .map_err(|e| p.err(format!("read at {offset}: {e}")))?;
    Ok(b)
}

fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default()) as u64
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

impl Window {
    fn new(
        p: &Params,
        inner: Arc<dyn Backend>,
        start: u64,
        len: u64,
        name: &'static str,
    ) -> std::result::Result<Window, String> {
        let size = inner_size(p, &*inner)?;
        if start.checked_add(len).filter(|&e| e <= size).is_none() {
            return Err(p.err(format!(
                "the range {start}+{len} goes beyond the end of the disk ({size} bytes)"
            )));
        }
        Ok(Window {
            inner,
            start,
            len,
            name,
        })
    }

    /// offset filter: `offset=` (default 0) and `range=` (default: to the end).
    pub fn offset(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Window, String> {
        let offset = p.take_size("offset")?.unwrap_or(0);
        let range = p.take_size("range")?;
        let size = inner_size(p, &*inner)?;
        let len = match range {
            Some(r) => r,
            None => size.checked_sub(offset).ok_or_else(|| {
                p.err(format!(
                    "offset {offset} is beyond the end of the disk ({size} bytes)"
                ))
            })?,
        };
        Window::new(p, inner, offset, len, "offset")
    }

    /// partition filter: `partition=N`, 1-based, of an MBR (primary
    /// partitions 1-4) or GPT table, 512-byte sectors.
    pub fn partition(
        p: &mut Params,
        inner: Arc<dyn Backend>,
    ) -> std::result::Result<Window, String> {
        let n = p
            .take("partition")
            .ok_or_else(|| p.err("the partition parameter is required (eg. partition=1)"))?;
        let n: usize = match n.parse() {
            Ok(n) if n >= 1 => n,
            _ => return Err(p.err(format!("could not parse partition number: {n}"))),
        };
        let size = inner_size(p, &*inner)?;
        if size < 512 {
            return Err(p.err("disk is too small to contain a partition table"));
        }
        let mbr = read_at(p, &*inner, 0, 512)?;
        if mbr[510] != 0x55 || mbr[511] != 0xaa {
            return Err(p.err("disk does not contain an MBR or GPT partition table"));
        }
        let is_gpt = (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xee)
            && size >= 1024
            && read_at(p, &*inner, 512, 8)? == b"EFI PART";
        let (first, count) = if is_gpt {
            let h = read_at(p, &*inner, 512, 92)?;
            let entries_lba = le64(&h, 72);
            let num = le32(&h, 80) as usize;
            let esize = le32(&h, 84) as usize;
            if esize < 128 || num > 4096 {
                return Err(p.err("invalid GPT header"));
            }
            if n > num {
                return Err(p.err(format!(
                    "partition {n} does not exist (GPT has {num} entries)"
                )));
            }
            let e = read_at(
                p,
                &*inner,
                entries_lba * 512 + ((n - 1) * esize) as u64,
                esize,
            )?;
            if e[..16].iter().all(|&b| b == 0) {
                return Err(p.err(format!("partition {n} does not exist")));
            }
            let (f, l) = (le64(&e, 32), le64(&e, 40));
            if l < f {
                return Err(p.err(format!("partition {n} has an invalid range")));
            }
            (f, l - f + 1)
        } else {
            if n > 4 {
                return Err(p.err(format!(
                    "partition {n}: only primary MBR partitions (1-4) are supported"
                )));
            }
            let e = &mbr[446 + 16 * (n - 1)..446 + 16 * n];
            if e[4] == 0 || le32(e, 12) == 0 {
                return Err(p.err(format!("partition {n} does not exist")));
            }
            if matches!(e[4], 0x05 | 0x0f | 0x85) {
                return Err(p.err(format!("partition {n} is an extended partition")));
            }
            (le32(e, 8), le32(e, 12))
        };
        Window::new(p, inner, first * 512, count * 512, "partition")
    }

    /// tar filter: `tar-entry=NAME` inside an uncompressed tar (ustar,
    /// GNU long names and pax path records understood).
    pub fn tar(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Window, String> {
        let entry = p
            .take("tar-entry")
            .ok_or_else(|| p.err("the tar-entry parameter is required"))?;
        let limit = p.take_size("tar-limit")?.unwrap_or(0);
        let size = inner_size(p, &*inner)?;
        let want = entry.trim_start_matches("./");
        let mut pos = 0u64;
        let mut long_name: Option<String> = None;
        while pos + 512 <= size && (limit == 0 || pos < limit) {
            let h = read_at(p, &*inner, pos, 512)?;
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
                return Err(p.err(format!("not a tar file (bad header checksum at {pos})")));
            }
            let len = tar_num(&h[124..136])
                .ok_or_else(|| p.err(format!("bad size in tar header at {pos}")))?;
            let data = pos + 512;
            let kind = h[156];
            let cstr = |b: &[u8]| {
                let e = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..e]).into_owned()
            };
            match kind {
                b'L' => {
                    let n = read_at(p, &*inner, data, len.min(1 << 16) as usize)?;
                    long_name = Some(cstr(&n));
                }
                b'x' => {
                    let rec = read_at(p, &*inner, data, len.min(1 << 20) as usize)?;
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
                        return Window::new(p, inner, data, len, "tar");
                    }
                }
            }
            pos = data + len.div_ceil(512) * 512;
        }
        Err(p.err(format!("{entry}: not found in the tar file")))
    }
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

impl Backend for Window {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn name(&self) -> &str {
        self.name
    }
    fn size(&self) -> Result<u64> {
        Ok(self.len)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.pread(buf, offset + self.start)
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        self.inner.pread_lend(count, offset + self.start, send)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.inner.pwrite(buf, offset + self.start, fua)
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.inner.trim(count, offset + self.start, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.inner.zero(count, offset + self.start, flags)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.inner.cache(count, offset + self.start)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        extents_at(&*self.inner, count, offset + self.start, offset, sink)
    }
}

/// truncate filter: `truncate=SIZE`, `round-up=N`, `round-down=N`. Reads
/// past the real end are zeroes; writes there must be zeroes (else
/// ENOSPC); trim and zero there do nothing.
pub struct Truncate {
    inner: Arc<dyn Backend>,
    real: u64,
    size: u64,
}

impl Truncate {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Truncate, String> {
        let t = p.take_size("truncate")?;
        let up = p.take_size("round-up")?;
        let down = p.take_size("round-down")?;
        for (k, v) in [("round-up", up), ("round-down", down)] {
            if let Some(v) = v {
                if v == 0 || !v.is_power_of_two() {
                    return Err(p.err(format!("{k} must be a power of 2: {v}")));
                }
            }
        }
        let real = inner_size(p, &*inner)?;
        let mut size = t.unwrap_or(real);
        if let Some(u) = up {
            size = size.div_ceil(u) * u;
        }
        if let Some(d) = down {
            size = size / d * d;
        }
        let _ = parse_size;
        Ok(Truncate { inner, real, size })
    }

    /// The part of `[offset, offset+len)` inside the real disk.
    fn split(&self, offset: u64, len: u64) -> u64 {
        self.real.saturating_sub(offset).min(len)
    }
}

impl Backend for Truncate {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = self.split(offset, buf.len() as u64) as usize;
        if n > 0 {
            self.inner.pread(&mut buf[..n], offset)?;
        }
        buf[n..].fill(0);
        Ok(())
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        if self.split(offset, count as u64) == count as u64 {
            self.inner.pread_lend(count, offset, send)
        } else {
            None
        }
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let n = self.split(offset, buf.len() as u64) as usize;
        if buf[n..].iter().any(|&b| b != 0) {
            return Err(Error::new(
                libc::ENOSPC,
                "truncate: write beyond the end of the underlying disk",
            ));
        }
        if n > 0 {
            self.inner.pwrite(&buf[..n], offset, fua)?;
        }
        Ok(())
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        match self.split(offset, count as u64) {
            0 => Ok(()),
            n => self.inner.trim(n as u32, offset, fua),
        }
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        match self.split(offset, count as u64) {
            0 => Ok(()),
            n => self.inner.zero(n as u32, offset, flags),
        }
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        match self.split(offset, count as u64) {
            0 => Ok(()),
            n => self.inner.cache(n as u32, offset),
        }
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let n = self.split(offset, count as u64);
        if n > 0 {
            extents_at(&*self.inner, n as u32, offset, offset, sink)?;
        }
        if n < count as u64 {
            sink.add(
                offset + n,
                count as u64 - n,
                allocation::HOLE | allocation::ZERO,
            )?;
        }
        Ok(())
    }
}
