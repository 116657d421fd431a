//! TLS for the client, over GnuTLS, inside the non-blocking pump.
//!
//! GnuTLS never touches the socket: its push and pull functions work on two
//! buffers of ciphertext that the driver moves to and from the socket with
//! the same non-blocking send(2)/recv(2) as plain text. So a session never
//! blocks, the library creates no thread, and poll(2) directions stay the
//! driver's to compute (see `driver.rs`).
//!
//! Credentials follow libnbd 1.14 (lib/crypto.c): a PSK file if one is set
//! (`username:hexkey` lines, as psktool writes them); else X.509 from the
//! certificates directory (ca-cert.pem required, client-cert.pem and
//! client-key.pem optional, ca-crl.pem optional), the default directories
//! being /etc/pki/libnbd for root and $HOME/.pki/libnbd then
//! $HOME/.config/pki/libnbd for others; else the system's CAs. The server's
//! certificate is checked against the host name when TLS verification is
//! on and we connected over TCP to a named host; over a Unix socket there
//! is no name to check and any certificate is accepted, as libnbd does.
//!
//! This is the only module that calls GnuTLS; every pointer it passes is
//! one it owns, and every result is checked.

use crate::errors::{err, Error};
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_uint, c_void};

use nbd_gnutls as sys;
use sys::secret::Zeroizing;

/// libnbd's priority strings.
const PRIORITY: &[u8] = b"NORMAL:-VERS-SSL3.0\0";
const PRIORITY_PSK: &[u8] = b"NORMAL:-VERS-SSL3.0:+ECDHE-PSK:+DHE-PSK:+PSK\0";

/// How much ciphertext may wait for the socket before we stop encrypting.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// How much plain text one call of [`Session::send`] encrypts.
const BATCH: usize = 128 * 1024;

/// What a connection needs to set up TLS, taken from the handle's
/// settings when it connects.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub psk_file: Option<CString>,
    /// For PSK: the user name set, else the local one (resolved lazily).
    pub username: Option<CString>,
    pub certificates: Option<CString>,
    pub verify_peer: bool,
    /// The host name when connected over TCP (SNI and verification).
    pub hostname: Option<CString>,
}

/// The message of a GnuTLS error code.
use sys::strerror;

fn check(what: &str, code: c_int) -> Result<c_int, Error> {
    if code < 0 {
        Err(err(libc::EIO, format!("{what}: {}", strerror(code))))
    } else {
        Ok(code)
    }
}

/// The two ciphertext buffers GnuTLS's transport functions work on. Boxed
/// so the pointer GnuTLS holds stays valid when the session moves.
struct Io {
    session: sys::gnutls_session_t,
    /// Ciphertext for the socket, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Ciphertext from the socket, from `in_pos`.
    inb: Vec<u8>,
    in_pos: usize,
    /// The socket said EOF.
    eof: bool,
    /// `pull` had nothing to give (it said EAGAIN) since this was reset.
    starved: bool,
}

unsafe extern "C" fn push(
    ptr: sys::gnutls_transport_ptr_t,
    data: *const c_void,
    n: usize,
) -> isize {
    // SAFETY: ptr is the Box<Io> registered with this session, alive as
    // long as the session (Session drops the session first); GnuTLS
    // passes `n` readable bytes at `data`.
    let io = unsafe { &mut *ptr.cast::<Io>() };
    if n > 0 {
        io.out
            .extend_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), n) });
    }
    n as isize
}

unsafe extern "C" fn pull(ptr: sys::gnutls_transport_ptr_t, data: *mut c_void, n: usize) -> isize {
    // SAFETY: as for push; GnuTLS passes `n` writable bytes at `data`.
    let io = unsafe { &mut *ptr.cast::<Io>() };
    let avail = io.inb.len() - io.in_pos;
    if avail == 0 {
        if io.eof {
            return 0;
        }
        io.starved = true;
        // SAFETY: the session this Io belongs to.
        unsafe { sys::gnutls_transport_set_errno(io.session, libc::EAGAIN) };
        return -1;
    }
    let k = avail.min(n);
    // SAFETY: k <= n bytes into GnuTLS's buffer, from our own.
    unsafe {
        std::ptr::copy_nonoverlapping(io.inb.as_ptr().add(io.in_pos), data.cast::<u8>(), k);
    }
    io.in_pos += k;
    if io.in_pos == io.inb.len() {
        io.inb.clear();
        io.in_pos = 0;
    }
    k as isize
}

