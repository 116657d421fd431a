//! Server TLS over GnuTLS (`--tls`, `--tls-certificates`, `--tls-psk`,
//! `--tls-verify-peer`), as nbdkit-tls(1) describes it.
//!
//! The policy and credentials are process-wide ([`configure`], once, from
//! main). A connection starts in plain text as a [`Stream::Plain`]; when
//! negotiation says `Want::StartTls` the connection code calls
//! [`Stream::start_tls`], which runs the handshake on the socket and
//! turns both directions into [`Stream::Tls`]. The protocol code never
//! knows: it reads and writes a `Stream`. A GnuTLS session may be used by
//! one thread receiving and another sending at once, which is exactly how
//! the connection's reader and writer use it (each under its own lock).
//!
//! Credentials: with `--tls-psk=FILE`, PSK from psktool's `user:hexkey`
//! file; else X.509 from `--tls-certificates=DIR` (default /etc/pki/nbdkit
//! for root, else $HOME/.pki/nbdkit): server-cert.pem and server-key.pem,
//! ca-cert.pem (to check client certificates, `--tls-verify-peer`) and
//! ca-crl.pem when present.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, OnceLock};

use nbd_core::server::negotiate::Tls as Policy;

use nbd_gnutls as sys;

use sys::strerror;

fn check(what: &str, code: c_int) -> Result<(), String> {
    if code < 0 {
        Err(format!("{what}: {}", strerror(code)))
    } else {
        Ok(())
    }
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?}: contains a NUL byte"))
}

enum Creds {
    Cert(sys::creds_t),
    Psk(sys::creds_t),
}

// SAFETY: credentials are read-only once loaded; GnuTLS allows sharing
// them between sessions in different threads.
unsafe impl Send for Creds {}
unsafe impl Sync for Creds {}

impl Drop for Creds {
    fn drop(&mut self) {
        // SAFETY: allocated by the matching call, freed once.
        unsafe {
            match *self {
                Creds::Cert(c) => sys::gnutls_certificate_free_credentials(c),
                Creds::Psk(c) => sys::gnutls_psk_free_server_credentials(c),
            }
        }
    }
}

