//! A disk with a single partition, from sector 2048 (1 MiB), as the
//! linuxdisk plugin (GPT) and the floppy plugin (MBR) serve their
//! filesystems: the table is written into an image file whose partition
//! the caller has already filled.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::partitioning::{crc32, parse_guid};

pub const SECTOR: u64 = 512;
/// Where the partition starts: 1 MiB, the alignment every partitioning
/// tool uses now.
pub const START: u64 = 2048;
/// Sectors the backup GPT takes at the end: its 32 sectors of entries and
/// its header.
pub const GPT_TAIL: u64 = 33;

const GPT_ENTRIES: u64 = 128;
const GPT_ENTRY_SIZE: u64 = 128;
/// GPT attribute bit 2: legacy BIOS bootable, as nbdkit sets it.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

fn io(what: &str, e: std::io::Error) -> String {
    format!("{what}: {e}")
}

/// 16 random bytes as a version-4 GUID.
fn random_guid() -> [u8; 16] {
    let mut g = [0u8; 16];
    if let Ok(f) = File::open("/dev/urandom") {
        let _ = f.read_exact_at(&mut g, 0);
    }
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// A 16-byte MBR partition entry; the CHS fields say "too large".
fn mbr_entry(kind: u8, start: u64, sectors: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[1..4].copy_from_slice(&[254, 0xff, 0xff]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[254, 0xff, 0xff]);
    e[8..12].copy_from_slice(&(start.min(u32::MAX as u64) as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(sectors.min(u32::MAX as u64) as u32).to_le_bytes());
    e
}

fn write_mbr(disk: &File, entry: [u8; 16]) -> Result<(), String> {
    let mut mbr = [0u8; 512];
    mbr[446..462].copy_from_slice(&entry);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    disk.write_all_at(&mbr, 0).map_err(|e| io("pwrite", e))
}

/// An MBR whose one partition, of type `kind`, is `sectors` long from
/// sector 2048.
pub fn write_mbr_one(disk: &File, kind: u8, sectors: u64) -> Result<(), String> {
    write_mbr(disk, mbr_entry(kind, START, sectors))
}

/// A protective MBR and both GPTs for a disk of `total` sectors whose one
/// partition, of type `type_guid`, is `sectors` long from sector 2048.
pub fn write_gpt_one(disk: &File, total: u64, type_guid: &str, sectors: u64) -> Result<(), String> {
    let kind = parse_guid(type_guid).ok_or_else(|| format!("bad GUID {type_guid}"))?;
    write_mbr(disk, mbr_entry(0xee, 1, total - 1))?;
    let mut entries = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
    entries[0..16].copy_from_slice(&kind);
    entries[16..32].copy_from_slice(&random_guid());
    entries[32..40].copy_from_slice(&START.to_le_bytes());
    entries[40..48].copy_from_slice(&(START + sectors - 1).to_le_bytes());
    entries[48..56].copy_from_slice(&LEGACY_BIOS_BOOTABLE.to_le_bytes());
    let entries_crc = crc32(&entries);
    let disk_guid = random_guid();
    let header = |mine: u64, other: u64, table: u64| {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&mine.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(total - GPT_TAIL - 1).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&table.to_le_bytes());
        h[80..84].copy_from_slice(&(GPT_ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(GPT_ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let last = total - 1;
    disk.write_all_at(&header(1, last, 2), SECTOR)
        .and_then(|()| disk.write_all_at(&entries, 2 * SECTOR))
        .and_then(|()| disk.write_all_at(&entries, (total - GPT_TAIL) * SECTOR))
        .and_then(|()| disk.write_all_at(&header(last, 1, total - GPT_TAIL), last * SECTOR))
        .map_err(|e| io("pwrite", e))
}