unsafe extern "C" fn pull_timeout(ptr: sys::gnutls_transport_ptr_t, _ms: c_uint) -> c_int {
    // SAFETY: as for push.
    let io = unsafe { &*ptr.cast::<Io>() };
    c_int::from(io.in_pos < io.inb.len() || io.eof)
}

/// Credentials a session refers to; freed after the session.
enum Creds {
    Cert(sys::gnutls_certificate_credentials_t),
    Psk(sys::gnutls_psk_client_credentials_t),
}

impl Drop for Creds {
    fn drop(&mut self) {
        // SAFETY: each pointer was allocated by the matching GnuTLS call
        // and is freed once, after the session that used it.
        unsafe {
            match *self {
                Creds::Cert(c) => sys::gnutls_certificate_free_credentials(c),
                Creds::Psk(c) => sys::gnutls_psk_free_client_credentials(c),
            }
        }
    }
}

/// One client TLS session.
pub struct Session {
    session: sys::gnutls_session_t,
    io: Box<Io>,
    _creds: Option<Creds>,
    handshake_done: bool,
    /// The record framing of everything the server sends, checked as it
    /// arrives.
    framing: Framing,
}

/// The largest TLS record (TLS 1.2's ciphertext limit; 1.3's is lower).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// Follows the record headers in the server's byte stream, so plain text
/// where a TLS record should be is caught the moment it arrives, and
/// reported as what it is. GnuTLS rejects it too, but as EIO with "An
/// unexpected TLS packet was received", which does not say that the
/// server (or a man in the middle) wrote outside TLS after the ACK to
/// NBD_OPT_STARTTLS: CVE-2021-3716's class.
#[derive(Default)]
struct Framing {
    /// Bytes of the current record's body still to come.
    body_left: usize,
    header: [u8; 5],
    header_len: usize,
    /// Where the stream stopped being TLS: the header bytes seen.
    bad: Option<Vec<u8>>,
}

impl Framing {
    fn scan(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.bad.is_none() {
            if self.body_left > 0 {
                let k = self.body_left.min(data.len());
                self.body_left -= k;
                data = &data[k..];
                continue;
            }
            let k = (5 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + k].copy_from_slice(&data[..k]);
            self.header_len += k;
            data = &data[k..];
            let h = &self.header[..self.header_len];
            // Content type 20-23, version 3.x, a length TLS allows; each
            // checked as soon as its bytes are here.
            let len = (h.len() == 5).then(|| usize::from(u16::from_be_bytes([h[3], h[4]])));
            if !(20..=23).contains(&h[0])
                || h.get(1).is_some_and(|&v| v != 3)
                || h.get(2).is_some_and(|&v| v > 4)
                || len.is_some_and(|l| l > MAX_RECORD)
            {
                let mut seen = h.to_vec();
                seen.extend_from_slice(&data[..data.len().min(11)]);
                self.bad = Some(seen);
                return;
            }
            if let Some(l) = len {
                self.body_left = l;
                self.header_len = 0;
            }
        }
    }
}

// SAFETY: the session is only used by whichever thread holds the handle's
// lock; GnuTLS sessions may move between threads.
unsafe impl Send for Session {}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: our session, deinitialised once; the credentials
        // (`_creds`) and transport (`io`) are dropped after it.
        unsafe { sys::gnutls_deinit(self.session) };
    }
}

/// What a step of the record layer did.
pub enum Recv {
    /// Plain text bytes received.
    Data(usize),
    /// The peer ended the session (or the connection): EOF.
    Eof,
    /// More ciphertext is needed from the socket.
    Again,
}