struct Config {
    policy: Policy,
    creds: Option<Creds>,
    verify_peer: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets the process's TLS policy and loads its credentials (once, before
/// serving). `tls` is `--tls`'s value (None: off).
pub fn configure(
    tls: Option<&str>,
    certificates: Option<&str>,
    psk: Option<&str>,
    verify_peer: bool,
) -> Result<(), String> {
    let policy = match tls.unwrap_or("off") {
        "off" | "no" | "false" | "0" => Policy::Off,
        "on" | "yes" | "true" | "1" => Policy::On,
        "require" | "required" | "force" => Policy::Require,
        v => return Err(format!("--tls: invalid value '{v}' (off, on or require)")),
    };
    let creds = if policy == Policy::Off {
        None
    } else if let Some(f) = psk {
        Some(load_psk(f)?)
    } else {
        Some(load_x509(certificates, verify_peer)?)
    };
    let _ = CONFIG.set(Config {
        policy,
        creds,
        verify_peer,
    });
    Ok(())
}

/// The TLS policy negotiation applies.
pub fn policy() -> Policy {
    CONFIG.get().map_or(Policy::Off, |c| c.policy)
}

fn load_psk(file: &str) -> Result<Creds, String> {
    let path = cstring(file)?;
    if std::fs::metadata(file).is_err() {
        return Err(format!("--tls-psk: {file}: cannot read the file"));
    }
    let mut c: sys::creds_t = std::ptr::null_mut();
    // SAFETY: c is written by the call.
    check("gnutls_psk_allocate_server_credentials", unsafe {
        sys::gnutls_psk_allocate_server_credentials(&mut c)
    })?;
    let creds = Creds::Psk(c);
    // SAFETY: valid credentials and path.
    check("gnutls_psk_set_server_credentials_file", unsafe {
        sys::gnutls_psk_set_server_credentials_file(c, path.as_ptr())
    })?;
    Ok(creds)
}

fn load_x509(dir: Option<&str>, verify_peer: bool) -> Result<Creds, String> {
    let dir = match dir {
        Some(d) => d.to_string(),
        // SAFETY: plain syscall.
        None if unsafe { libc::geteuid() } == 0 => "/etc/pki/nbdkit".into(),
        None => match std::env::var("HOME") {
            Ok(h) => format!("{h}/.pki/nbdkit"),
            Err(_) => return Err("--tls: no certificates directory ($HOME unset)".into()),
        },
    };
    let file = |n: &str| cstring(&format!("{dir}/{n}"));
    let exists = |n: &str| std::path::Path::new(&format!("{dir}/{n}")).exists();
    if !exists("server-cert.pem") || !exists("server-key.pem") {
        return Err(format!(
            "--tls: {dir}: server-cert.pem and server-key.pem are needed \
             (see nbdkit-tls(1))"
        ));
    }
    let mut c: sys::creds_t = std::ptr::null_mut();
    // SAFETY: c is written by the call.
    check("gnutls_certificate_allocate_credentials", unsafe {
        sys::gnutls_certificate_allocate_credentials(&mut c)
    })?;
    let creds = Creds::Cert(c);
    let pem = sys::GNUTLS_X509_FMT_PEM;
    if exists("ca-cert.pem") {
        let ca = file("ca-cert.pem")?;
        // SAFETY: valid credentials and path; returns a count or an error.
        let r = unsafe { sys::gnutls_certificate_set_x509_trust_file(c, ca.as_ptr(), pem) };
        check(&format!("{dir}/ca-cert.pem"), r)?;
    } else if verify_peer {
        return Err(format!("--tls-verify-peer: {dir}/ca-cert.pem is needed"));
    }
    if exists("ca-crl.pem") {
        let crl = file("ca-crl.pem")?;
        // SAFETY: as above.
        let r = unsafe { sys::gnutls_certificate_set_x509_crl_file(c, crl.as_ptr(), pem) };
        check(&format!("{dir}/ca-crl.pem"), r)?;
    }
    let (cert, key) = (file("server-cert.pem")?, file("server-key.pem")?);
    // SAFETY: as above.
    let r =
        unsafe { sys::gnutls_certificate_set_x509_key_file(c, cert.as_ptr(), key.as_ptr(), pem) };
    check(&format!("{dir}/server-cert.pem, server-key.pem"), r)?;
    Ok(creds)
}

/// One server TLS session over a blocking socket.
pub struct Session {
    s: sys::gnutls_session_t,
}

// SAFETY: GnuTLS allows one thread to receive while another sends on the
// same session; the connection's reader and writer each hold their own
// lock, so no two threads ever receive (or send) at once.
unsafe impl Send for Session {}
unsafe impl Sync for Session {}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: our session, freed once (when both directions are gone).
        unsafe { sys::gnutls_deinit(self.s) };
    }
}

