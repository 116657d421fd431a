//! The partition filter: serves one partition (`partition=N`, 1-based) of
//! a disk with an MBR (primary partitions 1-4, logical ones from 5) or GPT
//! partition table, in 512-byte sectors, as nbdkit-partition-filter(1).
//! The table is read when a connection opens the filter.

use nbd_core::server::backend::{Backend, Result};

use super::window::{self, fail, read_at, size_below};
use super::FilterSpec;

const NAME: &str = "partition";

pub const FILTER: FilterSpec = FilterSpec {
    name: NAME,
    params: &[(
        "partition",
        "the number of the partition to serve, from 1 (required)",
    )],
    open: |p, _| {
        let n = p
            .take("partition")
            .ok_or_else(|| p.err("the partition parameter is required (eg. partition=1)"))?;
        let n: usize = match n.parse() {
            Ok(n) if n >= 1 => n,
            _ => return Err(p.err(format!("could not parse partition number: {n}"))),
        };
        Ok(window::filter(NAME, move |next: &dyn Backend| {
            locate(next, n)
        }))
    },
};

fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default()) as u64
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// The most logical partitions followed along an extended partition.
const MAX_LOGICAL: usize = 1024;

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

/// Logical partition `n` (5 and up) of an MBR disk, as (first sector,
/// sectors): the extended partition holds a chain of extended boot
/// records, one per logical partition. Each EBR's first entry is its
/// logical partition, relative to the EBR itself; its second entry points
/// to the next EBR, relative to the start of the extended partition.
fn logical(next: &dyn Backend, mbr: &[u8], n: usize) -> Result<(u64, u64)> {
    let missing = || fail(NAME, format!("partition {n} does not exist"));
    // A chain that loops back on itself would otherwise be walked for as
    // long as the number asked for; no real table has this many.
    if n > 4 + MAX_LOGICAL {
        return Err(missing());
    }
    let ext = (0..4)
        .map(|i| &mbr[446 + 16 * i..446 + 16 * (i + 1)])
        .find(|e| is_extended(e[4]) && le32(e, 12) != 0)
        .ok_or_else(missing)?;
    let ext_start = le32(ext, 8);
    let mut ebr_lba = ext_start;
    // Each step moves to the next logical partition; a chain longer than
    // the disk could hold, or one that loops, ends at the limit.
    for _ in 5..n {
        let ebr = read_at(NAME, next, ebr_lba * 512, 512)?;
        let link = &ebr[446 + 16..446 + 32];
        if ebr[510] != 0x55 || ebr[511] != 0xaa || link[4] == 0 || le32(link, 12) == 0 {
            return Err(missing());
        }
        ebr_lba = ext_start + le32(link, 8);
    }
    let ebr = read_at(NAME, next, ebr_lba * 512, 512)?;
    let e = &ebr[446..446 + 16];
    if ebr[510] != 0x55 || ebr[511] != 0xaa || e[4] == 0 || le32(e, 12) == 0 {
        return Err(missing());
    }
    Ok((ebr_lba + le32(e, 8), le32(e, 12)))
}