impl Session {
    /// A client session with the credentials `p` names.
    pub fn new(p: &Params) -> Result<Session, Error> {
        let mut s: sys::gnutls_session_t = std::ptr::null_mut();
        // SAFETY: s is written by gnutls_init.
        check("gnutls_init", unsafe {
            sys::gnutls_init(&mut s, sys::GNUTLS_CLIENT | sys::GNUTLS_NONBLOCK)
        })?;
        let mut sess = Session {
            session: s,
            io: Box::new(Io {
                session: s,
                out: Vec::new(),
                out_pos: 0,
                inb: Vec::new(),
                in_pos: 0,
                eof: false,
                starved: false,
            }),
            _creds: None,
            handshake_done: false,
            framing: Framing::default(),
        };
        let io_ptr: *mut Io = &mut *sess.io;
        // SAFETY: the session is ours; io_ptr stays valid as long as the
        // session (both live in `sess`, the session is freed first).
        unsafe {
            sys::gnutls_transport_set_ptr(s, io_ptr.cast());
            sys::gnutls_transport_set_push_function(s, push);
            sys::gnutls_transport_set_pull_function(s, pull);
            sys::gnutls_transport_set_pull_timeout_function(s, pull_timeout);
            sys::gnutls_handshake_set_timeout(s, 0);
        }
        if let Some(h) = &p.hostname {
            // SAFETY: h is a valid string of the given length.
            check("gnutls_server_name_set", unsafe {
                sys::gnutls_server_name_set(
                    s,
                    sys::GNUTLS_NAME_DNS,
                    h.as_ptr().cast(),
                    h.as_bytes().len(),
                )
            })?;
        }
        sess._creds = Some(match &p.psk_file {
            Some(f) => sess.psk(f, p.username.as_deref())?,
            None => sess.x509(p)?,
        });
        Ok(sess)
    }

    fn priority(&self, prio: &[u8]) -> Result<(), Error> {
        let prio = CStr::from_bytes_with_nul(prio).map_err(|_| err(libc::EINVAL, "priority"))?;
        // SAFETY: valid session and string; err_pos may be NULL.
        check("gnutls_priority_set_direct", unsafe {
            sys::gnutls_priority_set_direct(self.session, prio.as_ptr(), std::ptr::null_mut())
        })?;
        Ok(())
    }

    fn psk(&self, file: &CStr, username: Option<&CStr>) -> Result<Creds, Error> {
        self.priority(PRIORITY_PSK)?;
        let Some(user) = username else {
            return Err(err(
                libc::EINVAL,
                "TLS PSK: no user name (nbd_set_tls_username, or $LOGNAME)",
            ));
        };
        let mut key = lookup_psk(file, user)?;
        let mut c: sys::gnutls_psk_client_credentials_t = std::ptr::null_mut();
        // SAFETY: c is written by the call.
        check("gnutls_psk_allocate_client_credentials", unsafe {
            sys::gnutls_psk_allocate_client_credentials(&mut c)
        })?;
        let creds = Creds::Psk(c);
        let datum = sys::gnutls_datum_t {
            data: key.as_mut_ptr(),
            size: key.len() as c_uint,
        };
        // SAFETY: valid credentials, user name and key datum (GnuTLS
        // copies both, so our copy of the key is wiped right after).
        let r = unsafe {
            sys::gnutls_psk_set_client_credentials(
                c,
                user.as_ptr(),
                &datum,
                sys::GNUTLS_PSK_KEY_HEX,
            )
        };
        drop(key); // Zeroizing: wiped now, whatever GnuTLS said
        check("gnutls_psk_set_client_credentials", r)?;
        // SAFETY: valid session and credentials, which outlive it.
        check("gnutls_credentials_set", unsafe {
            sys::gnutls_credentials_set(self.session, sys::GNUTLS_CRD_PSK, c)
        })?;
        Ok(creds)
    }