impl Session {
    /// Runs the server handshake on `rd`/`wr` (the same socket, or stdin
    /// and stdout with `-s`). `sockets`: both are sockets (see
    /// [`fd_pull`] for when they are not).
    fn handshake(rd: RawFd, wr: RawFd, sockets: bool) -> Result<Session, String> {
        let cfg = CONFIG.get().ok_or("TLS is not configured")?;
        let creds = cfg.creds.as_ref().ok_or("TLS is not configured")?;
        let mut s: sys::gnutls_session_t = std::ptr::null_mut();
        // SAFETY: s is written by the call.
        check("gnutls_init", unsafe {
            sys::gnutls_init(&mut s, sys::GNUTLS_SERVER)
        })?;
        let sess = Session { s };
        let (prio, kind, c): (&[u8], c_int, *mut c_void) = match *creds {
            Creds::Psk(c) => (
                b"NORMAL:-VERS-SSL3.0:+ECDHE-PSK:+DHE-PSK:+PSK\0",
                sys::GNUTLS_CRD_PSK,
                c,
            ),
            Creds::Cert(c) => (b"NORMAL:-VERS-SSL3.0\0", sys::GNUTLS_CRD_CERTIFICATE, c),
        };
        // SAFETY: valid session, NUL-terminated priority string,
        // credentials that live as long as the process (CONFIG).
        unsafe {
            check(
                "gnutls_priority_set_direct",
                sys::gnutls_priority_set_direct(
                    s,
                    prio.as_ptr().cast::<c_char>(),
                    std::ptr::null_mut(),
                ),
            )?;
            check(
                "gnutls_credentials_set",
                sys::gnutls_credentials_set(s, kind, c),
            )?;
            if cfg.verify_peer && kind == sys::GNUTLS_CRD_CERTIFICATE {
                sys::gnutls_certificate_server_set_request(s, sys::GNUTLS_CERT_REQUIRE);
                sys::gnutls_session_set_verify_cert(s, std::ptr::null(), 0);
            }
            if sockets {
                sys::gnutls_transport_set_int2(s, rd, wr);
            } else {
                sys::gnutls_transport_set_ptr2(s, fd_ptr(rd), fd_ptr(wr));
                sys::gnutls_transport_set_pull_function(s, fd_pull);
                sys::gnutls_transport_set_pull_timeout_function(s, fd_pull_timeout);
                sys::gnutls_transport_set_push_function(s, fd_push);
            }
        }
        loop {
            // SAFETY: our session, on descriptors that outlive it.
            let r = unsafe { sys::gnutls_handshake(s) };
            if r == 0 {
                return Ok(sess);
            }
            // SAFETY: pure function.
            if unsafe { sys::gnutls_error_is_fatal(r) } == 0 {
                continue;
            }
            return Err(format!("gnutls_handshake: {}", strerror(r)));
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is writable for its length.
            let r = unsafe { sys::gnutls_record_recv(self.s, buf.as_mut_ptr().cast(), buf.len()) };
            if r >= 0 {
                return Ok(r as usize);
            }
            match r as c_int {
                sys::GNUTLS_E_AGAIN | sys::GNUTLS_E_INTERRUPTED => continue,
                sys::GNUTLS_E_PREMATURE_TERMINATION => return Ok(0),
                // SAFETY: pure function.
                e if unsafe { sys::gnutls_error_is_fatal(e) } == 0 => continue,
                e => {
                    return Err(io::Error::other(format!(
                        "gnutls_record_recv: {}",
                        strerror(e)
                    )))
                }
            }
        }
    }

    /// Sends every byte of `bufs` (see `nbd_gnutls::send` for how
    /// pieces become records).
    fn send_all(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: our session; the connection's writer lock makes this
        // the only sender.
        unsafe { sys::send::send_vectored(self.s, bufs, usize::MAX) }
            .map_err(|e| io::Error::other(format!("gnutls_record_send: {}", strerror(e))))
    }
}

// Transport for descriptors that are not sockets. GnuTLS's own transport
// for a descriptor (gnutls_transport_set_int2) moves bytes with recv(2)
// and sendmsg(2), which fail with ENOTSOCK on a pipe, so the handshake
// fails ("Error in the pull function"). With -s, standard input and
// output may well be pipes (a shell pipeline, ssh): there these callbacks
// use read(2), write(2) and poll(2), which work on any descriptor. Sockets
// keep GnuTLS's own transport. GnuTLS reads errno after a -1: EINTR and
// EAGAIN come back as GNUTLS_E_INTERRUPTED and _AGAIN, which the handshake
// loop and Session's recv and send_all retry.

fn fd_ptr(fd: RawFd) -> sys::gnutls_transport_ptr_t {
    fd as isize as sys::gnutls_transport_ptr_t
}

fn ptr_fd(p: sys::gnutls_transport_ptr_t) -> RawFd {
    p as isize as RawFd
}

unsafe extern "C" fn fd_pull(p: sys::gnutls_transport_ptr_t, data: *mut c_void, n: usize) -> isize {
    // SAFETY: GnuTLS passes a buffer writable for n bytes.
    unsafe { libc::read(ptr_fd(p), data, n) }
}

