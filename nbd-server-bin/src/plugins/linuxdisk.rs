//! The linuxdisk plugin: a read-only disk holding an ext2, ext3 or ext4
//! filesystem made from a directory when the server starts, in the one
//! partition of a GPT (nbdkit-linuxdisk-plugin(1)).
//!
//! mke2fs(8) makes the filesystem with `-d DIR` straight into the
//! partition of the image file (`-E offset=`), and the GPT is written
//! around it. Without `size=`, the filesystem is made just large enough:
//! sized from the directory's contents, and made again, larger, if mke2fs
//! finds it too small. `size=+N` asks for N bytes free on top of that.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::scratch::{temp_file, tmpdir};

use super::made_image::{find_program, MadeImage};
use super::one_partition::{write_gpt_one, GPT_TAIL, SECTOR, START};
use super::PluginSpec;

/// The GPT type of a Linux filesystem.
const LINUX_FS_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "linuxdisk",
    magic: Some("dir"),
    params: &[
        ("dir", "the directory copied into the filesystem (required)"),
        ("label", "the filesystem's label"),
        ("type", "ext2 (the default), ext3 or ext4"),
        (
            "size",
            "the filesystem's size, or +N for N bytes free beyond the files (default: just enough)",
        ),
    ],
    open: |p, _| {
        let dir = p
            .take("dir")
            .ok_or_else(|| p.err("you must supply the dir=<DIRECTORY> parameter after the plugin name on the command line"))?;
        let label = p.take("label");
        let fs_type = p
            .take_enum("type", &["ext2", "ext3", "ext4"])?
            .unwrap_or_else(|| "ext2".into());
        let size = match p.take("size") {
            None => Size::Fit(0),
            Some(s) => match s.strip_prefix('+') {
                Some(extra) => Size::Fit(crate::params::parse_size(extra).map_err(|e| p.err(e))?),
                None => Size::Exact(crate::params::parse_size(&s).map_err(|e| p.err(e))?),
            },
        };
        let dir =
            std::fs::canonicalize(&dir).map_err(|e| p.err(format!("realpath: {dir}: {e}")))?;
        let mke2fs = find_program(&["mke2fs"]).ok_or_else(|| p.err("mke2fs is not installed"))?;
        Ok(make(&mke2fs, &dir, &fs_type, label.as_deref(), size).map_err(|e| p.err(e))? as _)
    },
};

#[derive(Clone, Copy)]
enum Size {
    /// Exactly this many bytes.
    Exact(u64),
    /// Enough for the files, and this many bytes more.
    Fit(u64),
}

/// Bytes the directory's contents take as a filesystem's blocks: each
/// file rounded up to 4 KiB, and 4 KiB for each entry's inode and name.
fn estimate(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            total += 4096 + meta.len().div_ceil(4096) * 4096;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

fn make(
    mke2fs: &str,
    dir: &Path,
    fs_type: &str,
    label: Option<&str>,
    size: Size,
) -> Result<Arc<MadeImage>, String> {
    let mut fs_bytes = match size {
        Size::Exact(n) => n,
        // Room for the metadata (superblocks, bitmaps, inode tables, the
        // reserved blocks, a journal for ext3 and ext4) on top of the data.
        Size::Fit(extra) => {
            let journal = if fs_type == "ext2" { 0 } else { 4 << 20 };
            estimate(dir) * 5 / 4 + (1 << 20) + journal + extra
        }
    };
    let mut tries = 0;
    loop {
        fs_bytes = fs_bytes.div_ceil(4096) * 4096;
        let fs_sectors = fs_bytes / SECTOR;
        let total = START + fs_sectors + GPT_TAIL;
        let (file, path) = temp_file(&tmpdir(), "linuxdisk")
            .map_err(|e| format!("mkstemp: {}: {e}", tmpdir().display()))?;
        let made = file
            .set_len(total * SECTOR)
            .map_err(|e| format!("ftruncate: {e}"))
            .and_then(|()| {
                let mut cmd = Command::new(mke2fs);
                cmd.args(["-q", "-F", "-t", fs_type]);
                if let Some(l) = label {
                    cmd.arg("-L").arg(l);
                }
                cmd.arg("-E")
                    .arg(format!("offset={}", START * SECTOR))
                    .arg("-d")
                    .arg(dir)
                    .arg(&path)
                    .arg(format!("{}k", fs_bytes / 1024))
                    .stdin(Stdio::null());
                let out = cmd.output().map_err(|e| format!("{mke2fs}: {e}"))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            });
        let _ = std::fs::remove_file(&path);
        match made {
            Ok(()) => {
                write_gpt_one(&file, total, LINUX_FS_GUID, fs_sectors)?;
                return Ok(Arc::new(MadeImage::new(file, path)));
            }
            // Too small after all: a larger filesystem, a few times over.
            Err(_) if matches!(size, Size::Fit(_)) && tries < 5 => {
                tries += 1;
                fs_bytes *= 2;
            }
            Err(e) => return Err(format!("mke2fs failed: {e}")),
        }
    }
}
