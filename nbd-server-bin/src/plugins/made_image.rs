//! What the iso, linuxdisk and floppy plugins share: a disk image made
//! once, when the server starts, by a program (xorriso, mke2fs, mkfs.vfat)
//! from a directory, kept in an unlinked temporary file and served
//! read-only to every connection.
//!
//! The file is a scratch file (`crate::scratch`), unlinked as soon as
//! the program has made it: nothing is left behind however the server
//! ends.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result};

use crate::chain::Plugin;

use super::disk_command::DiskFile;

/// Runs `script` with `/bin/sh -c`, standard output going to `stdout`
/// (or /dev/null), standard input from /dev/null; `what` names it in
/// errors. The script's own messages go to the server's standard error.
pub fn run_shell(
    what: &str,
    script: &str,
    vars: &[(&str, &str)],
    stdout: Option<&File>,
) -> std::result::Result<(), String> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    match stdout {
        Some(f) => cmd.stdout(f.try_clone().map_err(|e| format!("{what}: dup: {e}"))?),
        None => cmd.stdout(Stdio::null()),
    };
    let status = cmd.status().map_err(|e| format!("{what}: /bin/sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: command failed: {script}: {status}"))
    }
}

/// The first of `programs` found on `$PATH` (and /usr/sbin, /sbin, where
/// Debian keeps mke2fs and mkfs.vfat).
pub fn find_program(programs: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .collect();
    programs.iter().find_map(|p| {
        dirs.iter()
            .map(|d| d.join(p))
            .find(|f| f.is_file())
            .map(|_| p.to_string())
    })
}

/// An image made at start-up, served read-only to each connection.
pub struct MadeImage {
    file: File,
    path: PathBuf,
}

impl MadeImage {
    /// Serves `file` (made at `path`, already unlinked).
    pub fn new(file: File, path: PathBuf) -> MadeImage {
        MadeImage { file, path }
    }
}

impl Plugin for MadeImage {
    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::new(e.raw_os_error().unwrap_or(libc::EIO), format!("dup: {e}")))?;
        Ok(Box::new(DiskFile::new(file, &self.path, false, false)?))
    }
}
