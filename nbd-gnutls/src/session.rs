//! A TLS session: set up (priorities, server name, credentials,
//! verification, transport), handshake, records in and out. Every call
//! is checked and the session is freed when dropped, before the
//! credentials and transport buffers it refers to.
//!
//! Transports: the descriptors with GnuTLS's own recv(2)/sendmsg(2)
//! (sockets), the descriptors with read(2)/write(2)/poll(2) (any
//! descriptor), or two buffers of ciphertext that the caller moves to and
//! from its socket ([`Buffers`]: the client's non-blocking pump).

use std::ffi::CStr;
use std::io::IoSlice;
use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::os::unix::io::RawFd;
use std::sync::Arc;

use crate::creds::Credentials;
use crate::error::{check, is_fatal, Error};
use crate::{self as sys, gnutls_session_t, gnutls_transport_ptr_t};

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

struct Inner {
    s: gnutls_session_t,
    /// The buffer transport's state; GnuTLS holds a pointer to it.
    buffers: Option<Box<Buffers>>,
    /// Kept alive as long as the session.
    _creds: Vec<Arc<Credentials>>,
}

// SAFETY: a GnuTLS session may move between threads; one thread may
// receive while another sends (the halves of `Session::split` each allow
// only one of each at a time, through &mut).
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: our session, freed once, before `buffers` and `_creds`.
        unsafe { sys::gnutls_deinit(self.s) };
    }
}

/// One TLS session.
pub struct Session(Inner);

/// The ciphertext buffers of the buffer transport.
pub struct Buffers {
    session: gnutls_session_t,
    /// Ciphertext for the socket, from `out_pos`.
    pub out: Vec<u8>,
    pub out_pos: usize,
    /// Ciphertext from the socket, from `in_pos`.
    pub inb: Vec<u8>,
    pub in_pos: usize,
    /// The socket said EOF.
    pub eof: bool,
    /// The pull function had nothing to give (it said EAGAIN) since this
    /// was last reset.
    pub starved: bool,
}

impl Session {
    /// A session; `nonblock` for one whose transport may say EAGAIN.
    pub fn new(side: Side, nonblock: bool) -> Result<Session, Error> {
        let mut flags = match side {
            Side::Client => sys::GNUTLS_CLIENT,
            Side::Server => sys::GNUTLS_SERVER,
        };
        if nonblock {
            flags |= sys::GNUTLS_NONBLOCK;
        }
        let mut s: gnutls_session_t = std::ptr::null_mut();
        // SAFETY: s is written by gnutls_init.
        check("gnutls_init", unsafe { sys::gnutls_init(&mut s, flags) })?;
        Ok(Session(Inner {
            s,
            buffers: None,
            _creds: Vec::new(),
        }))
    }

    fn raw(&self) -> gnutls_session_t {
        self.0.s
    }

    pub fn set_priority(&mut self, prio: &CStr) -> Result<(), Error> {
        // SAFETY: valid session and string; err_pos may be NULL.
        check("gnutls_priority_set_direct", unsafe {
            sys::gnutls_priority_set_direct(self.raw(), prio.as_ptr(), std::ptr::null_mut())
        })
        .map(drop)
    }

    /// The server name sent (SNI).
    pub fn set_server_name(&mut self, name: &CStr) -> Result<(), Error> {
        // SAFETY: a valid string of the given length (GnuTLS copies it).
        check("gnutls_server_name_set", unsafe {
            sys::gnutls_server_name_set(
                self.raw(),
                sys::GNUTLS_NAME_DNS,
                name.as_ptr().cast(),
                name.to_bytes().len(),
            )
        })
        .map(drop)
    }

    /// Uses `creds`, which the session keeps alive.
    pub fn set_credentials(&mut self, creds: Arc<Credentials>) -> Result<(), Error> {
        let (kind, c) = creds.raw();
        // SAFETY: valid session and credentials, kept as long as it.
        check("gnutls_credentials_set", unsafe {
            sys::gnutls_credentials_set(self.raw(), kind, c)
        })?;
        self.0._creds.push(creds);
        Ok(())
    }

    /// Verifies the peer's certificate during the handshake, and its name
    /// against `hostname` when given.
    pub fn verify_cert(&mut self, hostname: Option<&CStr>) {
        let h = hostname.map_or(std::ptr::null(), |h| h.as_ptr());
        // SAFETY: valid session; the name (GnuTLS copies it) or NULL.
        unsafe { sys::gnutls_session_set_verify_cert(self.raw(), h, 0) }
    }

