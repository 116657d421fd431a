//! The floppy plugin: a read-only disk holding a FAT32 filesystem with
//! the files of a directory, in the one partition of an MBR
//! (nbdkit-floppy-plugin(1)).
//!
//! nbdkit builds the filesystem virtually and reads the files as clients
//! ask for them; ours is made once at start-up by mkfs.fat(8) and
//! mcopy(1) into a temporary image, so the directory may change
//! afterwards without the disk changing under a client. Like nbdkit's it
//! is always FAT32, which needs at least 65525 clusters: a disk holding
//! few files is 34 MiB, most of it sparse.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::scratch::{temp_file, tmpdir};

use super::made_image::{find_program, MadeImage};
use super::one_partition::{write_mbr_one, SECTOR, START};
use super::PluginSpec;

/// MBR type 0x0c: FAT32 addressed by LBA.
const FAT32_LBA: u8 = 0x0c;
/// The smallest FAT32 filesystem of 512-byte clusters mtools accepts.
const MIN_FS: u64 = 34 << 20;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "floppy",
    magic: Some("dir"),
    params: &[
        ("dir", "the directory copied into the filesystem (required)"),
        (
            "label",
            "the volume label, up to 11 ASCII characters (default NBDKITFLOPY)",
        ),
        (
            "size",
            "the whole disk's size (default: just enough for the files)",
        ),
    ],
    open: |p, _| {
        let dir = p
            .take("dir")
            .ok_or_else(|| p.err("you must supply the dir=<DIRECTORY> parameter after the plugin name on the command line"))?;
        let label = p.take("label").unwrap_or_else(|| "NBDKITFLOPY".into());
        if label.len() > 11 || !label.is_ascii() {
            return Err(p.err("label must be at most 11 ASCII characters"));
        }
        let size = p.take_size("size")?;
        let dir =
            std::fs::canonicalize(&dir).map_err(|e| p.err(format!("realpath: {dir}: {e}")))?;
        let mkfs = find_program(&["mkfs.fat", "mkfs.vfat"])
            .ok_or_else(|| p.err("mkfs.fat (dosfstools) is not installed"))?;
        find_program(&["mcopy"]).ok_or_else(|| p.err("mcopy (mtools) is not installed"))?;
        Ok(make(&mkfs, &dir, &label, size).map_err(|e| p.err(e))? as _)
    },
};

/// Bytes the files take in 512-byte clusters, plus a cluster per entry
/// for its directory entries.
fn estimate(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(meta) = e.path().metadata() else {
                continue;
            };
            total += 512 + meta.len().div_ceil(512) * 512;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn make(mkfs: &str, dir: &Path, label: &str, size: Option<u64>) -> Result<Arc<MadeImage>, String> {
    let fs_bytes = match size {
        Some(total) => {
            let fs = total.saturating_sub(START * SECTOR) / 1024 * 1024;
            if fs < MIN_FS {
                return Err(format!(
                    "size {total} is too small for a FAT32 filesystem (at least {})",
                    MIN_FS + START * SECTOR
                ));
            }
            fs
        }
        None => (estimate(dir) * 9 / 8 + MIN_FS).div_ceil(1 << 20) << 20,
    };
    let fs_sectors = fs_bytes / SECTOR;
    let total = START + fs_sectors;
    let (file, path) = temp_file(&tmpdir(), "floppy")
        .map_err(|e| format!("mkstemp: {}: {e}", tmpdir().display()))?;
    let made = file
        .set_len(total * SECTOR)
        .map_err(|e| format!("ftruncate: {e}"))
        .and_then(|()| {
            run(
                Command::new(mkfs)
                    .args(["-F", "32", "-s", "1", "-n", label, "--offset"])
                    .arg(START.to_string())
                    .arg(&path)
                    .arg((fs_bytes / 1024).to_string()),
                "mkfs.fat",
            )
        })
        .and_then(|()| {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Ok(());
            }
            let image = format!("{}@@{}", path.display(), START * SECTOR);
            run(
                Command::new("mcopy")
                    .args(["-s", "-p", "-m", "-Q", "-i"])
                    .arg(image)
                    .args(&entries)
                    .arg("::/"),
                "mcopy",
            )
        })
        .and_then(|()| write_mbr_one(&file, FAT32_LBA, fs_sectors));
    let _ = std::fs::remove_file(&path);
    made?;
    Ok(Arc::new(MadeImage::new(file, path)))
}
