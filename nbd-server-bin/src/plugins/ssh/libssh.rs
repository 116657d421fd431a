//! The part of libssh (libssh.so.4) the ssh plugin uses, loaded with
//! dlopen(3) the first time it is needed, as the curl plugin loads
//! libcurl, and wrapped as a safe API: a [`Session`] connected and
//! authenticated, and an SFTP [`RemoteFile`] on it.
//!
//! Numbers and layouts are libssh 0.10's ABI (libssh/libssh.h and
//! libssh/sftp.h): the option enum, the known-hosts results, and the
//! leading fields of `struct sftp_attributes_struct`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

type SshSession = *mut c_void;
type SftpSession = *mut c_void;
type SftpFile = *mut c_void;

// enum ssh_options_e.
const SSH_OPTIONS_HOST: c_int = 0;
const SSH_OPTIONS_PORT_STR: c_int = 2;
const SSH_OPTIONS_USER: c_int = 4;
const SSH_OPTIONS_ADD_IDENTITY: c_int = 7;
const SSH_OPTIONS_KNOWNHOSTS: c_int = 8;
const SSH_OPTIONS_TIMEOUT: c_int = 9;
const SSH_OPTIONS_COMPRESSION: c_int = 22;
const SSH_OPTIONS_PROCESS_CONFIG: c_int = 38;

const SSH_OK: c_int = 0;
const SSH_AUTH_SUCCESS: c_int = 0;
// enum ssh_known_hosts_e.
const SSH_KNOWN_HOSTS_OK: c_int = 1;
const SSH_KNOWN_HOSTS_CHANGED: c_int = 2;
const SSH_KNOWN_HOSTS_OTHER: c_int = 3;

/// SFTP status codes (sftp.h) that have a closer errno than EIO.
const SSH_FX_NO_SUCH_FILE: c_int = 2;
const SSH_FX_PERMISSION_DENIED: c_int = 3;
const SSH_FX_NO_SUCH_PATH: c_int = 10;
const SSH_FX_WRITE_PROTECT: c_int = 12;
const SSH_FX_NO_SPACE_ON_FILESYSTEM: c_int = 14;

/// The most one SFTP write packet carries here (see `write_at`).
const MAX_WRITE: usize = 64 * 1024;

/// The leading fields of `struct sftp_attributes_struct`, up to `size`.
#[repr(C)]
struct AttributesHead {
    name: *mut c_char,
    longname: *mut c_char,
    flags: u32,
    kind: u8,
    size: u64,
}

struct Lib {
    new: unsafe extern "C" fn() -> SshSession,
    free: unsafe extern "C" fn(SshSession),
    options_set: unsafe extern "C" fn(SshSession, c_int, *const c_void) -> c_int,
    options_parse_config: unsafe extern "C" fn(SshSession, *const c_char) -> c_int,
    connect: unsafe extern "C" fn(SshSession) -> c_int,
    disconnect: unsafe extern "C" fn(SshSession),
    get_error: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    is_known_server: unsafe extern "C" fn(SshSession) -> c_int,
    userauth_none: unsafe extern "C" fn(SshSession, *const c_char) -> c_int,
    userauth_publickey_auto:
        unsafe extern "C" fn(SshSession, *const c_char, *const c_char) -> c_int,
    userauth_password: unsafe extern "C" fn(SshSession, *const c_char, *const c_char) -> c_int,
    sftp_new: unsafe extern "C" fn(SshSession) -> SftpSession,
    sftp_init: unsafe extern "C" fn(SftpSession) -> c_int,
    sftp_free: unsafe extern "C" fn(SftpSession),
    sftp_get_error: unsafe extern "C" fn(SftpSession) -> c_int,
    sftp_extension_supported:
        unsafe extern "C" fn(SftpSession, *const c_char, *const c_char) -> c_int,
    sftp_open: unsafe extern "C" fn(SftpSession, *const c_char, c_int, libc::mode_t) -> SftpFile,
    sftp_close: unsafe extern "C" fn(SftpFile) -> c_int,
    sftp_fstat: unsafe extern "C" fn(SftpFile) -> *mut AttributesHead,
    sftp_attributes_free: unsafe extern "C" fn(*mut AttributesHead),
    sftp_seek64: unsafe extern "C" fn(SftpFile, u64) -> c_int,
    sftp_read: unsafe extern "C" fn(SftpFile, *mut c_void, usize) -> isize,
    sftp_write: unsafe extern "C" fn(SftpFile, *const c_void, usize) -> isize,
    sftp_fsync: unsafe extern "C" fn(SftpFile) -> c_int,
}

fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: dlopen with a NUL-terminated name.
        let h = unsafe { libc::dlopen(c"libssh.so.4".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err("ssh: cannot load libssh.so.4: install the libssh-4 package".into());
        }
        fn sym<F: Copy>(h: *mut c_void, name: &CStr) -> Result<F, String> {
            assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
            // SAFETY: a handle from dlopen and a NUL-terminated name.
            let p = unsafe { libc::dlsym(h, name.as_ptr()) };
            if p.is_null() {
                return Err(format!("ssh: libssh lacks {}", name.to_string_lossy()));
            }
            // SAFETY: F is the `unsafe extern "C" fn` type libssh's header
            // gives the symbol, pointer-sized (POSIX lets dlsym's data
            // pointer be converted to a function pointer).
            Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
        }
        Ok(Lib {
            new: sym(h, c"ssh_new")?,
            free: sym(h, c"ssh_free")?,
            options_set: sym(h, c"ssh_options_set")?,
            options_parse_config: sym(h, c"ssh_options_parse_config")?,
            connect: sym(h, c"ssh_connect")?,
            disconnect: sym(h, c"ssh_disconnect")?,
            get_error: sym(h, c"ssh_get_error")?,
            is_known_server: sym(h, c"ssh_session_is_known_server")?,
            userauth_none: sym(h, c"ssh_userauth_none")?,
            userauth_publickey_auto: sym(h, c"ssh_userauth_publickey_auto")?,
            userauth_password: sym(h, c"ssh_userauth_password")?,
            sftp_new: sym(h, c"sftp_new")?,
            sftp_init: sym(h, c"sftp_init")?,
            sftp_free: sym(h, c"sftp_free")?,
            sftp_get_error: sym(h, c"sftp_get_error")?,
            sftp_extension_supported: sym(h, c"sftp_extension_supported")?,
            sftp_open: sym(h, c"sftp_open")?,
            sftp_close: sym(h, c"sftp_close")?,
            sftp_fstat: sym(h, c"sftp_fstat")?,
            sftp_attributes_free: sym(h, c"sftp_attributes_free")?,
            sftp_seek64: sym(h, c"sftp_seek64")?,
            sftp_read: sym(h, c"sftp_read")?,
            sftp_write: sym(h, c"sftp_write")?,
            sftp_fsync: sym(h, c"sftp_fsync")?,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn cstring(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

/// How to reach and log in to the remote host.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub host: String,
    pub port: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub identities: Vec<String>,
    pub known_hosts: Option<String>,
    pub verify_remote_host: bool,
    pub compression: bool,
    pub timeout: Option<i64>,
    /// None: libssh's default files; Some(""): none; else this file.
    pub config: Option<String>,
}

/// A connected, authenticated SSH session with its SFTP channel.
pub struct Session {
    lib: &'static Lib,
    ssh: SshSession,
    sftp: SftpSession,
}

// SAFETY: libssh sessions may move between threads as long as one thread
// uses them at a time; the plugin keeps each behind a mutex.
unsafe impl Send for Session {}

impl Session {
    fn error(&self) -> String {
        // SAFETY: the session is live; libssh returns a static or
        // session-owned NUL-terminated string.
        unsafe { CStr::from_ptr((self.lib.get_error)(self.ssh)) }
            .to_string_lossy()
            .into_owned()
    }

    fn set(&self, option: c_int, value: *const c_void, what: &str) -> Result<(), String> {
        // SAFETY: value points to what the option expects (a C string or
        // an int/long), alive for the call; libssh copies it.
        if unsafe { (self.lib.options_set)(self.ssh, option, value) } != SSH_OK {
            return Err(format!("failed to set {what}: {}", self.error()));
        }
        Ok(())
    }

    fn set_str(&self, option: c_int, value: &str, what: &str) -> Result<(), String> {
        let c = cstring(what, value)?;
        self.set(option, c.as_ptr() as *const c_void, what)
    }

    /// Connects to the host, checks its key, logs in and starts SFTP.
    pub fn open(s: &Settings) -> Result<Session, String> {
        let lib = lib()?;
        // SAFETY: ssh_new has no preconditions.
        let ssh = unsafe { (lib.new)() };
        if ssh.is_null() {
            return Err("ssh_new: out of memory".into());
        }
        let mut session = Session {
            lib,
            ssh,
            sftp: std::ptr::null_mut(),
        };
        session.connect(s)?;
        Ok(session)
    }

    fn connect(&mut self, s: &Settings) -> Result<(), String> {
        let no: c_int = 0;
        // Configuration files are read below, only when asked.
        self.set(
            SSH_OPTIONS_PROCESS_CONFIG,
            &no as *const c_int as *const c_void,
            "process config",
        )?;
        self.set_str(SSH_OPTIONS_HOST, &s.host, "host")?;
        if let Some(p) = &s.port {
            self.set_str(SSH_OPTIONS_PORT_STR, p, "port")?;
        }
        if let Some(u) = &s.user {
            self.set_str(SSH_OPTIONS_USER, u, "user")?;
        }
        for id in &s.identities {
            self.set_str(SSH_OPTIONS_ADD_IDENTITY, id, "identity")?;
        }
        if let Some(k) = &s.known_hosts {
            self.set_str(SSH_OPTIONS_KNOWNHOSTS, k, "known_hosts")?;
        }
        if s.compression {
            self.set_str(SSH_OPTIONS_COMPRESSION, "yes", "compression")?;
        }
        if let Some(t) = s.timeout {
            let t: libc::c_long = t as libc::c_long;
            self.set(
                SSH_OPTIONS_TIMEOUT,
                &t as *const libc::c_long as *const c_void,
                "timeout",
            )?;
        }
        match s.config.as_deref() {
            Some("") => {}
            Some(f) => {
                let c = cstring("config", f)?;
                // SAFETY: live session, NUL-terminated path.
                if unsafe { (self.lib.options_parse_config)(self.ssh, c.as_ptr()) } != SSH_OK {
                    return Err(format!("failed to parse config file {f}: {}", self.error()));
                }
            }
            None => {
                // SAFETY: live session; NULL means libssh's default files.
                unsafe { (self.lib.options_parse_config)(self.ssh, std::ptr::null()) };
            }
        }
        // SAFETY: a configured session.
        if unsafe { (self.lib.connect)(self.ssh) } != SSH_OK {
            return Err(format!(
                "failed to connect to remote host: {}",
                self.error()
            ));
        }
        if s.verify_remote_host {
            // SAFETY: a connected session.
            match unsafe { (self.lib.is_known_server)(self.ssh) } {
                SSH_KNOWN_HOSTS_OK => {}
                SSH_KNOWN_HOSTS_CHANGED | SSH_KNOWN_HOSTS_OTHER => {
                    return Err(
                        "remote host key has changed: possible man-in-the-middle attack".into(),
                    )
                }
                _ => {
                    return Err(
                        "remote host key is unknown: add it to known_hosts or use verify-remote-host=false"
                            .into(),
                    )
                }
            }
        }
        self.authenticate(s)?;
        // SAFETY: an authenticated session.
        self.sftp = unsafe { (self.lib.sftp_new)(self.ssh) };
        if self.sftp.is_null() {
            return Err(format!("failed to create sftp session: {}", self.error()));
        }
        // SAFETY: a new sftp session.
        if unsafe { (self.lib.sftp_init)(self.sftp) } != SSH_OK {
            return Err(format!(
                "failed to initialize sftp session: {}",
                self.error()
            ));
        }
        Ok(())
    }

    /// nbdkit's order: "none", then the password if one was given, then
    /// public keys (the identities and the agent).
    fn authenticate(&self, s: &Settings) -> Result<(), String> {
        // SAFETY: a connected session; NULL user means the one set.
        if unsafe { (self.lib.userauth_none)(self.ssh, std::ptr::null()) } == SSH_AUTH_SUCCESS {
            return Ok(());
        }
        if let Some(p) = &s.password {
            let c = cstring("password", p)?;
            // SAFETY: as above, with a NUL-terminated password.
            let r = unsafe { (self.lib.userauth_password)(self.ssh, std::ptr::null(), c.as_ptr()) };
            if r == SSH_AUTH_SUCCESS {
                return Ok(());
            }
        }
        // SAFETY: as above; NULL passphrase (keys must be unencrypted or
        // in the agent: a server cannot ask).
        let r = unsafe {
            (self.lib.userauth_publickey_auto)(self.ssh, std::ptr::null(), std::ptr::null())
        };
        if r == SSH_AUTH_SUCCESS {
            return Ok(());
        }
        Err(format!(
            "all possible authentication methods failed: {}",
            self.error()
        ))
    }

    /// The errno of the last SFTP failure.
    fn sftp_errno(&self) -> i32 {
        // SAFETY: a live sftp session.
        match unsafe { (self.lib.sftp_get_error)(self.sftp) } {
            SSH_FX_NO_SUCH_FILE | SSH_FX_NO_SUCH_PATH => libc::ENOENT,
            SSH_FX_PERMISSION_DENIED => libc::EPERM,
            SSH_FX_WRITE_PROTECT => libc::EROFS,
            SSH_FX_NO_SPACE_ON_FILESYSTEM => libc::ENOSPC,
            _ => libc::EIO,
        }
    }

    /// Opens `path` with open(2) `flags` and, when created, `mode`; the
    /// file keeps the session.
    pub fn open_file(
        self,
        path: &str,
        flags: c_int,
        mode: u32,
    ) -> Result<RemoteFile, (i32, String)> {
        let c = cstring("path", path).map_err(|e| (libc::EINVAL, e))?;
        // SAFETY: a live sftp session and a NUL-terminated path.
        let f = unsafe { (self.lib.sftp_open)(self.sftp, c.as_ptr(), flags, mode as libc::mode_t) };
        if f.is_null() {
            return Err((
                self.sftp_errno(),
                format!(
                    "cannot open file for {}: {}",
                    if flags & libc::O_ACCMODE == libc::O_RDONLY {
                        "reading"
                    } else {
                        "writing"
                    },
                    self.error()
                ),
            ));
        }
        Ok(RemoteFile {
            file: f,
            session: self,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: each pointer is ours, freed once, sftp before its ssh.
        unsafe {
            if !self.sftp.is_null() {
                (self.lib.sftp_free)(self.sftp);
            }
            (self.lib.disconnect)(self.ssh);
            (self.lib.free)(self.ssh);
        }
    }
}

/// An open remote file, with the session it was opened on (closed
/// first, then the session, in that order).
pub struct RemoteFile {
    file: SftpFile,
    session: Session,
}

// SAFETY: as for Session: one thread at a time, behind the plugin's mutex.
unsafe impl Send for RemoteFile {}

impl RemoteFile {
    fn fail(&self, what: &str) -> (i32, String) {
        (
            self.session.sftp_errno(),
            format!("{what}: {}", self.session.error()),
        )
    }

    pub fn size(&self) -> Result<u64, (i32, String)> {
        let l = self.session.lib;
        // SAFETY: a live file; the attributes are freed once, after the
        // size is read from their leading fields.
        unsafe {
            let a = (l.sftp_fstat)(self.file);
            if a.is_null() {
                return Err(self.fail("fstat"));
            }
            let size = (*a).size;
            (l.sftp_attributes_free)(a);
            Ok(size)
        }
    }

    fn seek(&self, offset: u64) -> Result<(), (i32, String)> {
        // SAFETY: a live file.
        if unsafe { (self.session.lib.sftp_seek64)(self.file, offset) } != 0 {
            return Err(self.fail("seek"));
        }
        Ok(())
    }

    /// Fills `buf` from `offset`; SFTP reads come back in pieces.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), (i32, String)> {
        self.seek(offset)?;
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // SAFETY: a live file and a writable buffer of that length.
            let n = unsafe {
                (self.session.lib.sftp_read)(
                    self.file,
                    rest.as_mut_ptr() as *mut c_void,
                    rest.len(),
                )
            };
            if n < 0 {
                return Err(self.fail("read"));
            }
            if n == 0 {
                return Err((libc::EIO, "read: unexpected end of file".into()));
            }
            done += n as usize;
        }
        Ok(())
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), (i32, String)> {
        self.seek(offset)?;
        let mut done = 0;
        while done < buf.len() {
            // libssh sends a write as one SFTP packet, and OpenSSH's server
            // drops the connection on packets over 256 KiB: send pieces.
            let rest = &buf[done..(done + MAX_WRITE).min(buf.len())];
            // SAFETY: a live file and a readable buffer of that length.
            let n = unsafe {
                (self.session.lib.sftp_write)(self.file, rest.as_ptr() as *const c_void, rest.len())
            };
            if n <= 0 {
                return Err(self.fail("write"));
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Whether the server offers fsync@openssh.com, for flushes.
    pub fn can_fsync(&self) -> bool {
        let s = &self.session;
        // SAFETY: a live sftp session and static strings.
        unsafe {
            (s.lib.sftp_extension_supported)(s.sftp, c"fsync@openssh.com".as_ptr(), c"1".as_ptr())
                != 0
        }
    }

    pub fn fsync(&self) -> Result<(), (i32, String)> {
        // SAFETY: a live file.
        if unsafe { (self.session.lib.sftp_fsync)(self.file) } != 0 {
            return Err(self.fail("fsync"));
        }
        Ok(())
    }
}

impl Drop for RemoteFile {
    fn drop(&mut self) {
        // SAFETY: the file is ours and closed once.
        unsafe { (self.session.lib.sftp_close)(self.file) };
    }
}