    /// Server: asks for, and requires, the client's certificate.
    pub fn require_client_certificate(&mut self) {
        // SAFETY: valid session.
        unsafe { sys::gnutls_certificate_server_set_request(self.raw(), sys::GNUTLS_CERT_REQUIRE) }
    }

    pub fn set_handshake_timeout(&mut self, ms: c_uint) {
        // SAFETY: valid session.
        unsafe { sys::gnutls_handshake_set_timeout(self.raw(), ms) }
    }

    /// Transport: sockets `rd` and `wr`, with GnuTLS's own functions. The
    /// descriptors must stay open as long as the session.
    pub fn transport_sockets(&mut self, rd: RawFd, wr: RawFd) {
        // SAFETY: valid session; a bad descriptor only makes I/O fail.
        unsafe { sys::gnutls_transport_set_int2(self.raw(), rd, wr) }
    }

    /// Transport: any descriptors (pipes too), with read(2), write(2) and
    /// poll(2). GnuTLS's own (`transport_sockets`) moves bytes with
    /// recv(2) and sendmsg(2), which fail with ENOTSOCK on a pipe. GnuTLS
    /// reads errno after a -1: EINTR and EAGAIN come back as
    /// GNUTLS_E_INTERRUPTED and _AGAIN.
    pub fn transport_fds(&mut self, rd: RawFd, wr: RawFd) {
        let s = self.raw();
        // SAFETY: valid session; the pointers are descriptor numbers,
        // never dereferenced.
        unsafe {
            sys::gnutls_transport_set_ptr2(s, fd_ptr(rd), fd_ptr(wr));
            sys::gnutls_transport_set_pull_function(s, fd_pull);
            sys::gnutls_transport_set_pull_timeout_function(s, fd_pull_timeout);
            sys::gnutls_transport_set_push_function(s, fd_push);
        }
    }

    /// Transport: [`Buffers`], which the caller fills from and drains to
    /// its socket (see `buffers`). The pull function says EAGAIN when it
    /// has nothing, so the session never blocks.
    pub fn transport_buffers(&mut self) {
        let mut b = Box::new(Buffers {
            session: self.raw(),
            out: Vec::new(),
            out_pos: 0,
            inb: Vec::new(),
            in_pos: 0,
            eof: false,
            starved: false,
        });
        let p: *mut Buffers = &mut *b;
        let s = self.raw();
        // SAFETY: valid session; the box lives as long as the session
        // (freed after it, see Inner's drop) and does not move.
        unsafe {
            sys::gnutls_transport_set_ptr(s, p.cast());
            sys::gnutls_transport_set_push_function(s, buf_push);
            sys::gnutls_transport_set_pull_function(s, buf_pull);
            sys::gnutls_transport_set_pull_timeout_function(s, buf_pull_timeout);
        }
        self.0.buffers = Some(b);
    }

    /// The buffers of the buffer transport.
    ///
    /// # Panics
    /// Without `transport_buffers`.
    pub fn buffers(&mut self) -> &mut Buffers {
        self.0.buffers.as_mut().expect("buffer transport")
    }

    pub fn buffers_ref(&self) -> &Buffers {
        self.0.buffers.as_ref().expect("buffer transport")
    }

    /// One step of the handshake: Ok(true) once done, Ok(false) when it
    /// must be called again (a non-fatal code: AGAIN, INTERRUPTED, a
    /// warning).
    pub fn handshake(&mut self) -> Result<bool, Error> {
        // SAFETY: our session.
        let r = unsafe { sys::gnutls_handshake(self.raw()) };
        if r == 0 {
            return Ok(true);
        }
        if !is_fatal(r) {
            return Ok(false);
        }
        Err(Error::new("gnutls_handshake", r))
    }

    /// The last handshake messages received and sent (for errors).
    pub fn handshake_last(&self) -> (c_int, c_int) {
        // SAFETY: our session.
        unsafe {
            (
                sys::gnutls_handshake_get_last_in(self.raw()),
                sys::gnutls_handshake_get_last_out(self.raw()),
            )
        }
    }

