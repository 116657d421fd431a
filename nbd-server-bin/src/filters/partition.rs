//! The partition filter: serves one partition (`partition=N`, 1-based) of
//! a disk with an MBR (primary partitions 1-4) or GPT partition table, in
//! 512-byte sectors, as nbdkit-partition-filter(1). The table is read
//! when a connection opens the filter.

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
    } else {
        if n > 4 {
            return Err(fail(
                NAME,
                format!("partition {n}: only primary MBR partitions (1-4) are supported"),
            ));
        }
        let e = &mbr[446 + 16 * (n - 1)..446 + 16 * n];
        if e[4] == 0 || le32(e, 12) == 0 {
            return Err(fail(NAME, format!("partition {n} does not exist")));
        }
        if matches!(e[4], 0x05 | 0x0f | 0x85) {
            return Err(fail(
                NAME,
                format!("partition {n} is an extended partition"),
            ));
        }
        (le32(e, 8), le32(e, 12))
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
        let e = open(&mem, "5").err().unwrap();
        assert!(e.message.contains("primary"), "{e}");

        let blank = Arc::new(Memory::new(1 << 20));
        let e = open(&blank, "1").err().unwrap();
        assert!(e.message.contains("partition table"), "{e}");

        let mut p = Params::new("partition", vec![("partition".into(), "0".into())]);
        let e = (super::FILTER.open)(&mut p, false).err().unwrap();
        assert_eq!(e, "partition: could not parse partition number: 0");
    }
}
