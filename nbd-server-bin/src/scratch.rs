//! Scratch files: the disks and images plugins and filters make for
//! themselves (tmpdisk, iso, linuxdisk, floppy, the gzip filter's
//! uncompressed copy) go under `$TMPDIR`, else /var/tmp, as nbdkit puts
//! them, in files made with mkstemp(3) so that no one else can open them.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::io::FromRawFd;
use std::path::{Path, PathBuf};

/// `$TMPDIR` if set and not empty, else /var/tmp.
pub fn tmpdir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// A new file `DIR/PREFIXXXXXXX` only we can open, and its name; the
/// caller unlinks it once done with the name.
pub fn temp_file(dir: &Path, prefix: &str) -> io::Result<(File, PathBuf)> {
    let mut template = dir
        .join(format!("{prefix}XXXXXX"))
        .into_os_string()
        .into_vec();
    template.push(0);
    // SAFETY: mkstemp rewrites the X's of a NUL-terminated buffer we own
    // and returns a new descriptor, which the File takes over.
    let fd = unsafe { libc::mkstemp(template.as_mut_ptr() as *mut libc::c_char) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    template.pop();
    // SAFETY: fd is new and ours alone.
    let file = unsafe { File::from_raw_fd(fd) };
    Ok((file, PathBuf::from(OsString::from_vec(template))))
}

/// A new file in `dir` with no name at all: made and unlinked at once.
pub fn hidden_file(dir: &Path, prefix: &str) -> io::Result<File> {
    let (file, path) = temp_file(dir, prefix)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
