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
//! GnuTLS itself is behind nbd-gnutls's safe API (sessions, credentials,
//! the ciphertext buffers of its buffer transport); this module holds the
//! client's policy: which credentials, the framing check, and the pump's
//! side of the buffers.

use crate::errors::{err, Error};
use std::ffi::{CStr, CString};

use nbd_gnutls::secret::Zeroizing;
use nbd_gnutls::{self as gnutls, Certificate, Credentials, PskClient, Side};
use std::sync::Arc;

/// The GnuTLS priority string used unless nbd_set_tls_priority sets
/// another (what nbd_get_tls_priority reports then). A PSK session adds
/// the PSK key exchanges, and to this default, on a CPU with AES
/// instructions, AES-128-GCM ahead of ChaCha20 (`nbd_gnutls::priority`).
pub const DEFAULT_PRIORITY: &CStr = gnutls::priority::DEFAULT;

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
    /// The host name when connected over TCP, or the one set with
    /// nbd_set_tls_hostname (SNI and verification).
    pub hostname: Option<CString>,
    /// nbd_set_tls_priority's string; None means [`DEFAULT_PRIORITY`].
    pub priority: Option<CString>,
}

/// A GnuTLS failure as the handle reports it.
fn gt(e: gnutls::Error) -> Error {
    err(e.errno(), e.to_string())
}

/// One client TLS session.
pub struct Session {
    /// With the buffer transport: the driver moves its ciphertext.
    session: gnutls::Session,
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
        let mut s = gnutls::Session::new(Side::Client, true).map_err(gt)?;
        s.transport_buffers();
        s.set_handshake_timeout(0);
        if let Some(h) = &p.hostname {
            s.set_server_name(h).map_err(gt)?;
        }
        let mut sess = Session {
            session: s,
            handshake_done: false,
            framing: Framing::default(),
        };
        match &p.psk_file {
            Some(f) => {
                let prio = match &p.priority {
                    Some(user) => gnutls::priority::psk_with(user),
                    None => gnutls::priority::psk_default(),
                };
                sess.set_priority(&prio)?;
                sess.psk(f, p.username.as_deref())?
            }
            None => {
                sess.set_priority(p.priority.as_deref().unwrap_or(DEFAULT_PRIORITY))?;
                sess.x509(p)?
            }
        }
        Ok(sess)
    }

    /// An invalid priority string fails here, so the connection fails.
    fn set_priority(&mut self, prio: &CStr) -> Result<(), Error> {
        self.session.set_priority(prio).map_err(|e| {
            err(
                libc::EINVAL,
                format!("TLS priority {:?}: {e}", prio.to_string_lossy()),
            )
        })
    }

    fn psk(&mut self, file: &CStr, username: Option<&CStr>) -> Result<(), Error> {
        let Some(user) = username else {
            return Err(err(
                libc::EINVAL,
                "TLS PSK: no user name (nbd_set_tls_username, or $LOGNAME)",
            ));
        };
        let key = lookup_psk(file, user)?;
        let c = PskClient::new(user, key).map_err(gt)?;
        self.session
            .set_credentials(Arc::new(Credentials::PskClient(c)))
            .map_err(gt)
    }

    fn x509(&mut self, p: &Params) -> Result<(), Error> {
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
                let c = Certificate::new().map_err(gt)?;
                c.set_system_trust().map_err(gt)?;
                c
            }
        };
        if p.verify_peer {
            if let Some(h) = &p.hostname {
                self.session.verify_cert(Some(h));
            }
        }
        self.session
            .set_credentials(Arc::new(Credentials::Certificate(creds)))
            .map_err(gt)
    }

    /// Runs the handshake as far as it goes. Ok(true) once it is done.
    pub fn handshake(&mut self) -> Result<bool, Error> {
        if self.handshake_done {
            return Ok(true);
        }
        self.check_framing()?;
        match self.session.handshake() {
            Ok(done) => {
                self.handshake_done = done;
                Ok(done)
            }
            Err(e) => {
                let (i, o) = self.session.handshake_last();
                Err(err(e.errno(), format!("{e} ({i}/{o})")))
            }
        }
    }

    /// A description for debug messages: protocol and cipher.
    pub fn describe(&self) -> String {
        self.session.describe()
    }

    /// Encrypts plain text from `bufs`, at most [`BATCH`] bytes of it
    /// (see `nbd_gnutls::send` for how pieces become records); returns
    /// how many bytes were taken.
    pub fn send(&mut self, bufs: &[std::io::IoSlice<'_>]) -> Result<usize, Error> {
        // Our push never blocks, so this returns once the records are in
        // our output buffer.
        self.session.send_vectored(bufs, BATCH).map_err(gt)
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
            self.session.buffers().starved = false;
            let e = match self.session.recv(buf) {
                Ok(0) => return Ok(Recv::Eof),
                Ok(n) => return Ok(Recv::Data(n)),
                Err(e) => e,
            };
            match e.code {
                // A record that carried no data (a TLS 1.3 session ticket,
                // which OpenSSL servers send after the handshake) makes
                // GnuTLS stop with AGAIN though it never ran out of
                // ciphertext: more may be in our buffer or in its own.
                // Saying "again" then would send the caller to poll(2) for
                // bytes that were read long ago, and hang (a ticket and
                // the first reply in one recv). So AGAIN means "read the
                // socket" only once our pull had nothing to give; the bound
                // is a guard against a GnuTLS that never says why.
                gnutls::GNUTLS_E_AGAIN | gnutls::GNUTLS_E_INTERRUPTED => {
                    stalls += 1;
                    if !self.session.buffers().starved && stalls < 64 {
                        continue;
                    }
                    return Ok(Recv::Again);
                }
                // Servers close without close_notify after NBD_CMD_DISC.
                gnutls::GNUTLS_E_PREMATURE_TERMINATION => return Ok(Recv::Eof),
                _ if !e.is_fatal() => continue,
                _ => return Err(gt(e)),
            }
        }
    }

    /// Ciphertext waiting for the socket.
    pub fn pending_out(&self) -> &[u8] {
        let io = self.session.buffers_ref();
        &io.out[io.out_pos..]
    }

    /// `n` bytes of [`Session::pending_out`] went to the socket.
    pub fn out_sent(&mut self, n: usize) {
        let io = self.session.buffers();
        io.out_pos += n;
        if io.out_pos >= io.out.len() {
            io.out.clear();
            io.out_pos = 0;
        }
    }

    /// Whether the socket's queue is too long to encrypt more now.
    pub fn out_full(&self) -> bool {
        let io = self.session.buffers_ref();
        io.out.len() - io.out_pos >= OUT_HIGH_WATER
    }

    /// Room for ciphertext from the socket; then [`Session::in_received`].
    pub fn in_buf(&mut self) -> &mut [u8] {
        const CHUNK: usize = 64 * 1024;
        let io = self.session.buffers();
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
        let io = self.session.buffers();
        let start = io.inb.len() - CHUNK;
        self.framing.scan(&io.inb[start..start + n]);
        io.inb.truncate(start + n);
        if n == 0 {
            io.eof = true;
        }
    }

    /// The socket failed: drop the unfilled room.
    pub fn in_failed(&mut self) {
        self.in_received(0);
        self.session.buffers().eof = false;
    }

    /// Whether plain text or ciphertext is waiting to be read without
    /// the socket (poll(2) would not see it).
    pub fn input_pending(&self) -> bool {
        let io = self.session.buffers_ref();
        io.in_pos < io.inb.len() || self.session.check_pending()
    }
}

