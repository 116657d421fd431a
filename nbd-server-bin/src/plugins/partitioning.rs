//! The partitioning plugin: a virtual disk whose partitions are files,
//! under a partition table made up for them
//! (nbdkit-partitioning-plugin(1)).
//!
//! The disk is laid out once, at start-up, as a list of regions: the
//! table (one sector for MBR; for GPT a protective MBR, the header and
//! the entry array), then each file, preceded by zero padding up to its
//! alignment (`alignment=`, default 1 MiB) and followed by padding up to
//! a whole sector, and for GPT the backup array and header at the end.
//! With `partition-type=mbr` and more than four files, the fourth primary
//! entry is an extended partition and every file from the fourth on is a
//! logical partition behind its own EBR sector. `mbr-id=` and
//! `type-guid=` set the type of the files after them, as `alignment=`
//! does. Without `partition-type=` the table is MBR unless there are
//! more than four files or the files are too big for MBR.
//!
//! GPT's unique partition GUIDs are random, from the same generator as
//! nbdkit's (xoshiro256** seeded with the time at start-up, one byte per
//! number), so a disk made in the same second is the same byte for byte.
//!
//! Writes reach the files; a write to the table or to padding fails with
//! EIO unless it leaves the bytes as they are. Zeroing writes zeroes
//! (so fast zero is refused), flush syncs every file, and FUA is a flush.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result, ZeroFlags};

use crate::chain::Plugin;
use crate::params::{parse_size, Params};

use super::prng::Xoshiro;
use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "partitioning",
    magic: Some("file"),
    params: &[
        (
            "file",
            "a file holding one partition (repeatable, in order)",
        ),
        ("partition-type", "the partition table: mbr (or dos) or gpt"),
        (
            "alignment",
            "the alignment of the files after it (default 1M)",
        ),
        (
            "mbr-id",
            "the MBR type byte of the files after it (0xN or default)",
        ),
        (
            "type-guid",
            "the GPT type GUID of the files after it (GUID or default)",
        ),
    ],
    open: |p, ro| Ok(Arc::new(Partitioning::open(p, ro)?)),
};

const SECTOR: u64 = 512;
const MAX_ALIGNMENT: u64 = 2048 * SECTOR;
const DEFAULT_MBR_ID: u8 = 0x83;
const DEFAULT_TYPE_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// About the most an MBR can address (2^32 sectors), less room for
/// padding between partitions.
const MAX_MBR_DISK_SIZE: u64 = u32::MAX as u64 * SECTOR - 5 * MAX_ALIGNMENT;
/// GPT entries: the array grows by this many, of this size each.
const GPT_MIN_ENTRIES: u64 = 128;
const GPT_ENTRY_SIZE: u64 = 128;
/// The header's 92 bytes, and 4 of padding: nbdkit states and checksums
/// the size of its C structure, 96.
const GPT_HEADER_SIZE: usize = 96;

struct Part {
    name: String,
    file: File,
    size: u64,
    alignment: u64,
    mbr_id: u8,
    type_guid: [u8; 16],
    unique_guid: [u8; 16],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The i'th file.
    File(usize),
    /// Bytes of `Partitioning::tables`, from this offset.
    Data(usize),
    Zero,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    start: u64,
    len: u64,
    kind: Kind,
}

impl Region {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Builds the list of regions.
#[derive(Default)]
struct Layout {
    regions: Vec<Region>,
}

impl Layout {
    fn size(&self) -> u64 {
        self.regions.last().map_or(0, Region::end)
    }

    fn pad_to(&mut self, alignment: u64) {
        let at = self.size();
        let up = at.div_ceil(alignment) * alignment;
        if up > at {
            self.regions.push(Region {
                start: at,
                len: up - at,
                kind: Kind::Zero,
            });
        }
    }

