//! The tmpdisk plugin: each connection gets a fresh disk of its own,
//! made when it opens and gone when it closes
//! (nbdkit-tmpdisk-plugin(1)).
//!
//! The disk is made in a new private directory under `$TMPDIR` (else
//! /var/tmp) by mkfs (`type=`, default ext4, and `label=`) or by the
//! shell command `command=`, with every other parameter as a shell
//! variable (see `disk_command.rs`). Once open, the file is unlinked: the
//! connection holds the only reference, so nothing is left behind. Flush
//! and FUA are accepted and ignored, since the disk is thrown away.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result};

use crate::chain::Plugin;
use crate::params::Params;

use super::disk_command::{DiskCommand, DiskFile};
use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "tmpdisk",
    magic: Some("size"),
    params: &[
        ("size", "the size asked of the command (required)"),
        ("type", "the filesystem type for mkfs (default ext4)"),
        ("label", "the filesystem label"),
        (
            "command",
            "a shell command making $disk instead of mkfs; other keys become its variables",
        ),
    ],
    open: |p, ro| Ok(Arc::new(TmpDisk::open(p, ro)?)),
};

pub struct TmpDisk {
    cmd: DiskCommand,
    tmpdir: PathBuf,
    readonly: bool,
}

impl TmpDisk {
    fn open(p: &mut Params, readonly: bool) -> std::result::Result<TmpDisk, String> {
        let command = p.take("command");
        let size = p.take_size("size")?;
        let fs_type = p.take("type");
        let label = p.take("label");
        let cmd = DiskCommand::new(command, size, fs_type, label, p.take_rest())?;
        let tmpdir = crate::scratch::tmpdir();
        Ok(TmpDisk {
            cmd,
            tmpdir,
            readonly,
        })
    }
}

/// A new directory only we may enter, `DIR/tmpdiskXXXXXX`: nobody else
/// can meddle with the disk while the command makes it.
fn private_dir(parent: &std::path::Path) -> Result<PathBuf> {
    let mut template = parent.join("tmpdiskXXXXXX").into_os_string().into_vec();
    template.push(0);
    // SAFETY: mkdtemp rewrites the X's of a NUL-terminated buffer we own.
    let r = unsafe { libc::mkdtemp(template.as_mut_ptr() as *mut libc::c_char) };
    if r.is_null() {
        let e = std::io::Error::last_os_error();
        return Err(Error::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("{}: {e}", parent.join("tmpdiskXXXXXX").display()),
        ));
    }
    template.pop();
    Ok(PathBuf::from(OsString::from_vec(template)))
}

impl Plugin for TmpDisk {
    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        let dir = private_dir(&self.tmpdir)?;
        let disk = dir.join("disk");
        let made = self.cmd.run(&disk).and_then(|()| {
            let writable = !(self.readonly || info.readonly);
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(&disk)
                .map_err(|e| {
                    Error::new(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("open: {}: {e}", disk.display()),
                    )
                })?;
            // Durable writes would be wasted on a disk that is thrown away.
            DiskFile::new(file, &disk, writable, false)
        });
        // The open file is the disk now; the names go either way. (The
        // command may have left other files: they go too.)
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Box::new(made?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::info;

    #[test]
    fn a_disk_per_open_and_nothing_left() {
        let base = std::env::temp_dir().join(format!("tmpdisk-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let t = Arc::new(TmpDisk {
            cmd: DiskCommand::new(
                Some(r#"truncate -s "$size" "$disk""#.into()),
                Some(4096),
                None,
                None,
                vec![],
            )
            .unwrap(),
            tmpdir: base.clone(),
            readonly: false,
        });
        let info = info();
        let a = t.clone().open(&info).unwrap();
        let b = t.clone().open(&info).unwrap();
        assert_eq!(a.size().unwrap(), 4096);
        a.pwrite(b"abc", 10, false).unwrap();
        let mut buf = [0u8; 3];
        b.pread(&mut buf, 10).unwrap();
        assert_eq!(buf, [0, 0, 0]);
        a.pread(&mut buf, 10).unwrap();
        assert_eq!(&buf, b"abc");
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
