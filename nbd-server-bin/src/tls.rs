//! Server TLS over GnuTLS (`--tls`, `--tls-certificates`, `--tls-psk`,
//! `--tls-verify-peer`), as nbdkit-tls(1) describes it.
//!
//! The policy and credentials are process-wide ([`configure`], once, from
//! main). A connection starts in plain text as a [`Stream::Plain`]; when
//! negotiation says `Want::StartTls` the connection code calls
//! [`Stream::start_tls`], which runs the handshake on the socket and
//! turns the reading direction into [`Stream::TlsIn`] and the writing one
//! into [`Stream::TlsOut`], the two halves of one session (nbd-gnutls's
//! safe API). The protocol code never knows: it reads and writes a
//! `Stream`.
//!
//! Credentials: with `--tls-psk=FILE`, PSK from psktool's `user:hexkey`
//! file; else X.509 from `--tls-certificates=DIR` (default /etc/pki/nbdkit
//! for root, else $HOME/.pki/nbdkit): server-cert.pem and server-key.pem,
//! ca-cert.pem (to check client certificates, `--tls-verify-peer`) and
//! ca-crl.pem when present.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, OnceLock};

use nbd_core::server::negotiate::Tls as Policy;

use nbd_gnutls::{self as gnutls, Certificate, Credentials, PskServer, RecvHalf, SendHalf, Side};

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?}: contains a NUL byte"))
}

struct Config {
    policy: Policy,
    creds: Option<Arc<Credentials>>,
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
        Some(Arc::new(load_psk(f)?))
    } else {
        Some(Arc::new(load_x509(certificates, verify_peer)?))
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

fn load_psk(file: &str) -> Result<Credentials, String> {
    let path = cstring(file)?;
    if std::fs::metadata(file).is_err() {
        return Err(format!("--tls-psk: {file}: cannot read the file"));
    }
    let c = PskServer::from_file(&path).map_err(|e| e.to_string())?;
    Ok(Credentials::PskServer(c))
}

fn load_x509(dir: Option<&str>, verify_peer: bool) -> Result<Credentials, String> {
    let dir = match dir {
        Some(d) => d.to_string(),
        None if nix::unistd::geteuid().is_root() => "/etc/pki/nbdkit".into(),
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
    let c = Certificate::new().map_err(|e| e.to_string())?;
    if exists("ca-cert.pem") {
        let what = format!("{dir}/ca-cert.pem");
        c.set_trust_file(&file("ca-cert.pem")?, &what)
            .map_err(|e| e.to_string())?;
    } else if verify_peer {
        return Err(format!("--tls-verify-peer: {dir}/ca-cert.pem is needed"));
    }
    if exists("ca-crl.pem") {
        let what = format!("{dir}/ca-crl.pem");
        c.set_crl_file(&file("ca-crl.pem")?, &what)
            .map_err(|e| e.to_string())?;
    }
    let (cert, key) = (file("server-cert.pem")?, file("server-key.pem")?);
    c.set_key_file(
        &cert,
        &key,
        &format!("{dir}/server-cert.pem, server-key.pem"),
    )
    .map_err(|e| e.to_string())?;
    Ok(Credentials::Certificate(c))
}

/// Runs the server handshake on `rd`/`wr` (the same socket, or stdin and
/// stdout with `-s`). `sockets`: both are sockets (else GnuTLS's own
/// transport, recv(2) and sendmsg(2), would fail with ENOTSOCK on pipes).
fn handshake(rd: RawFd, wr: RawFd, sockets: bool) -> Result<gnutls::Session, String> {
    let cfg = CONFIG.get().ok_or("TLS is not configured")?;
    let creds = cfg.creds.as_ref().ok_or("TLS is not configured")?;
    let e = |e: gnutls::Error| e.to_string();
    let mut s = gnutls::Session::new(Side::Server, false).map_err(e)?;
    // nbd_gnutls::priority: for PSK, AES-128-GCM ahead of ChaCha20 where
    // the CPU has AES instructions.
    let prio = if creds.is_certificate() {
        gnutls::priority::DEFAULT.to_owned()
    } else {
        gnutls::priority::psk_default()
    };
    s.set_priority(&prio).map_err(e)?;
    s.set_credentials(Arc::clone(creds)).map_err(e)?;
    if cfg.verify_peer && creds.is_certificate() {
        s.require_client_certificate();
        s.verify_cert(None);
    }
    if sockets {
        s.transport_sockets(rd, wr);
    } else {
        s.transport_fds(rd, wr);
    }
    while !s.handshake().map_err(e)? {}
    Ok(s)
}

/// The receiving half of a session: AGAIN, INTERRUPTED and warnings are
/// retried, a missing close_notify is EOF.
fn recv(s: &mut RecvHalf, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.recv(buf) {
            Ok(n) => return Ok(n),
            Err(e) => match e.code {
                gnutls::GNUTLS_E_PREMATURE_TERMINATION => return Ok(0),
                _ if !e.is_fatal() => continue,
                _ => return Err(e.into()),
            },
        }
    }
}

/// Sends every byte of `bufs` (see `nbd_gnutls::send` for how pieces
/// become records).
fn send_all(s: &mut SendHalf, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    Ok(s.send_vectored(bufs, usize::MAX)?)
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
    use nix::sys::socket::{recv, MsgFlags};
    // MSG_PEEK leaves the bytes for GnuTLS.
    let n = loop {
        match recv(fd, &mut peek, MsgFlags::MSG_PEEK) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r,
        }
    };
    let n = match n {
        Ok(n) if n > 0 => n,
        _ => return Ok(()), // EOF or not a socket: GnuTLS reports it
    };
    let p = &peek[..n];
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
/// keeps the descriptor the session uses open). A GnuTLS session may be
/// used by one thread receiving and another sending at once: the reading
/// stream holds the session's receiving half, the writing one its
/// sending half.
pub enum Stream {
    Plain(File),
    TlsIn(RecvHalf, #[allow(dead_code)] File),
    TlsOut(SendHalf, #[allow(dead_code)] File),
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
        let (r_half, w_half) = handshake(r.as_raw_fd(), w.as_raw_fd(), sockets)?.split();
        if let Stream::Plain(f) = std::mem::replace(rd, Stream::Detached) {
            *rd = Stream::TlsIn(r_half, f);
        }
        if let Stream::Plain(f) = std::mem::replace(wr, Stream::Detached) {
            *wr = Stream::TlsOut(w_half, f);
        }
        Ok(())
    }

    /// The socket's descriptor when it carries plain text (no TLS).
    pub fn plain_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Stream::Plain(f) => Some(f.as_raw_fd()),
            _ => None,
        }
    }

    fn detached() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "stream detached")
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(f) => f.read(buf),
            Stream::TlsIn(s, _) => recv(s, buf),
            Stream::TlsOut(..) | Stream::Detached => Err(Stream::detached()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(f) => f.write(buf),
            Stream::TlsOut(s, _) => send_all(s, &[IoSlice::new(buf)]),
            Stream::TlsIn(..) | Stream::Detached => Err(Stream::detached()),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(f) => f.write_vectored(bufs),
            Stream::TlsOut(s, _) => send_all(s, bufs),
            Stream::TlsIn(..) | Stream::Detached => Err(Stream::detached()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
