//! The ondemand plugin: one persistent disk per export name, made the
//! first time a client asks for it (nbdkit-ondemand-plugin(1)).
//!
//! Export `NAME` is the file `dir/NAME`; the empty name is the file
//! `default`. A name longer than NAME_MAX or containing `.`, `/` or `:`
//! is refused. A missing file is made by mkfs (`type=`, default ext4,
//! `label=`) or by `command=`, as tmpdisk does (see `disk_command.rs`),
//! and then kept. While a client has a disk open it holds an
//! open-file-description lock on it (shared when read-only), so a second
//! client is refused ("filesystem is locked by another client"), or with
//! `wait=true` waits its turn. The export list is `default` (the empty
//! name) and each other file of `dir` whose name has no `.` or `:`.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result};

use crate::chain::Plugin;
use crate::params::Params;

use super::disk_command::{DiskCommand, DiskFile};
use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "ondemand",
    magic: Some("size"),
    params: &[
        ("dir", "the directory holding the disks (required)"),
        ("size", "the size of each new disk (required)"),
        ("type", "the filesystem type for mkfs (default ext4)"),
        ("label", "the filesystem label"),
        (
            "command",
            "a shell command making $disk instead of mkfs; other keys become its variables",
        ),
        (
            "wait",
            "wait for a disk another client holds instead of refusing",
        ),
    ],
    open: |p, ro| Ok(Arc::new(OnDemand::open(p, ro)?)),
};

pub struct OnDemand {
    dir: PathBuf,
    cmd: DiskCommand,
    wait: bool,
    readonly: bool,
}

/// NAME_MAX on Linux.
const NAME_MAX: usize = 255;

impl OnDemand {
    fn open(p: &mut Params, readonly: bool) -> std::result::Result<OnDemand, String> {
        let dir = p.take("dir");
        let command = p.take("command");
        let size = p.take_size("size")?;
        let fs_type = p.take("type");
        let label = p.take("label");
        let wait = p.take_bool("wait")?.unwrap_or(false);
        let rest = p.take_rest();
        let (Some(dir), Some(_)) = (&dir, size) else {
            return Err("dir and size parameters are required".into());
        };
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("realpath: {dir}: {e}"))?;
        std::fs::read_dir(&dir).map_err(|e| format!("opendir: {}: {e}", dir.display()))?;
        let cmd = DiskCommand::new(command, size, fs_type, label, rest)?;
        Ok(OnDemand {
            dir,
            cmd,
            wait,
            readonly,
        })
    }

    /// The file behind export `name`, or why it may not be one.
    fn file_name(name: &[u8]) -> Result<String> {
        let name = if name.is_empty() { b"default" } else { name };
        let bad = || {
            Error::new(
                libc::EINVAL,
                format!(
                    "invalid exportname ‘{}’ rejected",
                    String::from_utf8_lossy(name)
                ),
            )
        };
        if name.len() > NAME_MAX || name.iter().any(|c| b"./:\0".contains(c)) {
            return Err(bad());
        }
        String::from_utf8(name.to_vec()).map_err(|_| bad())
    }

    fn open_file(&self, path: &PathBuf, writable: bool) -> std::io::Result<File> {
        OpenOptions::new().read(true).write(writable).open(path)
    }

    /// Takes the disk's lock: exclusive for a writer, shared for readers.
    fn lock(&self, file: &File, name: &str, writable: bool) -> Result<()> {
        // SAFETY: a zeroed flock is a valid value; fcntl reads it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if writable {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        let cmd = if self.wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        loop {
            // SAFETY: fcntl on a descriptor we own with a flock we own.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &fl) };
            if r == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EACCES) | Some(libc::EAGAIN) => {
                    return Err(Error::new(
                        libc::EINVAL,
                        format!("{name}: filesystem is locked by another client"),
                    ))
                }
                _ => {
                    return Err(Error::new(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("fcntl: {}/{name}: {e}", self.dir.display()),
                    ))
                }
            }
        }
    }
}

fn open_err(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::new(
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("open: {}: {e}", path.display()),
    )
}

impl Plugin for OnDemand {
    fn list_exports(&self, _: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| {
            Error::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("readdir: {}: {e}", self.dir.display()),
            )
        })?;
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.contains('.') && !n.contains(':') && n != "default")
            .collect();
        names.sort();
        // The empty name comes first, under its own name.
        let mut list = vec![("default".to_string(), String::new())];
        list.extend(names.into_iter().map(|n| (n, String::new())));
        Ok(Some(list))
    }

    /// The empty name means `default`.
    fn default_export(&self, _: &ConnectionInfo) -> Result<Option<String>> {
        Ok(Some("default".into()))
    }

    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        let name = Self::file_name(&info.export_name)?;
        let path = self.dir.join(&name);
        let writable = !(self.readonly || info.readonly);
        let file = match self.open_file(&path, writable) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.cmd.run(&path)?;
                self.open_file(&path, writable)
                    .map_err(|e| open_err(&path, e))?
            }
            Err(e) => return Err(open_err(&path, e)),
        };
        self.lock(&file, &name, writable)?;
        Ok(Box::new(DiskFile::new(file, &path, writable, true)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::info_for;

    #[test]
    fn names() {
        assert_eq!(OnDemand::file_name(b"").unwrap(), "default");
        assert_eq!(OnDemand::file_name(b"export1").unwrap(), "export1");
        for bad in [&b"a.b"[..], b"a/b", b"a:b", b".", b".."] {
            assert!(OnDemand::file_name(bad).is_err(), "{bad:?}");
        }
        assert!(OnDemand::file_name(&[b'x'; 255]).is_ok());
        let e = OnDemand::file_name(&[b'x'; 256]).err().unwrap();
        assert!(e.message.contains("rejected"));
    }

    #[test]
    fn made_once_listed_and_locked() {
        let dir = std::env::temp_dir().join(format!("ondemand-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.y"), b"").unwrap();
        let mut p = Params::new(
            "ondemand",
            vec![
                ("dir".into(), dir.to_string_lossy().into_owned()),
                ("size".into(), "1k".into()),
                (
                    "command".into(),
                    r#"truncate -s "$size" "$disk"; echo made >> "$disk.log""#.into(),
                ),
            ],
        );
        let od = Arc::new(OnDemand::open(&mut p, false).unwrap());
        p.finish().unwrap();
        let mut info = info_for(1, "one", false);
        let a = od.clone().open(&info).unwrap();
        assert_eq!(a.size().unwrap(), 1024);
        a.pwrite(b"kept", 0, true).unwrap();
        let e = od.clone().open(&info).err().unwrap();
        assert!(e.message.contains("locked by another client"), "{e}");
        drop(a);
        // The lock is an open file description's (OFD): a child that
        // another test's thread forks in this instant shares the
        // description until its exec closes it, so the disk may stay
        // locked for that long after `a` is gone. Retry, for a bounded
        // time, only while it says locked.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let b = loop {
            match od.clone().open(&info) {
                Ok(b) => break b,
                Err(e)
                    if e.message.contains("locked by another client")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        };
        let mut buf = [0u8; 4];
        b.pread(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"kept");
        assert_eq!(std::fs::read(dir.join("one.log")).unwrap(), b"made\n");
        info.export_name = Vec::new();
        drop(od.clone().open(&info).unwrap());
        let list: Vec<String> = od
            .list_exports(&info)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(list, ["default", "one"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