    /// Appends `len` bytes of `kind`, starting on a multiple of `before`
    /// and padded to a multiple of `after`.
    fn push(&mut self, len: u64, before: u64, after: u64, kind: Kind) -> Region {
        self.pad_to(before);
        let r = Region {
            start: self.size(),
            len,
            kind,
        };
        self.regions.push(r);
        self.pad_to(after);
        r
    }
}

pub struct Partitioning {
    parts: Vec<Part>,
    regions: Vec<Region>,
    /// The tables' bytes (MBR or GPT primary, EBRs, GPT secondary), which
    /// `Kind::Data` regions point into.
    tables: Vec<u8>,
    writable: bool,
}

/// Parses a GUID as text (`XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`, in
/// braces or not) into its on-disk form: the first three groups little
/// endian, the last two as written.
pub(super) fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let s = match s.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => s,
    };
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let byte =
        |i: usize| u8::from_str_radix(std::str::from_utf8(&hex[2 * i..2 * i + 2]).ok()?, 16).ok();
    let mut raw = [0u8; 16];
    for (i, r) in raw.iter_mut().enumerate() {
        *r = byte(i)?;
    }
    let mut g = raw;
    g[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    g[4..6].copy_from_slice(&[raw[5], raw[4]]);
    g[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(g)
}

/// An unsigned number as C's strtoul with base 0 reads it (0x for hex, a
/// leading 0 for octal), no larger than `max`, in nbdkit's words.
fn parse_uint(key: &str, v: &str, max: u64) -> std::result::Result<u64, String> {
    let t = v.trim_start();
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if t.starts_with('-') {
        return Err(format!(
            "{key}: could not parse number: \"{v}\": negative values are not allowed"
        ));
    }
    if end == 0 && radix != 8 {
        return Err(format!("{key}: empty string where we expected a number"));
    }
    if end < digits.len() {
        return Err(format!(
            "{key}: could not parse number: \"{v}\": trailing garbage"
        ));
    }
    let n = if end == 0 {
        0
    } else {
        u64::from_str_radix(digits, radix).unwrap_or(u64::MAX)
    };
    if n > max {
        return Err(format!(
            "{key}: could not parse number: \"{v}\": Numerical result out of range"
        ));
    }
    Ok(n)
}

/// The CRC-32 of GPT headers and arrays (the zlib one).
pub(super) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// One 16-byte MBR entry for `sectors` sectors from sector `start`. The
/// CHS fields say "too large", as for any modern disk.
fn mbr_entry(out: &mut [u8], bootable: bool, id: u8, start: u64, len: u64) {
    let chs = [254u8, 0xff, 0xff];
    out[0] = if bootable { 0x80 } else { 0 };
    out[1..4].copy_from_slice(&chs);
    out[4] = id;
    out[5..8].copy_from_slice(&chs);
    out[8..12].copy_from_slice(&((start / SECTOR) as u32).to_le_bytes());
    out[12..16].copy_from_slice(&(len.div_ceil(SECTOR) as u32).to_le_bytes());
}

impl Partitioning {
    fn open(p: &mut Params, readonly: bool) -> std::result::Result<Partitioning, String> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rng = Xoshiro::new(seed);
        let default_guid = parse_guid(DEFAULT_TYPE_GUID).unwrap_or_default();
        let mut alignment = MAX_ALIGNMENT;
        let mut mbr_id = DEFAULT_MBR_ID;
        let mut type_guid = default_guid;
        let mut gpt: Option<bool> = None;
        let mut parts = Vec::new();
        let keys = p.take_each(&["file", "partition-type", "alignment", "mbr-id", "type-guid"]);
        for (k, v) in keys {
            match k.as_str() {
                "file" => {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(!readonly)
                        .open(&v)
                        .map_err(|e| format!("{v}: {e}"))?;
                    let size = file
                        .metadata()
                        .map_err(|e| format!("{v}: stat: {e}"))?
                        .len();
                    if size == 0 {
                        return Err(format!("{v}: zero length partitions are not allowed"));
                    }
                    let mut unique_guid = [0u8; 16];
                    for b in &mut unique_guid {
                        *b = rng.next() as u8;
                    }
                    parts.push(Part {
                        name: v,
                        file,
                        size,
                        alignment,
                        mbr_id,
                        type_guid,
                        unique_guid,
                    });
                }
                "partition-type" => {
                    gpt = Some(match v.to_ascii_lowercase().as_str() {
                        "mbr" | "dos" => false,
                        "gpt" => true,
                        _ => return Err(format!("unknown partition-type: {v}")),
                    })
                }
                "alignment" => {
                    let a = parse_size(&v)?;
                    if !(SECTOR..=MAX_ALIGNMENT).contains(&a) {
                        return Err(format!(
                            "partition alignment {a} should be >= sector size {SECTOR} \
                             and <= maximum alignment {MAX_ALIGNMENT}"
                        ));
                    }
                    if !a.is_multiple_of(SECTOR) {
                        return Err(format!(
                            "partition alignment {a} should be a multiple of sector size {SECTOR}"
                        ));
                    }
                    // nbdkit 1.32 aborts on this (an assertion); we say why.
                    if !a.is_power_of_two() {
                        return Err(format!("partition alignment {a} should be a power of 2"));
                    }
                    alignment = a;
                }
                "mbr-id" => {
                    mbr_id = if v.eq_ignore_ascii_case("default") {
                        DEFAULT_MBR_ID
                    } else {
                        parse_uint("mbr-id", &v, 255)? as u8
                    }
                }
                _ => {
                    type_guid = if v.eq_ignore_ascii_case("default") {
                        default_guid
                    } else {
                        parse_guid(&v).ok_or_else(|| format!("could not validate GUID: {v}"))?
                    }
                }
            }
        }
        if parts.is_empty() {
            return Err("at least one file= parameter must be supplied".into());
        }
        let total: u64 = parts.iter().map(|p| p.size).sum();
        let needs_gpt = total > MAX_MBR_DISK_SIZE;
        let gpt = match gpt {
            None => needs_gpt || parts.len() > 4,
            Some(false) if needs_gpt => {
                return Err(format!(
                    "MBR partition table type supports a maximum virtual disk size of \
                     about 2 TB, but you requested {} partition(s) and a total size of \
                     {total} bytes (> {MAX_MBR_DISK_SIZE}).  Try using: partition-type=gpt",
                    parts.len()
                ))
            }
            Some(g) => g,
        };
        let (regions, tables) = if gpt {
            layout_gpt(&parts)
        } else {
            layout_mbr(&parts)
        };
        Ok(Partitioning {
            parts,
            regions,
            tables,
            writable: !readonly,
        })
    }

    /// The region holding `offset` (which is below the size).
    fn region(&self, offset: u64) -> &Region {
        let i = self.regions.partition_point(|r| r.end() <= offset);
        &self.regions[i]
    }

    /// Calls `f(region, offset in region, range of the request)` for each
    /// piece of `len` bytes at `offset`.
    fn each(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&Region, u64, std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let r = self.region(at);
            let n = ((r.end() - at) as usize).min(len - done);
            f(r, at - r.start, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

/// An MBR (with EBRs past four files): the table bytes are the MBR
/// sector, then one sector per EBR.
fn layout_mbr(parts: &[Part]) -> (Vec<Region>, Vec<u8>) {
    let logical = parts.len() > 4;
    let nebr = if logical { parts.len() - 3 } else { 0 };
    let mut tables = vec![0u8; SECTOR as usize * (1 + nebr)];
    let mut l = Layout::default();
    l.push(SECTOR, 1, 1, Kind::Data(0));
    let mut files = Vec::new();
    let mut ebrs = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if logical && i >= 3 {
            let at = SECTOR as usize * (1 + i - 3);
            ebrs.push(l.push(SECTOR, 1, 1, Kind::Data(at)));
        }
        files.push(l.push(p.size, p.alignment, SECTOR, Kind::File(i)));
    }
    let size = l.size();
    let (mbr, ebr_bytes) = tables.split_at_mut(SECTOR as usize);
    mbr[0x1fe] = 0x55;
    mbr[0x1ff] = 0xaa;
    for (i, (p, r)) in parts
        .iter()
        .zip(&files)
        .take(if logical { 3 } else { 4 })
        .enumerate()
    {
        let at = 0x1be + 16 * i;
        mbr_entry(&mut mbr[at..at + 16], i == 0, p.mbr_id, r.start, r.len);
    }
    if logical {
        let first = ebrs[0].start;
        mbr_entry(&mut mbr[0x1ee..0x1fe], false, 0x0f, first, size - first);
        for (j, ebr) in ebr_bytes.chunks_mut(SECTOR as usize).enumerate() {
            let i = j + 3;
            ebr[0x1fe] = 0x55;
            ebr[0x1ff] = 0xaa;
            let (e, f) = (ebrs[j], files[i]);
            mbr_entry(
                &mut ebr[0x1be..0x1ce],
                false,
                parts[i].mbr_id,
                f.start - e.start,
                f.len,
            );
            if i + 1 < parts.len() {
                let (ne, nf) = (ebrs[j + 1], files[i + 1]);
                mbr_entry(
                    &mut ebr[0x1ce..0x1de],
                    false,
                    0x0f,
                    ne.start - first,
                    nf.end() - ne.start,
                );
            }
        }
    }
    (l.regions, tables)
}

/// GPT: the table bytes are the primary (protective MBR, header, array)
/// then the secondary (array, header).
fn layout_gpt(parts: &[Part]) -> (Vec<Region>, Vec<u8>) {
    let entries = (parts.len() as u64).div_ceil(GPT_MIN_ENTRIES) * GPT_MIN_ENTRIES;
    let array_sectors = entries * GPT_ENTRY_SIZE / SECTOR;
    let primary_len = (2 + array_sectors) * SECTOR;
    let secondary_len = (array_sectors + 1) * SECTOR;
    let mut l = Layout::default();
    l.push(primary_len, 1, 1, Kind::Data(0));
    let files: Vec<Region> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| l.push(p.size, p.alignment, SECTOR, Kind::File(i)))
        .collect();
    l.push(secondary_len, 1, 1, Kind::Data(primary_len as usize));
    let size = l.size();
    let lbas = size / SECTOR;

    // The entry array, the same in both copies.
    let mut array = vec![0u8; (entries * GPT_ENTRY_SIZE) as usize];
    for (i, (p, r)) in parts.iter().zip(&files).enumerate() {
        let e = &mut array[i * GPT_ENTRY_SIZE as usize..(i + 1) * GPT_ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid);
        e[16..32].copy_from_slice(&p.unique_guid);
        e[32..40].copy_from_slice(&(r.start / SECTOR).to_le_bytes());
        e[40..48].copy_from_slice(&((r.end() - 1) / SECTOR).to_le_bytes());
        e[48..56].copy_from_slice(&(if i == 0 { 4u64 } else { 0 }).to_le_bytes());
        // The name: the file's name as given, each byte widened to
        // UTF-16LE, when it fits (nbdkit's choice, kept byte for byte).
        let name = p.name.as_bytes();
        if name.len() < 36 {
            for (j, &c) in name.iter().enumerate() {
                e[56 + 2 * j] = c;
            }
        }
    }
    let array_crc = crc32(&array);
    let header = |primary: bool| {
        let mut h = [0u8; GPT_HEADER_SIZE];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&[0, 0, 1, 0]);
        h[12..16].copy_from_slice(&(GPT_HEADER_SIZE as u32).to_le_bytes());
        let (current, backup, array_lba) = if primary {
            (1, lbas - 1, 2)
        } else {
            (lbas - 1, 1, lbas - array_sectors - 1)
        };
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + array_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(lbas - array_sectors - 2).to_le_bytes());
        // The disk GUID (56..72) stays zero, as nbdkit leaves it.
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(entries as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut tables = vec![0u8; (primary_len + secondary_len) as usize];
    // The protective MBR: one 0xee partition over as much of the disk as
    // an MBR can say.
    let pend = (size - 1).min(u32::MAX as u64 * SECTOR);
    mbr_entry(
        &mut tables[0x1be..0x1ce],
        false,
        0xee,
        SECTOR,
        pend - SECTOR + 1,
    );
    tables[0x1fe] = 0x55;
    tables[0x1ff] = 0xaa;
    let s = SECTOR as usize;
    tables[s..s + GPT_HEADER_SIZE].copy_from_slice(&header(true));
    tables[2 * s..2 * s + array.len()].copy_from_slice(&array);
    let sec = primary_len as usize;
    tables[sec..sec + array.len()].copy_from_slice(&array);
    let hdr = sec + array.len();
    tables[hdr..hdr + GPT_HEADER_SIZE].copy_from_slice(&header(false));
    (l.regions, tables)
}

impl Backend for Partitioning {
    fn size(&self) -> Result<u64> {
        Ok(self.regions.last().map_or(0, Region::end))
    }
    fn can_write(&self) -> Result<bool> {
        Ok(self.writable)
    }
    supports!(
        can_flush,
        can_fua,
        can_zero,
        can_fast_zero,
        can_multi_conn,
        can_cache
    );

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.each(offset, buf.len(), |r, at, range| {
            let out = &mut buf[range];
            match r.kind {
                Kind::File(i) => {
                    let p = &self.parts[i];
                    p.file.read_exact_at(out, at).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            Error::new(
                                libc::EIO,
                                format!("pread: {}: unexpected end of file", p.name),
                            )
                        } else {
                            os_err(&format!("pread: {}", p.name), e)
                        }
                    })?
                }
                Kind::Data(d) => {
                    let from = d + at as usize;
                    out.copy_from_slice(&self.tables[from..from + out.len()]);
                }
                Kind::Zero => out.fill(0),
            }
            Ok(())
        })
    }

    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.each(offset, buf.len(), |r, at, range| {
            let data = &buf[range];
            match r.kind {
                Kind::File(i) => {
                    let p = &self.parts[i];
                    p.file
                        .write_all_at(data, at)
                        .map_err(|e| os_err(&format!("pwrite: {}", p.name), e))?
                }
                Kind::Data(d) => {
                    let from = d + at as usize;
                    if self.tables[from..from + data.len()] != *data {
                        return Err(Error::new(
                            libc::EIO,
                            "attempt to change partition table of virtual disk",
                        ));
                    }
                }
                Kind::Zero => {
                    if data.iter().any(|&b| b != 0) {
                        return Err(Error::new(libc::EIO, "write non-zeroes to padding region"));
                    }
                }
            }
            Ok(())
        })?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        for p in &self.parts {
            p.file.sync_data().map_err(|e| os_err("fdatasync", e))?;
        }
        Ok(())
    }

    /// Written as zeroes, as nbdkit emulates it for this plugin.
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "fast zero not supported"));
        }
        crate::filters::zeroes::write_zeroes(self, count, offset, flags.fua)
    }
}