/// The byte range (start, length) of partition `n` of `next`.
fn locate(next: &dyn Backend, n: usize) -> Result<(u64, u64)> {
    let size = size_below(NAME, next)?;
    if size < 512 {
        return Err(fail(NAME, "disk is too small to contain a partition table"));
    }
    let mbr = read_at(NAME, next, 0, 512)?;
    if mbr[510] != 0x55 || mbr[511] != 0xaa {
        return Err(fail(
            NAME,
            "disk does not contain an MBR or GPT partition table",
        ));
    }
    let is_gpt = (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xee)
        && size >= 1024
        && read_at(NAME, next, 512, 8)? == b"EFI PART";
    let (first, count) = if is_gpt {
        let h = read_at(NAME, next, 512, 92)?;
        let entries_lba = le64(&h, 72);
        let num = le32(&h, 80) as usize;
        let esize = le32(&h, 84) as usize;
        if esize < 128 || num > 4096 {
            return Err(fail(NAME, "invalid GPT header"));
        }
        if n > num {
            return Err(fail(
                NAME,
                format!("partition {n} does not exist (GPT has {num} entries)"),
            ));
        }
        let e = read_at(
            NAME,
            next,
            entries_lba * 512 + ((n - 1) * esize) as u64,
            esize,
        )?;
        if e[..16].iter().all(|&b| b == 0) {
            return Err(fail(NAME, format!("partition {n} does not exist")));
        }
        let (f, l) = (le64(&e, 32), le64(&e, 40));
        if l < f {
            return Err(fail(NAME, format!("partition {n} has an invalid range")));
        }
        (f, l - f + 1)
    } else if n <= 4 {
        let e = &mbr[446 + 16 * (n - 1)..446 + 16 * n];
        if e[4] == 0 || le32(e, 12) == 0 {
            return Err(fail(NAME, format!("partition {n} does not exist")));
        }
        if is_extended(e[4]) {
            return Err(fail(
                NAME,
                format!("partition {n} is an extended partition"),
            ));
        }
        (le32(e, 8), le32(e, 12))
    } else {
        logical(next, &mbr, n)?
    };
    Ok((first * 512, count * 512))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nbd_core::server::backend::{Backend, Result};

    use crate::chain::testing::{filter_over, info};
    use crate::chain::Opened;
    use crate::params::Params;
    use crate::plugins::memory::Memory;

    fn open(mem: &Arc<Memory>, n: &str) -> Result<Opened> {
        filter_over(&super::FILTER, &[("partition", n)], Arc::clone(mem) as _).open(info())
    }

    /// A 16-byte MBR entry: type, first sector, sectors.
    fn mbr_entry(kind: u8, first: u32, count: u32) -> [u8; 16] {
        let mut e = [0u8; 16];
        e[4] = kind;
        e[8..12].copy_from_slice(&first.to_le_bytes());
        e[12..16].copy_from_slice(&count.to_le_bytes());
        e
    }

    #[test]
    fn mbr_partitions() {
        let mem = Arc::new(Memory::new(1 << 20));
        let mut mbr = [0u8; 512];
        mbr[446..462].copy_from_slice(&mbr_entry(0x83, 8, 16));
        mbr[462..478].copy_from_slice(&mbr_entry(0x05, 100, 16));
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        mem.pwrite(&mbr, 0, false).unwrap();
        mem.pwrite(b"part1", 8 * 512, false).unwrap();
        let c = open(&mem, "1").unwrap();
        assert_eq!(c.size().unwrap(), 16 * 512);
        let mut b = [0u8; 5];
        c.pread(&mut b, 0).unwrap();
        assert_eq!(&b, b"part1");
        let e = open(&mem, "2").err().unwrap();
        assert!(e.message.contains("extended"), "{e}");
        let e = open(&mem, "3").err().unwrap();
        assert_eq!(e.message, "partition: partition 3 does not exist");
        // Partition 2 is extended, from sector 100: logical 5 at 100+2,
        // logical 6 in the EBR at 100+40, at 140+2. Its link is empty, so
        // there is no 7.
        let mut ebr = [0u8; 512];
        ebr[446..462].copy_from_slice(&mbr_entry(0x83, 2, 4));
        ebr[462..478].copy_from_slice(&mbr_entry(0x05, 40, 8));
        ebr[510] = 0x55;
        ebr[511] = 0xaa;
        mem.pwrite(&ebr, 100 * 512, false).unwrap();
        ebr[462..478].fill(0);
        ebr[446..462].copy_from_slice(&mbr_entry(0x83, 2, 6));
        mem.pwrite(&ebr, 140 * 512, false).unwrap();
        mem.pwrite(b"five", 102 * 512, false).unwrap();
        mem.pwrite(b"six!", 142 * 512, false).unwrap();
        for (n, size, text) in [("5", 4, b"five"), ("6", 6, b"six!")] {
            let c = open(&mem, n).unwrap();
            assert_eq!(c.size().unwrap(), size * 512);
            let mut b = [0u8; 4];
            c.pread(&mut b, 0).unwrap();
            assert_eq!(&b, text);
        }
        let e = open(&mem, "7").err().unwrap();
        assert_eq!(e.message, "partition: partition 7 does not exist");
        // An EBR linking to itself ends at the limit, not in a long walk.
        ebr[462..478].copy_from_slice(&mbr_entry(0x05, 40, 8));
        mem.pwrite(&ebr, 140 * 512, false).unwrap();
        let e = open(&mem, "100000").err().unwrap();
        assert!(e.message.contains("does not exist"), "{e}");

        let blank = Arc::new(Memory::new(1 << 20));
        let e = open(&blank, "1").err().unwrap();
        assert!(e.message.contains("partition table"), "{e}");

        let mut p = Params::new("partition", vec![("partition".into(), "0".into())]);
        let e = (super::FILTER.open)(&mut p, false).err().unwrap();
        assert_eq!(e, "partition: could not parse partition number: 0");
    }
}