/// The user name for PSK when none was set (see [`login_name`]).
pub fn local_username() -> Option<CString> {
    login_name().ok()
}

/// The local user name: $LOGNAME (even empty), else getlogin_r(3), else
/// its error (ENXIO without a controlling terminal), as libnbd 1.14.
pub fn login_name() -> Result<CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    extern "C" {
        /// POSIX; thread-safe (unlike getlogin). Not bound by the libc crate.
        fn getlogin_r(buf: *mut libc::c_char, size: libc::size_t) -> libc::c_int;
    }
    if let Some(v) = std::env::var_os("LOGNAME") {
        return CString::new(v.as_bytes()).map_err(|_| err(libc::EINVAL, "LOGNAME"));
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let r = unsafe { getlogin_r(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return Err(err(r, "getlogin_r"));
    }
    CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_owned())
        .map_err(|_| err(libc::ERANGE, "getlogin_r"))
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
fn load_certificates(dir: &[u8]) -> Result<Option<Certificate>, Error> {
    let ca = join(dir, "ca-cert.pem")?;
    let cert = join(dir, "client-cert.pem")?;
    let key = join(dir, "client-key.pem")?;
    let crl = join(dir, "ca-crl.pem")?;
    if !readable(&ca) {
        return Ok(None);
    }
    let c = Certificate::new().map_err(gt)?;
    // The errors name the call and the file.
    let what = |call: &str, path: &CStr| format!("{call}: {}", path.to_string_lossy());
    c.set_trust_file(&ca, &what("gnutls_certificate_set_x509_trust_file", &ca))
        .map_err(gt)?;
    if readable(&cert) && readable(&key) {
        c.set_key_file(
            &cert,
            &key,
            &what("gnutls_certificate_set_x509_key_file", &cert),
        )
        .map_err(gt)?;
    }
    if readable(&crl) {
        c.set_crl_file(&crl, &what("gnutls_certificate_set_x509_crl_file", &crl))
            .map_err(gt)?;
    }
    Ok(Some(c))
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