fn os_err(what: &str, e: std::io::Error) -> Error {
    Error::new(
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("{what}: {e}"),
    )
}

/// The same disk for every connection.
impl Plugin for Partitioning {
    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_numbers_crc() {
        let g = parse_guid(DEFAULT_TYPE_GUID).unwrap();
        assert_eq!(
            g,
            [
                0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
                0x7d, 0xe4
            ]
        );
        assert_eq!(parse_guid(&format!("{{{DEFAULT_TYPE_GUID}}}")), Some(g));
        assert_eq!(parse_guid("xyz"), None);
        assert_eq!(parse_guid("0FC63DAF-8483-4772-8E79+3D69D8477DE4"), None);
        assert_eq!(parse_uint("mbr-id", "0x82", 255), Ok(0x82));
        assert_eq!(parse_uint("mbr-id", "130", 255), Ok(130));
        assert_eq!(parse_uint("mbr-id", "010", 255), Ok(8));
        assert_eq!(parse_uint("mbr-id", "0", 255), Ok(0));
        assert!(parse_uint("mbr-id", "300", 255)
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_uint("mbr-id", "abc", 255)
            .unwrap_err()
            .contains("empty string"));
        assert!(parse_uint("mbr-id", "0x82z", 255)
            .unwrap_err()
            .contains("trailing garbage"));
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn layout_pads_and_aligns() {
        let mut l = Layout::default();
        l.push(512, 1, 1, Kind::Data(0));
        let f = l.push(3000, 4096, 512, Kind::File(0));
        assert_eq!((f.start, f.len), (4096, 3000));
        assert_eq!(l.size(), 4096 + 3072);
        assert_eq!(l.regions[1].kind, Kind::Zero);
        assert_eq!(l.regions.len(), 4);
    }
}
