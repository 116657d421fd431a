//! What the tmpdisk and ondemand plugins share: the shell command that
//! makes a disk (by default a sparse file of `size` bytes formatted with
//! mkfs(8)), and the backend that serves the file it made.
//!
//! The command runs with `/bin/sh -c`, stdin and stdout on /dev/null
//! (stderr is the server's), after shell assignments of `disk` (the path
//! the command must create), `size` (the requested size in bytes) and each
//! parameter the plugin does not know itself, so `os=fedora` becomes
//! `$os`. The disk's size is whatever the command made.

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use nbd_core::server::backend::{Backend, Error, Result, ZeroFlags};

/// The command used without `command=`: nbdkit's choice of mkfs options
/// per filesystem type, with ext4 when `type` is unset.
const MKFS: &str = r#"
: "${type:=ext4}"
opts=
lopt=-L
case "$type" in
  ext?) opts=-F ;;
  *fat|msdos) opts=-I ;;
  ntfs) opts='-Q -F'; lopt=-n ;;
  xfs) opts=-f ;;
esac
PATH="$PATH:/usr/sbin:/sbin"
truncate -s "$size" "$disk" || exit
if [ -n "$label" ]; then
  mkfs -t "$type" $opts $lopt "$label" "$disk"
else
  mkfs -t "$type" $opts "$disk"
fi
"#;

/// How a plugin makes its disks.
pub struct DiskCommand {
    /// `command=`, or None for mkfs.
    command: Option<String>,
    size: u64,
    /// The other parameters, as shell variables, in command-line order.
    vars: Vec<(String, String)>,
}

impl DiskCommand {
    /// From the parameters a plugin took (`command`, `size`, `type`,
    /// `label`) and those it did not know (`rest`). `disk` is the
    /// command's own variable and cannot be set.
    pub fn new(
        command: Option<String>,
        size: Option<u64>,
        fs_type: Option<String>,
        label: Option<String>,
        rest: Vec<(String, String)>,
    ) -> std::result::Result<DiskCommand, String> {
        if rest.iter().any(|(k, _)| k == "disk") {
            return Err("'disk' parameter cannot be set on the command line".into());
        }
        let size = size.ok_or("size parameter is required")?;
        let mut vars = Vec::new();
        if let Some(t) = fs_type {
            vars.push(("type".to_string(), t));
        }
        if let Some(l) = label {
            vars.push(("label".to_string(), l));
        }
        vars.extend(rest);
        Ok(DiskCommand {
            command,
            size,
            vars,
        })
    }

    /// The whole script run for `disk`.
    fn script(&self, disk: &Path) -> String {
        let mut s = format!(
            "disk={}\nsize={}\n\n",
            quote(&disk.to_string_lossy()),
            self.size
        );
        for (k, v) in &self.vars {
            // A key that is not a shell name stays a (failing) command,
            // never an assignment to something else.
            let name = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                k.clone()
            } else {
                quote(k)
            };
            s.push_str(&format!("{name}={}\n", quote(v)));
        }
        s.push('\n');
        s.push_str(self.command.as_deref().unwrap_or(MKFS));
        s
    }

    /// Runs the command to make `disk`.
    pub fn run(&self, disk: &Path) -> Result<()> {
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(self.script(disk))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| Error::new(libc::EIO, format!("failed to execute command: {e}")))?;
        if let Some(code) = status.code() {
            if code != 0 {
                return Err(Error::new(
                    libc::EIO,
                    format!("command exited with code {code}"),
                ));
            }
        } else if let Some(sig) = status.signal() {
            return Err(Error::new(
                libc::EIO,
                format!("command killed by signal {sig}"),
            ));
        }
        Ok(())
    }
}

/// `s` in single quotes for the shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A disk file a command made, served to one connection.
pub struct DiskFile {
    file: File,
    size: u64,
    writable: bool,
    /// Flush and FUA reach the disk (ondemand); tmpdisk's disks are
    /// thrown away, so there they are accepted and ignored.
    durable: bool,
    can_punch: AtomicBool,
}

fn os_err(what: &str, e: std::io::Error) -> Error {
    Error::new(
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("{what}: {e}"),
    )
}

impl DiskFile {
    /// Serves `file`, which is `path` (for messages): a regular file or a
    /// block device, whose size is taken now.
    pub fn new(file: File, path: &Path, writable: bool, durable: bool) -> Result<DiskFile> {
        let meta = file
            .metadata()
            .map_err(|e| os_err(&format!("fstat: {}", path.display()), e))?;
        let size = if meta.file_type().is_block_device() {
            // SAFETY: lseek on a descriptor we own.
            let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(os_err("lseek", std::io::Error::last_os_error()));
            }
            end as u64
        } else {
            meta.len()
        };
        Ok(DiskFile {
            file,
            size,
            writable,
            durable,
            can_punch: AtomicBool::new(true),
        })
    }

    fn sync(&self) -> Result<()> {
        if self.durable {
            self.file.sync_data().map_err(|e| os_err("fdatasync", e))?;
        }
        Ok(())
    }
}

impl Backend for DiskFile {
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(self.writable)
    }
    supports!(can_flush, can_fua, can_trim, can_zero, can_fast_zero);

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::new(libc::EIO, "pread: unexpected end of file")
            } else {
                os_err("pread", e)
            }
        })
    }

    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| os_err("pwrite", e))?;
        if fua {
            self.sync()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.sync()
    }

    /// Punches a hole; advisory, so only EIO and EPERM are errors.
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        if self.can_punch.load(Ordering::Relaxed) {
            // SAFETY: fallocate on a descriptor we own, plain integers.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    count as libc::off_t,
                )
            };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EIO) | Some(libc::EPERM) => return Err(os_err("fallocate", e)),
                    Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) => {
                        self.can_punch.store(false, Ordering::Relaxed)
                    }
                    _ => {}
                }
            }
        }
        if fua {
            self.sync()?;
        }
        Ok(())
    }

    /// Zeroes are written (nbdkit's emulation for plugins without a zero
    /// callback), so a fast zero is refused.
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "fast zero not supported"));
        }
        crate::filters::zeroes::write_zeroes(self, count, offset, flags.fua)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_script() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        let c = DiskCommand::new(
            Some("echo".into()),
            Some(512),
            Some("vfat".into()),
            None,
            vec![("os".into(), "x;y".into()), ("a-b".into(), "1".into())],
        )
        .unwrap();
        assert_eq!(
            c.script(Path::new("/t/disk")),
            "disk='/t/disk'\nsize=512\n\ntype='vfat'\nos='x;y'\n'a-b'='1'\n\necho"
        );
        assert!(DiskCommand::new(None, None, None, None, vec![]).is_err());
        let e = DiskCommand::new(None, Some(1), None, None, vec![("disk".into(), "x".into())]);
        assert!(e.err().unwrap().contains("'disk' parameter"));
    }

    #[test]
    fn command_makes_the_disk() {
        let dir = std::env::temp_dir().join(format!("diskcmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk");
        let c = DiskCommand::new(
            Some(r#"printf "%s" "$word" > "$disk"; [ "$size" = 7 ]"#.into()),
            Some(7),
            None,
            None,
            vec![("word".into(), "it's here".into())],
        )
        .unwrap();
        c.run(&disk).unwrap();
        assert_eq!(std::fs::read(&disk).unwrap(), b"it's here");
        let c = DiskCommand::new(Some("exit 3".into()), Some(1), None, None, vec![]).unwrap();
        assert_eq!(
            c.run(&disk).err().unwrap().to_string(),
            "command exited with code 3"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