    fn x509(&self, p: &Params) -> Result<Creds, Error> {
        self.priority(PRIORITY)?;
        let mut found = None;
        for dir in cert_dirs(p.certificates.as_deref()) {
            if let Some(c) = load_certificates(&dir)? {
                found = Some(c);
                break;
            }
        }
        let creds = match found {
            Some(c) => c,
            None => {
                let mut c: sys::gnutls_certificate_credentials_t = std::ptr::null_mut();
                // SAFETY: c is written by the call.
                check("gnutls_certificate_allocate_credentials", unsafe {
                    sys::gnutls_certificate_allocate_credentials(&mut c)
                })?;
                let creds = Creds::Cert(c);
                // SAFETY: valid credentials.
                check("gnutls_certificate_set_x509_system_trust", unsafe {
                    sys::gnutls_certificate_set_x509_system_trust(c)
                })?;
                creds
            }
        };
        let Creds::Cert(c) = creds else {
            unreachable!()
        };
        if p.verify_peer {
            if let Some(h) = &p.hostname {
                // SAFETY: valid session and host name (GnuTLS copies it).
                unsafe { sys::gnutls_session_set_verify_cert(self.session, h.as_ptr(), 0) };
            }
        }
        // SAFETY: valid session and credentials, which outlive it.
        check("gnutls_credentials_set", unsafe {
            sys::gnutls_credentials_set(self.session, sys::GNUTLS_CRD_CERTIFICATE, c)
        })?;
        Ok(creds)
    }

    /// Runs the handshake as far as it goes. Ok(true) once it is done.
    pub fn handshake(&mut self) -> Result<bool, Error> {
        if self.handshake_done {
            return Ok(true);
        }
        self.check_framing()?;
        // SAFETY: our session.
        let r = unsafe { sys::gnutls_handshake(self.session) };
        if r == 0 {
            self.handshake_done = true;
            return Ok(true);
        }
        // SAFETY: pure function.
        if unsafe { sys::gnutls_error_is_fatal(r) } == 0 {
            return Ok(false);
        }
        // SAFETY: our session.
        let (i, o) = unsafe {
            (
                sys::gnutls_handshake_get_last_in(self.session),
                sys::gnutls_handshake_get_last_out(self.session),
            )
        };
        Err(err(
            libc::EIO,
            format!("gnutls_handshake: {} ({i}/{o})", strerror(r)),
        ))
    }