unsafe extern "C" fn fd_push(
    p: sys::gnutls_transport_ptr_t,
    data: *const c_void,
    n: usize,
) -> isize {
    // SAFETY: GnuTLS passes n readable bytes.
    unsafe { libc::write(ptr_fd(p), data, n) }
}

unsafe extern "C" fn fd_pull_timeout(p: sys::gnutls_transport_ptr_t, ms: c_uint) -> c_int {
    let mut pfd = libc::pollfd {
        fd: ptr_fd(p),
        events: libc::POLLIN,
        revents: 0,
    };
    // GNUTLS_INDEFINITE_TIMEOUT and anything past i32::MAX: wait forever.
    let t = c_int::try_from(ms).unwrap_or(-1);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, t) }
}

/// The first record from the client must be a TLS handshake record (type
/// 22, version 3.x): the ClientHello. Anything else is plain text sent
/// after NBD_OPT_STARTTLS, such as options written in the same packet as
/// STARTTLS by a man in the middle (CVE-2021-3716's class). Those bytes
/// are never taken as options (the negotiation reads exactly one option
/// at a time, so they are still in the socket) and GnuTLS would refuse
/// them too, with an "unexpected packet"; this says what happened. Waits
/// for the client's first bytes without consuming them (MSG_PEEK); skips
/// the check where the descriptor is not a socket (`-s` on pipes).
fn refuse_plain_text(fd: RawFd) -> Result<(), String> {
    let mut peek = [0u8; 16];
    let n = loop {
        // SAFETY: peek is writable for its length; MSG_PEEK leaves the
        // bytes for GnuTLS.
        let n = unsafe { libc::recv(fd, peek.as_mut_ptr().cast(), peek.len(), libc::MSG_PEEK) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n <= 0 {
        return Ok(()); // EOF or not a socket: GnuTLS reports it
    }
    let p = &peek[..n as usize];
    if p[0] != 22 || (p.len() >= 2 && p[1] != 3) {
        let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "client sent plain text after NBD_OPT_STARTTLS (starting {hex}), \
             not a TLS ClientHello; refusing it"
        ));
    }
    Ok(())
}

/// One direction of a connection: plain text, or through TLS (the file
/// keeps the descriptor the session uses open).
pub enum Stream {
    Plain(File),
    Tls(Arc<Session>, #[allow(dead_code)] File),
    /// Only while [`Stream::start_tls`] swaps the variants.
    Detached,
}

impl Stream {
    /// After the STARTTLS ACK has been sent: runs the handshake and moves
    /// both directions into TLS.
    pub fn start_tls(rd: &mut Stream, wr: &mut Stream) -> Result<(), String> {
        let (Stream::Plain(r), Stream::Plain(w)) = (&*rd, &*wr) else {
            return Err("TLS is already up".into());
        };
        let is_socket = |f: &File| f.metadata().is_ok_and(|m| m.file_type().is_socket());
        let sockets = is_socket(r) && is_socket(w);
        refuse_plain_text(r.as_raw_fd())?;
        let sess = Arc::new(Session::handshake(r.as_raw_fd(), w.as_raw_fd(), sockets)?);
        for (s, sess) in [(rd, Arc::clone(&sess)), (wr, sess)] {
            if let Stream::Plain(f) = std::mem::replace(s, Stream::Detached) {
                *s = Stream::Tls(sess, f);
            }
        }
        Ok(())
    }

    fn detached() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "stream detached")
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(f) => f.read(buf),
            Stream::Tls(s, _) => s.recv(buf),
            Stream::Detached => Err(Stream::detached()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(f) => f.write(buf),
            Stream::Tls(s, _) => s.send_all(&[IoSlice::new(buf)]),
            Stream::Detached => Err(Stream::detached()),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(f) => f.write_vectored(bufs),
            Stream::Tls(s, _) => s.send_all(bufs),
            Stream::Detached => Err(Stream::detached()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