    /// Protocol and cipher, for messages.
    pub fn describe(&self) -> String {
        // SAFETY: our session; the names are static strings or NULL.
        unsafe {
            let v = sys::gnutls_protocol_get_name(sys::gnutls_protocol_get_version(self.raw()));
            let c = sys::gnutls_cipher_get_name(sys::gnutls_cipher_get(self.raw()));
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

    /// Decrypts into `buf`: the plain text's length (0: the peer ended
    /// the session), or the error (AGAIN and the like included).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        recv(self.raw(), buf)
    }

    /// Encrypts up to `limit` bytes of `bufs` (see `send` for how pieces
    /// become records). Call once the handshake is done.
    pub fn send_vectored(&mut self, bufs: &[IoSlice<'_>], limit: usize) -> Result<usize, Error> {
        send(self.raw(), bufs, limit)
    }

    /// Sends close_notify (our end of the session; the peer's is not
    /// waited for). Ok(false): call again (the transport said AGAIN).
    pub fn bye(&mut self) -> Result<bool, Error> {
        // SAFETY: our session.
        let r = unsafe { sys::gnutls_bye(self.raw(), sys::GNUTLS_SHUT_WR) };
        match r {
            0 => Ok(true),
            _ if !is_fatal(r) => Ok(false),
            _ => Err(Error::new("gnutls_bye", r)),
        }
    }

    /// Whether GnuTLS holds decrypted bytes not yet received.
    pub fn check_pending(&self) -> bool {
        // SAFETY: our session.
        unsafe { sys::gnutls_record_check_pending(self.raw()) > 0 }
    }

    /// A receiving and a sending half, for two threads.
    pub fn split(self) -> (RecvHalf, SendHalf) {
        let inner = Arc::new(self.0);
        (RecvHalf(Arc::clone(&inner)), SendHalf(inner))
    }
}

/// The receiving half of a session.
pub struct RecvHalf(Arc<Inner>);

/// The sending half of a session.
pub struct SendHalf(Arc<Inner>);

impl RecvHalf {
    /// As [`Session::recv`].
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        recv(self.0.s, buf)
    }
}

impl SendHalf {
    /// As [`Session::send_vectored`].
    pub fn send_vectored(&mut self, bufs: &[IoSlice<'_>], limit: usize) -> Result<usize, Error> {
        send(self.0.s, bufs, limit)
    }
}

fn recv(s: gnutls_session_t, buf: &mut [u8]) -> Result<usize, Error> {
    // SAFETY: a live session, received on by this caller only (&mut);
    // buf is writable for its length.
    let r = unsafe { sys::gnutls_record_recv(s, buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(Error::new("gnutls_record_recv", r as c_int))
    } else {
        Ok(r as usize)
    }
}

fn send(s: gnutls_session_t, bufs: &[IoSlice<'_>], limit: usize) -> Result<usize, Error> {
    // SAFETY: a live session, sent on by this caller only (&mut).
    unsafe { crate::send::send_vectored(s, bufs, limit) }
        .map_err(|e| Error::new("gnutls_record_send", e))
}

fn fd_ptr(fd: RawFd) -> gnutls_transport_ptr_t {
    fd as isize as gnutls_transport_ptr_t
}

fn ptr_fd(p: gnutls_transport_ptr_t) -> RawFd {
    p as isize as RawFd
}

unsafe extern "C" fn fd_pull(p: gnutls_transport_ptr_t, data: *mut c_void, n: usize) -> isize {
    // SAFETY: GnuTLS passes a buffer writable for n bytes.
    unsafe { libc::read(ptr_fd(p), data, n) }
}

unsafe extern "C" fn fd_push(p: gnutls_transport_ptr_t, data: *const c_void, n: usize) -> isize {
    // SAFETY: GnuTLS passes n readable bytes.
    unsafe { libc::write(ptr_fd(p), data, n) }
}

unsafe extern "C" fn fd_pull_timeout(p: gnutls_transport_ptr_t, ms: c_uint) -> c_int {
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

unsafe extern "C" fn buf_push(ptr: gnutls_transport_ptr_t, data: *const c_void, n: usize) -> isize {
    // SAFETY: ptr is the Box<Buffers> registered with this session, alive
    // as long as the session; GnuTLS passes `n` readable bytes at `data`.
    let io = unsafe { &mut *ptr.cast::<Buffers>() };
    if n > 0 {
        io.out
            .extend_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), n) });
    }
    n as isize
}

unsafe extern "C" fn buf_pull(ptr: gnutls_transport_ptr_t, data: *mut c_void, n: usize) -> isize {
    // SAFETY: as for buf_push; GnuTLS passes `n` writable bytes at `data`.
    let io = unsafe { &mut *ptr.cast::<Buffers>() };
    let avail = io.inb.len() - io.in_pos;
    if avail == 0 {
        if io.eof {
            return 0;
        }
        io.starved = true;
        // SAFETY: the session these buffers belong to.
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

unsafe extern "C" fn buf_pull_timeout(ptr: gnutls_transport_ptr_t, _ms: c_uint) -> c_int {
    // SAFETY: as for buf_push.
    let io = unsafe { &*ptr.cast::<Buffers>() };
    c_int::from(io.in_pos < io.inb.len() || io.eof)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::creds::{PskClient, PskServer};
    use crate::secret::Zeroizing;
    use std::ffi::CString;

    const PSK_PRIORITY: &CStr = c"NORMAL:-VERS-SSL3.0:+ECDHE-PSK:+DHE-PSK:+PSK";

    /// Moves the ciphertext each side queued to the other.
    fn shuttle(a: &mut Session, b: &mut Session) -> bool {
        let ab = carry(a, b);
        carry(b, a) || ab
    }

    fn carry(from: &mut Session, to: &mut Session) -> bool {
        let out = std::mem::take(&mut from.buffers().out);
        from.buffers().out_pos = 0;
        to.buffers().inb.extend_from_slice(&out);
        !out.is_empty()
    }

    fn pair(server_key: &str) -> (Session, Session, std::path::PathBuf) {
        pair_with(server_key, PSK_PRIORITY, PSK_PRIORITY)
    }

    /// A client and a server session on PSK, each with its priority; the
    /// server's key file in a directory of its own (removed by the caller).
    fn pair_with(
        server_key: &str,
        client_prio: &CStr,
        server_prio: &CStr,
    ) -> (Session, Session, std::path::PathBuf) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nbd-gnutls-session-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.psk");
        std::fs::write(&file, format!("alice:{server_key}\n")).unwrap();
        let path = CString::new(file.to_str().unwrap()).unwrap();

        let mut server = Session::new(Side::Server, true).unwrap();
        server.transport_buffers();
        server.set_priority(server_prio).unwrap();
        let sc = PskServer::from_file(&path).unwrap();
        server
            .set_credentials(Arc::new(Credentials::PskServer(sc)))
            .unwrap();

        let mut client = Session::new(Side::Client, true).unwrap();
        client.transport_buffers();
        client.set_priority(client_prio).unwrap();
        let key = Zeroizing::new(b"00112233445566778899aabbccddeeff".to_vec());
        let cc = PskClient::new(c"alice", key).unwrap();
        client
            .set_credentials(Arc::new(Credentials::PskClient(cc)))
            .unwrap();
        (client, server, dir)
    }

    /// What a PSK handshake with these priorities agrees on, as the client
    /// and the server describe it.
    pub(crate) fn psk_pair_with(client_prio: &CStr, server_prio: &CStr) -> (String, String) {
        let key = "00112233445566778899aabbccddeeff";
        let (mut c, mut s, dir) = pair_with(key, client_prio, server_prio);
        handshake(&mut c, &mut s).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (c.describe(), s.describe())
    }

    /// Runs both handshakes to the end (or the first error).
    fn handshake(c: &mut Session, s: &mut Session) -> Result<(), Error> {
        let (mut cd, mut sd) = (false, false);
        for _ in 0..100 {
            if !cd {
                cd = c.handshake()?;
            }
            if !sd {
                sd = s.handshake()?;
            }
            if !shuttle(c, s) && cd && sd {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn psk_sessions_in_memory() {
        let (mut c, mut s, dir) = pair("00112233445566778899aabbccddeeff");
        handshake(&mut c, &mut s).unwrap();
        assert!(c.describe().contains("TLS"), "{}", c.describe());
        let msg = vec![7u8; 100_000];
        let n = c.send_vectored(
            &[IoSlice::new(&msg[..10]), IoSlice::new(&msg[10..])],
            usize::MAX,
        );
        assert_eq!(n.unwrap(), msg.len());
        shuttle(&mut c, &mut s);
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while got.len() < msg.len() {
            let n = s.recv(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, msg);
        // Nothing more: AGAIN, not fatal.
        let e = s.recv(&mut buf).unwrap_err();
        assert_eq!(e.code, crate::GNUTLS_E_AGAIN);
        assert!(!e.is_fatal());
        // close_notify: the end of the stream, not an error.
        assert!(c.bye().unwrap());
        carry(&mut c, &mut s);
        assert_eq!(s.recv(&mut buf).unwrap(), 0);
        // The halves.
        let (mut sr, mut sw) = s.split();
        let n = sw.send_vectored(&[IoSlice::new(b"reply")], usize::MAX);
        assert_eq!(n.unwrap(), 5);
        // The client's close_notify is still the end.
        assert_eq!(sr.recv(&mut buf).unwrap(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_psk_is_a_fatal_handshake_error() {
        let (mut c, mut s, dir) = pair("ffeeddccbbaa99887766554433221100");
        let e = handshake(&mut c, &mut s).unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(e.errno(), libc::EIO);
        assert!(e.to_string().starts_with("gnutls_handshake: "), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