    /// A description for debug messages: protocol and cipher.
    pub fn describe(&self) -> String {
        // SAFETY: our session; the names are static strings or NULL.
        unsafe {
            let v = sys::gnutls_protocol_get_name(sys::gnutls_protocol_get_version(self.session));
            let c = sys::gnutls_cipher_get_name(sys::gnutls_cipher_get(self.session));
            let name = |p: *const c_char| {
                if p.is_null() {
                    "?".to_string()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            format!("{} cipher {}", name(v), name(c))
        }
    }

    /// Encrypts plain text from `bufs`, at most [`BATCH`] bytes of it
    /// (see `nbd_gnutls::send` for how pieces become records); returns
    /// how many bytes were taken.
    pub fn send(&mut self, bufs: &[std::io::IoSlice<'_>]) -> Result<usize, Error> {
        // SAFETY: our session, handshake done; our push never blocks, so
        // this returns once the records are in our output buffer.
        unsafe { sys::send::send_vectored(self.session, bufs, BATCH) }
            .map_err(|e| err(libc::EIO, format!("gnutls_record_send: {}", strerror(e))))
    }

    /// Fails if the server sent something that is not a TLS record (see
    /// [`Framing`]); the driver also refuses bytes that were already
    /// waiting before the ClientHello went out.
    fn check_framing(&self) -> Result<(), Error> {
        let Some(seen) = &self.framing.bad else {
            return Ok(());
        };
        let hex = crate::driver::hex(seen);
        Err(err(
            libc::EPROTO,
            if self.handshake_done {
                format!("server sent plain text inside the TLS session, not a TLS record (starting {hex})")
            } else {
                format!(
                    "handshake: server answered the TLS handshake with plain text, not TLS \
                     (starting {hex})"
                )
            },
        ))
    }

    /// Decrypts into `buf`.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Recv, Error> {
        self.check_framing()?;
        let mut stalls = 0;
        loop {
            self.io.starved = false;
            // SAFETY: buf is writable for its length.
            let r = unsafe {
                sys::gnutls_record_recv(self.session, buf.as_mut_ptr().cast(), buf.len())
            };
            if r > 0 {
                return Ok(Recv::Data(r as usize));
            }
            if r == 0 {
                return Ok(Recv::Eof);
            }
            let r = r as c_int;
            match r {
                // A record that carried no data (a TLS 1.3 session ticket,
                // which OpenSSL servers send after the handshake) makes
                // GnuTLS stop with AGAIN though it never ran out of
                // ciphertext: more may be in our buffer or in its own.
                // Saying "again" then would send the caller to poll(2) for
                // bytes that were read long ago, and hang (a ticket and
                // the first reply in one recv). So AGAIN means "read the
                // socket" only once our pull had nothing to give; the bound
                // is a guard against a GnuTLS that never says why.
                sys::GNUTLS_E_AGAIN | sys::GNUTLS_E_INTERRUPTED => {
                    stalls += 1;
                    if !self.io.starved && stalls < 64 {
                        continue;
                    }
                    return Ok(Recv::Again);
                }
                // Servers close without close_notify after NBD_CMD_DISC.
                sys::GNUTLS_E_PREMATURE_TERMINATION => return Ok(Recv::Eof),
                // SAFETY: pure function.
                _ if unsafe { sys::gnutls_error_is_fatal(r) } == 0 => continue,
                _ => {
                    return Err(err(
                        libc::EIO,
                        format!("gnutls_record_recv: {}", strerror(r)),
                    ))
                }
            }
        }
    }

    /// Ciphertext waiting for the socket.
    pub fn pending_out(&self) -> &[u8] {
        &self.io.out[self.io.out_pos..]
    }

    /// `n` bytes of [`Session::pending_out`] went to the socket.
    pub fn out_sent(&mut self, n: usize) {
        self.io.out_pos += n;
        if self.io.out_pos >= self.io.out.len() {
            self.io.out.clear();
            self.io.out_pos = 0;
        }
    }

    /// Whether the socket's queue is too long to encrypt more now.
    pub fn out_full(&self) -> bool {
        self.io.out.len() - self.io.out_pos >= OUT_HIGH_WATER
    }

    /// Room for ciphertext from the socket; then [`Session::in_received`].
    pub fn in_buf(&mut self) -> &mut [u8] {
        const CHUNK: usize = 64 * 1024;
        let io = &mut *self.io;
        if io.in_pos > 0 && io.in_pos == io.inb.len() {
            io.inb.clear();
            io.in_pos = 0;
        }
        let old = io.inb.len();
        io.inb.resize(old + CHUNK, 0);
        &mut io.inb[old..]
    }

    /// `n` bytes landed in the last [`Session::in_buf`] (0: EOF).
    pub fn in_received(&mut self, n: usize) {
        const CHUNK: usize = 64 * 1024;
        let start = self.io.inb.len() - CHUNK;
        self.framing.scan(&self.io.inb[start..start + n]);
        self.io.inb.truncate(start + n);
        if n == 0 {
            self.io.eof = true;
        }
    }

    /// The socket failed: drop the unfilled room.
    pub fn in_failed(&mut self) {
        self.in_received(0);
        self.io.eof = false;
    }

    /// Whether plain text or ciphertext is waiting to be read without
    /// the socket (poll(2) would not see it).
    pub fn input_pending(&self) -> bool {
        // SAFETY: our session.
        self.io.in_pos < self.io.inb.len()
            || unsafe { sys::gnutls_record_check_pending(self.session) } > 0
    }
}

/// The user name for PSK: the one set, else $LOGNAME, else getlogin_r(3).
pub fn local_username() -> Option<CString> {
    use std::os::unix::ffi::OsStrExt;
    extern "C" {
        fn getlogin_r(buf: *mut c_char, size: libc::size_t) -> c_int;
    }
    if let Some(v) = std::env::var_os("LOGNAME") {
        return CString::new(v.as_bytes()).ok();
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    if unsafe { getlogin_r(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    CStr::from_bytes_until_nul(&buf).ok().map(|c| c.to_owned())
}

/// The hex key of `user` in a psktool file (`username:hexkey` lines).
/// Both the file's contents and the key returned are wiped when dropped:
/// every key in the file is a secret, not only the one we use.
fn lookup_psk(file: &CStr, user: &CStr) -> Result<Zeroizing<Vec<u8>>, Error> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(file.to_bytes()));
    // std::fs::read sizes its buffer from the file's length, so the
    // contents are not left behind in a reallocated buffer.
    let text = std::fs::read(path).map(Zeroizing::new).map_err(|e| {
        err(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("open: {}", path.display()),
        )
    })?;
    let u = user.to_bytes();
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > u.len() + 1 && line.starts_with(u) && line[u.len()] == b':' {
            let key = &line[u.len() + 1..];
            if !key.iter().all(u8::is_ascii_hexdigit) {
                return Err(err(
                    libc::EINVAL,
                    format!(
                        "{}: key of user {} is not hexadecimal",
                        path.display(),
                        user.to_string_lossy()
                    ),
                ));
            }
            return Ok(Zeroizing::new(key.to_vec()));
        }
    }
    Err(err(
        libc::EINVAL,
        format!(
            "{}: username {} was not found in PSK file",
            path.display(),
            user.to_string_lossy()
        ),
    ))
}

/// The directories to look for certificates in, as libnbd.
fn cert_dirs(set: Option<&CStr>) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(d) = set {
        return vec![d.to_bytes().to_vec()];
    }
    // SAFETY: plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    match std::env::var_os("HOME") {
        Some(home) if !root => {
            let h = home.as_bytes();
            vec![
                [h, b"/.pki/libnbd"].concat(),
                [h, b"/.config/pki/libnbd"].concat(),
            ]
        }
        _ if root => vec![b"/etc/pki/libnbd".to_vec()],
        _ => Vec::new(),
    }
}

