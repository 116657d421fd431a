//! The ssh plugin: a disk image on a remote host, read and written over
//! SFTP (nbdkit-ssh-plugin(1)), through the system's libssh.
//!
//! Each client connection opens its own SSH session, as nbdkit does: it
//! connects, checks the host key against known_hosts (unless
//! `verify-remote-host=false`), logs in ("none", then the password, then
//! public keys from `identity=` and the agent), and opens the file. An
//! SFTP file has one position, so a connection's requests take turns.
//! `create=true` makes (or empties) the remote file of `create-size`
//! bytes when the first client connects.

mod libssh;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result};
use parking_lot::Mutex;

use crate::chain::Plugin;
use crate::params::Params;

use super::PluginSpec;
use libssh::{RemoteFile, Session, Settings};

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "ssh",
    magic: Some("path"),
    params: &[
        ("host", "the remote host's name or address (required)"),
        (
            "path",
            "the remote file, relative to the remote home directory unless absolute (required)",
        ),
        ("port", "the SSH port name or number"),
        ("user", "the remote user name (default: the local one)"),
        (
            "password",
            "the password, or - to ask, +FILE to read it from a file, -FD from a descriptor",
        ),
        (
            "identity",
            "a private key file tried before libssh's defaults (may be repeated)",
        ),
        (
            "known-hosts",
            "the known_hosts file to check the host key in",
        ),
        (
            "verify-remote-host",
            "whether to check the host key (default true)",
        ),
        ("compression", "whether to compress the connection"),
        (
            "config",
            "an SSH configuration file to read, or empty for none (default: libssh's)",
        ),
        ("timeout", "the connection timeout, in seconds"),
        (
            "create",
            "make the remote file (replacing one that exists) when the first client connects",
        ),
        ("create-size", "the size of the file create=true makes"),
        (
            "create-mode",
            "the permissions of that file, in octal (default 0600)",
        ),
    ],
    open: |p, ro| Ok(Arc::new(SshPlugin::open(p, ro)?)),
};

pub struct SshPlugin {
    settings: Settings,
    path: String,
    readonly: bool,
    /// (size, mode) of the file to make, until the first connection
    /// made it.
    create: Option<(u64, u32)>,
    created: AtomicBool,
}

impl SshPlugin {
    fn open(p: &mut Params, readonly: bool) -> std::result::Result<SshPlugin, String> {
        let host = p.take("host");
        let path = p.take("path");
        let password = match p.take("password") {
            Some(v) => {
                let pw = crate::password::read_password(&v).map_err(|e| p.err(e))?;
                Some(String::from_utf8(pw).map_err(|_| p.err("the password is not UTF-8"))?)
            }
            None => None,
        };
        let timeout = match p.take("timeout") {
            Some(t) => Some(
                t.parse::<i64>()
                    .ok()
                    .filter(|&t| t >= 0)
                    .ok_or_else(|| p.err(format!("could not parse timeout: {t}")))?,
            ),
            None => None,
        };
        let settings = Settings {
            host: String::new(),
            port: p.take("port"),
            user: p.take("user"),
            password,
            identities: p.take_all("identity"),
            known_hosts: p.take("known-hosts"),
            verify_remote_host: p.take_bool("verify-remote-host")?.unwrap_or(true),
            compression: p.take_bool("compression")?.unwrap_or(false),
            timeout,
            config: p.take("config"),
        };
        let create = p.take_bool("create")?.unwrap_or(false);
        let create_size = p.take_size("create-size")?;
        let create_mode = match p.take("create-mode") {
            Some(m) => Some(
                u32::from_str_radix(m.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|&m| m <= 0o7777)
                    .ok_or_else(|| p.err(format!("could not parse create-mode: {m}")))?,
            ),
            None => None,
        };
        let (Some(host), Some(path)) = (host, path) else {
            return Err(p.err("you must supply the host and path parameters"));
        };
        let create = match (create, create_size) {
            (false, _) => None,
            (true, Some(size)) => Some((size, create_mode.unwrap_or(0o600))),
            (true, None) => return Err(p.err("if using create=true, you must specify create-size")),
        };
        Ok(SshPlugin {
            settings: Settings { host, ..settings },
            path,
            readonly,
            create,
            created: AtomicBool::new(false),
        })
    }

    fn connect(&self) -> Result<Session> {
        Session::open(&self.settings).map_err(|e| Error::new(libc::EIO, format!("ssh: {e}")))
    }
}

fn err((errno, msg): (i32, String)) -> Error {
    Error::new(errno, format!("ssh: {msg}"))
}

impl Plugin for SshPlugin {
    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        let writable = !(self.readonly || info.readonly);
        if let Some((size, mode)) = self.create {
            if !self.created.swap(true, Ordering::SeqCst) {
                let f = self
                    .connect()?
                    .open_file(
                        &self.path,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                        mode,
                    )
                    .map_err(err)?;
                // The size is set by writing its last byte: the rest is a
                // hole on any filesystem that has them.
                if size > 0 {
                    f.write_at(&[0], size - 1).map_err(err)?;
                }
            }
        }
        let flags = if writable {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        let file = self
            .connect()?
            .open_file(&self.path, flags, 0)
            .map_err(err)?;
        let size = file.size().map_err(err)?;
        let can_fsync = file.can_fsync();
        Ok(Box::new(SshConn {
            file: Mutex::new(file),
            size,
            writable,
            can_fsync,
        }))
    }
}

/// One connection's remote file.
struct SshConn {
    file: Mutex<RemoteFile>,
    size: u64,
    writable: bool,
    can_fsync: bool,
}

impl Backend for SshConn {
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(self.writable)
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(self.can_fsync)
    }
    fn can_fua(&self) -> Result<bool> {
        Ok(self.can_fsync)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.lock().read_at(buf, offset).map_err(err)
    }

    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let f = self.file.lock();
        f.write_at(buf, offset).map_err(err)?;
        if fua {
            f.fsync().map_err(err)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.file.lock().fsync().map_err(err)
    }
}