fn readable(path: &CStr) -> bool {
    // SAFETY: valid path string.
    unsafe { libc::access(path.as_ptr(), libc::R_OK) == 0 }
}

fn join(dir: &[u8], name: &str) -> Result<CString, Error> {
    CString::new([dir, b"/", name.as_bytes()].concat())
        .map_err(|_| err(libc::EINVAL, "certificate directory contains a NUL byte"))
}

/// Credentials from a certificates directory, or None if it has no
/// readable ca-cert.pem.
fn load_certificates(dir: &[u8]) -> Result<Option<Creds>, Error> {
    let ca = join(dir, "ca-cert.pem")?;
    let cert = join(dir, "client-cert.pem")?;
    let key = join(dir, "client-key.pem")?;
    let crl = join(dir, "ca-crl.pem")?;
    if !readable(&ca) {
        return Ok(None);
    }
    let mut c: sys::gnutls_certificate_credentials_t = std::ptr::null_mut();
    // SAFETY: c is written by the call.
    check("gnutls_certificate_allocate_credentials", unsafe {
        sys::gnutls_certificate_allocate_credentials(&mut c)
    })?;
    let creds = Creds::Cert(c);
    let file_err = |what: &str, path: &CStr, code: c_int| {
        err(
            libc::EIO,
            format!("{what}: {}: {}", path.to_string_lossy(), strerror(code)),
        )
    };
    // SAFETY: valid credentials and paths, here and below.
    let r = unsafe {
        sys::gnutls_certificate_set_x509_trust_file(c, ca.as_ptr(), sys::GNUTLS_X509_FMT_PEM)
    };
    if r < 0 {
        return Err(file_err("gnutls_certificate_set_x509_trust_file", &ca, r));
    }
    if readable(&cert) && readable(&key) {
        // SAFETY: as above.
        let r = unsafe {
            sys::gnutls_certificate_set_x509_key_file(
                c,
                cert.as_ptr(),
                key.as_ptr(),
                sys::GNUTLS_X509_FMT_PEM,
            )
        };
        if r < 0 {
            return Err(file_err("gnutls_certificate_set_x509_key_file", &cert, r));
        }
    }
    if readable(&crl) {
        // SAFETY: as above.
        let r = unsafe {
            sys::gnutls_certificate_set_x509_crl_file(c, crl.as_ptr(), sys::GNUTLS_X509_FMT_PEM)
        };
        if r < 0 {
            return Err(file_err("gnutls_certificate_set_x509_crl_file", &crl, r));
        }
    }
    Ok(Some(creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_records_and_catches_plain_text() {
        // Two records (a 3-byte handshake record, a 2-byte alert), fed in
        // pieces that split headers and bodies.
        let stream = [22, 3, 3, 0, 3, 1, 2, 3, 21, 3, 3, 0, 2, 2, 40];
        for cut in 0..stream.len() {
            let mut f = Framing::default();
            f.scan(&stream[..cut]);
            f.scan(&stream[cut..]);
            assert!(f.bad.is_none(), "cut at {cut}");
            assert_eq!((f.body_left, f.header_len), (0, 0));
        }
        // An NBD option reply where a record should start: caught on its
        // first byte, even with nothing else yet.
        let mut f = Framing::default();
        f.scan(&stream[..8]);
        f.scan(&[0x00]);
        assert_eq!(f.bad.as_deref(), Some(&[0u8][..]));
        // Bad version, bad minor version, a length TLS does not allow.
        for bad in [&[23u8, 4][..], &[23, 3, 9], &[23, 3, 3, 0x89, 0x04]] {
            let mut f = Framing::default();
            f.scan(bad);
            assert_eq!(f.bad.as_deref(), Some(bad));
        }
        // Scanning stops at the first bad header, keeping it and the next
        // 11 bytes for the error message.
        let mut f = Framing::default();
        f.scan(&[0x5a; 40]);
        assert_eq!(f.bad.as_ref().map(Vec::len), Some(16));
    }

    #[test]
    fn psk_lookup() {
        let dir = std::env::temp_dir().join(format!("nbd-psk-{}", std::process::id()));
        std::fs::write(&dir, "alice:0011aabb\r\nbob:zz\nalicex:ff\n").unwrap();
        let f = CString::new(dir.to_str().unwrap()).unwrap();
        let u = |n: &str| CString::new(n).unwrap();
        assert_eq!(lookup_psk(&f, &u("alice")).unwrap()[..], b"0011aabb"[..]);
        assert_eq!(lookup_psk(&f, &u("bob")).unwrap_err().errno, libc::EINVAL);
        assert_eq!(lookup_psk(&f, &u("carol")).unwrap_err().errno, libc::EINVAL);
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(lookup_psk(&f, &u("alice")).unwrap_err().errno, libc::ENOENT);
    }

    #[test]
    fn session_setup_fails_cleanly() {
        let p = Params {
            psk_file: Some(CString::new("/nonexistent/psk").unwrap()),
            username: Some(CString::new("alice").unwrap()),
            ..Default::default()
        };
        assert!(Session::new(&p).is_err());
        let p = Params {
            certificates: Some(CString::new("/nonexistent").unwrap()),
            hostname: Some(CString::new("localhost").unwrap()),
            verify_peer: true,
            ..Default::default()
        };
        let mut s = Session::new(&p).unwrap();
        // Nothing from the server yet: the ClientHello is queued.
        assert!(!s.handshake().unwrap());
        assert!(!s.pending_out().is_empty());
    }
}
