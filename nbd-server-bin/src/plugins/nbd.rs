//! The nbd plugin: a proxy to another NBD server, through nbd-core's
//! client state machine driven over a blocking socket.
//!
//! Target: `socket=PATH`, `hostname=HOST [port=PORT]`, `vsock=CID
//! [port=PORT]`, or `uri=` (magic key; `nbd://host[:port]/export`,
//! `nbd+unix:///export?socket=PATH` or `nbd+vsock://CID[:PORT]/export`;
//! TLS schemes are refused); `export=NAME`; `tls=`, `tls-psk=`,
//! `tls-username=`, `tls-certificates=` and `tls-verify=` for TLS with the
//! server (see nbd_tls.rs). `command=PROG [arg=ARG]...`
//! runs the server with a listening socket handed over by systemd socket
//! activation (fd 3, `LISTEN_PID`, `LISTEN_FDS=1`), and `socket-fd=FD`
//! uses a socket already connected that this process inherited; both
//! make one connection, shared by every client, once the server is in its
//! final process (after daemonising), as nbdkit does. As in nbdkit, each client
//! connection gets its own connection to the server, made when the client
//! opens its export (so this server may start before the one it forwards
//! to; bad parameters are still refused at start-up) and remade if it
//! died. `shared=true` makes one connection at start-up instead, which
//! every client shares; `retry=N` tries a failed connection N more times,
//! a second apart. A mutex around a connection makes each request a full
//! round trip (its requests are serialised: simple and correct).

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::unix::io::{FromRawFd, OwnedFd, RawFd};

use parking_lot::Mutex;

use nbd_core::client::{Client, Command, Config, Event, ExportInfo, Phase, UserOption};
use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::{cmd, cmd_flags, tx_flags};

use crate::params::Params;

use std::sync::Arc;

use super::nbd_tls::{Settings as TlsSettings, UriTls};
use super::PluginSpec;
use crate::chain::Plugin;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "nbd",
    magic: Some("uri"),
    params: &[
        ("uri", "the NBD URI of the server to forward to"),
        ("socket", "the Unix socket of the server"),
        ("hostname", "the host name of the server"),
        ("port", "the TCP or vsock port of the server"),
        ("vsock", "the AF_VSOCK CID of the server"),
        (
            "command",
            "run this NBD server, with a socket handed over by socket activation",
        ),
        ("arg", "an argument of command= (repeated, in order)"),
        (
            "socket-fd",
            "an inherited file descriptor connected to the server",
        ),
        ("export", "the export name to ask for"),
        (
            "dynamic-export",
            "ask the server for the export each client asks for",
        ),
        (
            "retry",
            "how many more times to try connecting, a second apart",
        ),
        (
            "shared",
            "true: one connection made at start-up, shared by every client",
        ),
        ("tls", "TLS with the server: off, on or require"),
        (
            "tls-psk",
            "the Pre-Shared Keys file for TLS with the server",
        ),
        ("tls-username", "the user name whose key tls-psk= holds"),
        (
            "tls-certificates",
            "X.509 certificates for TLS with the server (not supported yet)",
        ),
        (
            "tls-verify",
            "check the server's certificate (X.509: not supported yet)",
        ),
    ],
    open: |p, ro| Ok(Arc::new(NbdPlugin::configure(p, ro)?)),
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Unix(String),
    Tcp(String, u16),
    /// AF_VSOCK: CID and port.
    Vsock(u32, u32),
    /// command= and its arg=s: a server this plugin runs (once).
    Command(Vec<String>),
    /// socket-fd=: a connection this process inherited (used once).
    Fd(RawFd),
}

impl Target {
    /// Whether a connection can be made again (not to a command's server,
    /// whose socket is gone after the first connection, nor over an
    /// inherited descriptor).
    fn reconnectable(&self) -> bool {
        !matches!(self, Target::Command(_) | Target::Fd(_))
    }
}

/// Parses an NBD URI into (target, export) with the one URI parser the
/// library uses too (`nbd_core::uri`); [`uri_tls`] gives its TLS part.
pub fn parse_uri(uri: &str) -> std::result::Result<(Target, String), String> {
    use nbd_core::uri::{self, Endpoint};
    let u = uri::parse(uri.as_bytes()).map_err(|e| format!("{uri}: {e}"))?;
    let text = |c: &std::ffi::CStr| {
        c.to_str()
            .map(str::to_string)
            .map_err(|_| format!("URI is not UTF-8: {uri}"))
    };
    let export = text(&u.export_name)?;
    let target = match &u.endpoint {
        Endpoint::Tcp { host, port } => {
            let port = text(port)?;
            let port = port
                .parse()
                .map_err(|_| format!("bad port '{port}' in {uri}"))?;
            Target::Tcp(text(host)?, port)
        }
        Endpoint::Unix { socket } => Target::Unix(text(socket)?),
        Endpoint::Vsock { cid, port } => Target::Vsock(*cid, *port),
        Endpoint::Ssh(_) => return Err(format!("ssh is not supported yet: {uri}")),
    };
    Ok((target, export))
}

/// The TLS an `nbds*` URI asks for (None for a plain scheme): its
/// `tls-psk-file=`, user (`tls-username=`, else the user part),
/// `tls-certificates=` and `tls-verify-peer=`.
pub fn uri_tls(uri: &str) -> std::result::Result<Option<UriTls>, String> {
    let u = nbd_core::uri::parse(uri.as_bytes()).map_err(|e| format!("{uri}: {e}"))?;
    if !u.tls {
        return Ok(None);
    }
    let text = |c: Option<std::ffi::CString>| c.map(|c| c.to_string_lossy().into_owned());
    Ok(Some(UriTls {
        psk_file: text(u.tls_psk_file),
        username: text(u.tls_username.or(u.user)),
        certificates: text(u.tls_certificates),
        verify: u.tls_verify_peer,
    }))
}

/// A finished command: its buffer and the block status it received.
type Done = (Vec<u8>, Vec<(u64, u64)>);

struct Conn {
    sock: File,
    /// The TLS session over `sock`, once STARTTLS is done.
    tls: Option<nbd_gnutls::Session>,
    client: Client<Vec<u8>>,
}

impl Conn {
    fn connect(target: &Target, export: &str, tls: &TlsSettings) -> Result<Conn> {
        let c = Conn::handshake(target, export, tls, false)?;
        match c.client.phase() {
            Phase::Ready => Ok(c),
            _ => Err(c.dead()),
        }
    }

    /// The server's exports (NBD_OPT_LIST in option mode), then
    /// NBD_OPT_ABORT: (name, description) pairs.
    fn list(target: &Target, tls: &TlsSettings) -> Result<Vec<(String, String)>> {
        let mut c = Conn::handshake(target, "", tls, true)?;
        if c.client.phase() != Phase::Negotiating {
            return Err(c.dead());
        }
        c.client
            .start_user_option(UserOption::List)
            .map_err(|e| Error::new(e.errno.max(1), format!("nbd: {}", e.message)))?;
        let mut names = Vec::new();
        let mut done = None;
        c.pump(|cl| {
            while let Some(ev) = cl.poll_event() {
                match ev {
                    Event::ListedExport { name, description } => names.push((
                        String::from_utf8_lossy(&name).into_owned(),
                        String::from_utf8_lossy(&description).into_owned(),
                    )),
                    Event::OptionDone { result } => done = Some(result),
                    _ => {}
                }
            }
            done.is_some()
        })?;
        match done {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Error::new(e.errno.max(1), format!("nbd: {}", e.message))),
            None => return Err(c.dead()),
        }
        // A polite goodbye; the list is had whatever the server answers.
        if c.client.start_user_option(UserOption::Abort).is_ok() {
            let _ = c.pump(|cl| {
                let _ = cl.poll_event();
                matches!(cl.phase(), Phase::Closed | Phase::Dead)
            });
        }
        Ok(names)
    }

    /// Connects and runs the handshake: to transmission, or with
    /// `opt_mode` until the server waits for the caller's options.
    fn handshake(target: &Target, export: &str, tls: &TlsSettings, opt_mode: bool) -> Result<Conn> {
        let io = |what: &str, e: std::io::Error| {
            Error::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("nbd: {what}: {e}"),
            )
        };
        let fd: OwnedFd = match target {
            Target::Unix(p) => std::os::unix::net::UnixStream::connect(p)
                .map_err(|e| io(p, e))?
                .into(),
            Target::Tcp(h, port) => {
                let s = std::net::TcpStream::connect((h.as_str(), *port))
                    .map_err(|e| io(&format!("{h}:{port}"), e))?;
                let _ = s.set_nodelay(true);
                s.into()
            }
            Target::Vsock(cid, port) => {
                super::nbd_connect::vsock(*cid, *port).map_err(|e| io("vsock", e))?
            }
            Target::Command(argv) => {
                super::nbd_connect::socket_activation(argv).map_err(|e| io(&argv[0], e))?
            }
            // SAFETY: configure checked the descriptor is open; it is
            // taken once (the connection is shared and never remade).
            Target::Fd(fd) => unsafe { OwnedFd::from_raw_fd(*fd) },
        };
        let config = Config {
            export_name: export.as_bytes().to_vec(),
            meta_contexts: vec![b"base:allocation".to_vec()],
            tls: tls.mode,
            opt_mode,
            ..Config::default()
        };
        let mut c = Conn {
            sock: File::from(fd),
            tls: None,
            client: Client::new(config),
        };
        c.pump_handshake(tls)?;
        Ok(c)
    }

    fn dead(&self) -> Error {
        match self.client.fatal_error() {
            Some(e) => Error::new(e.errno.max(1), format!("nbd: {}", e.message)),
            None => Error::new(libc::EIO, "nbd: connection closed"),
        }
    }

    /// The handshake, with STARTTLS when the settings ask for it.
    fn pump_handshake(&mut self, tls: &TlsSettings) -> Result<()> {
        use std::os::unix::io::AsRawFd;
        loop {
            self.pump(|cl| cl.phase() != Phase::Connecting || cl.tls_handshake_wanted())?;
            if !self.client.tls_handshake_wanted() {
                return Ok(());
            }
            let session = tls
                .handshake(self.sock.as_raw_fd())
                .map_err(|e| Error::new(libc::EIO, format!("nbd: {e}")))?;
            self.tls = Some(session);
            self.client.tls_handshake_done();
        }
    }

    fn read_in(
        tls: &mut Option<nbd_gnutls::Session>,
        sock: &mut File,
        buf: &mut [u8],
    ) -> std::io::Result<usize> {
        match tls {
            None => sock.read(buf),
            Some(s) => s
                .recv(buf)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno())),
        }
    }

    /// Moves bytes until `done` holds or the connection dies.
    fn pump(&mut self, mut done: impl FnMut(&mut Client<Vec<u8>>) -> bool) -> Result<()> {
        loop {
            if done(&mut self.client) {
                return Ok(());
            }
            if self.client.wants_write() {
                let n = {
                    let mut iov = [IoSlice::new(&[]); 16];
                    let k = self.client.send_bufs(&mut iov);
                    let r = match &mut self.tls {
                        None => self.sock.write_vectored(&iov[..k]),
                        Some(s) => s
                            .send_vectored(&iov[..k], usize::MAX)
                            .map_err(|e| std::io::Error::from_raw_os_error(e.errno())),
                    };
                    match r {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            let err = nbd_core::client::Error::new(
                                e.raw_os_error().unwrap_or(libc::EIO),
                                format!("send: {e}"),
                            );
                            self.client.fail(err);
                            return Err(self.dead());
                        }
                    }
                };
                self.client.send_done(n);
            } else if self.client.wants_read() {
                let buf = self.client.recv_buf();
                match Self::read_in(&mut self.tls, &mut self.sock, buf) {
                    Ok(n) => self.client.recv_done(n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let err = nbd_core::client::Error::new(
                            e.raw_os_error().unwrap_or(libc::EIO),
                            format!("recv: {e}"),
                        );
                        self.client.fail(err);
                        return Err(self.dead());
                    }
                }
            } else {
                return Err(self.dead());
            }
        }
    }

    /// Runs one command to completion: (buffer, block status extents).
    fn run(&mut self, c: Command, buf: Vec<u8>) -> Result<Done> {
        let cookie = self
            .client
            .submit(c, buf)
            .map_err(|(e, _)| Error::new(e.errno.max(1), format!("nbd: {}", e.message)))?;
        let mut result = None;
        let mut extents = Vec::new();
        self.pump(|cl| {
            while let Some(ev) = cl.poll_event() {
                match ev {
                    Event::Completed {
                        cookie: k,
                        ctx,
                        result: r,
                    } if k == cookie => result = Some((ctx, r)),
                    Event::BlockStatus {
                        cookie: k,
                        extents: e,
                        ..
                    } if k == cookie => extents.extend(e),
                    _ => {}
                }
            }
            result.is_some()
        })?;
        let (ctx, r) = result.ok_or_else(|| self.dead())?;
        r.map_err(|e| Error::new(e.errno.max(1), e.message))?;
        Ok((ctx, extents))
    }
}

/// Ends the TLS session properly (close_notify), so the server does not
/// see a connection cut short.
impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(s) = &mut self.tls {
            let _ = s.bye();
        }
    }
}

/// The plugin as configured: where the server is. Connects nowhere.
pub struct NbdPlugin {
    target: Target,
    tls: TlsSettings,
    export: String,
    readonly: bool,
    /// retry=N: further tries, a second apart, when connecting fails.
    retry: u32,
    /// shared=true (implied by command= and socket-fd=): one connection
    /// for every client.
    shared: bool,
    /// dynamic-export=true: each client's connection asks the server for
    /// the export that client asked for (not `export`).
    dynamic_export: bool,
    /// That connection, once made: at start-up for shared=true, after
    /// daemonising for command= and socket-fd= (the server it runs, or
    /// the descriptor, must be the final process's).
    shared_conn: std::sync::OnceLock<Arc<NbdConn>>,
}

/// One connection to the server: a client connection's handle (or, for
/// xnbd-server, the one shared remote).
pub struct NbdConn {
    target: Target,
    tls: TlsSettings,
    export: String,
    readonly: bool,
    conn: Mutex<Option<Conn>>,
    info: ExportInfo,
}

impl NbdPlugin {
    /// Checks the parameters; connects nowhere.
    pub fn configure(p: &mut Params, readonly: bool) -> std::result::Result<NbdPlugin, String> {
        let uri = p.take("uri");
        let socket = p.take("socket");
        let host = p.take("hostname");
        let port = p.take("port");
        let vsock = p.take("vsock");
        let command = p.take("command");
        let args = p.take_all("arg");
        let socket_fd = p.take("socket-fd");
        let export = p.take("export");
        let retry = p
            .take_with("retry", |v| {
                v.parse::<u32>()
                    .map_err(|_| format!("could not parse number: {v}"))
            })?
            .unwrap_or(0);
        let shared = p.take_bool("shared")?;
        let dynamic_export = p.take_bool("dynamic-export")?.unwrap_or(false);
        let mut tls = TlsSettings::take(p)?;
        let ways = [
            uri.is_some(),
            socket.is_some(),
            host.is_some(),
            vsock.is_some(),
            command.is_some(),
            socket_fd.is_some(),
        ];
        let mixed = ways.iter().filter(|w| **w).count() > 1
            || (port.is_some() && host.is_none() && vsock.is_none())
            || (!args.is_empty() && command.is_none());
        if mixed {
            // nbdkit's words.
            return Err(p.err(
                "cannot mix Unix 'socket', TCP 'hostname'/'port', 'vsock', 'command', \
                 'socket-fd' and 'uri' parameters",
            ));
        }
        let number = |key: &str, v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{key}: could not parse number: {v}"))
        };
        let (target, uri_export) = if let Some(u) = uri {
            let (t, e) = parse_uri(&u).map_err(|e| p.err(e))?;
            if let Some(ut) = uri_tls(&u).map_err(|e| p.err(e))? {
                tls.require_for_uri(ut).map_err(|e| p.err(e))?;
            }
            (t, Some(e))
        } else if let Some(s) = socket {
            (Target::Unix(s), None)
        } else if let Some(h) = host {
            let port = match port {
                None => 10809,
                Some(pt) => pt
                    .parse()
                    .map_err(|_| p.err(format!("could not parse port number: {pt}")))?,
            };
            (Target::Tcp(h, port), None)
        } else if let Some(cid) = vsock {
            let cid = number("vsock", &cid).map_err(|e| p.err(e))?;
            let port = match port {
                None => 10809,
                Some(pt) => number("port", &pt).map_err(|e| p.err(e))?,
            };
            (Target::Vsock(cid, port), None)
        } else if let Some(c) = command {
            let mut argv = vec![c];
            argv.extend(args);
            (Target::Command(argv), None)
        } else if let Some(fd) = socket_fd {
            let fd = fd
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .ok_or_else(|| p.err(format!("socket-fd: could not parse number: {fd}")))?;
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                let e = std::io::Error::last_os_error();
                return Err(p.err(format!("socket-fd={fd}: {e}")));
            }
            (Target::Fd(fd), None)
        } else {
            return Err(p.err(
                "one of uri=, socket=, hostname=, vsock=, command= or socket-fd= is required",
            ));
        };
        // nbdkit's words for both.
        if dynamic_export && export.is_some() {
            return Err("cannot mix 'dynamic-export' with explicit export name".into());
        }
        if dynamic_export && shared == Some(true) {
            return Err("cannot use 'dynamic-export' with shared connection".into());
        }
        let export = export.or(uri_export).unwrap_or_default();
        // The name a server certificate is checked against (over TCP).
        if let Target::Tcp(h, _) = &target {
            tls.hostname = Some(h.clone());
        }
        // command= and socket-fd= can only be connected once.
        let shared = shared.unwrap_or(false) || !target.reconnectable();
        let plugin = NbdPlugin {
            tls,
            shared,
            dynamic_export,
            target,
            export,
            readonly,
            retry,
            shared_conn: std::sync::OnceLock::new(),
        };
        if shared && plugin.target.reconnectable() {
            let conn = plugin.connect().map_err(|e| e.to_string())?;
            let _ = plugin.shared_conn.set(Arc::new(conn));
        }
        Ok(plugin)
    }

    /// Checks the parameters and connects at once (xnbd-server's remote,
    /// shared by all its clients).
    pub fn open(p: &mut Params, readonly: bool) -> std::result::Result<NbdConn, String> {
        Self::configure(p, readonly)?
            .connect()
            .map_err(|e| e.to_string())
    }

    /// A new connection to the server (tried `retry` more times, a second
    /// apart, if it fails).
    pub fn connect(&self) -> Result<NbdConn> {
        self.connect_to(&self.export)
    }

    /// As [`NbdPlugin::connect`], asking the server for `export`.
    fn connect_to(&self, export: &str) -> Result<NbdConn> {
        let mut tries = 0;
        let conn = loop {
            match Conn::connect(&self.target, export, &self.tls) {
                Ok(c) => break c,
                Err(_) if tries < self.retry && self.target.reconnectable() => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        };
        let info =
            conn.client.export().cloned().ok_or_else(|| {
                Error::new(libc::EIO, "nbd: no export information from the server")
            })?;
        Ok(NbdConn {
            target: self.target.clone(),
            tls: self.tls.clone(),
            export: export.to_string(),
            readonly: self.readonly,
            conn: Mutex::new(Some(conn)),
            info,
        })
    }
}

impl NbdConn {
    fn flag(&self, f: u16) -> bool {
        self.info.flags & f != 0
    }

    fn run(&self, c: Command, buf: Vec<u8>) -> Result<Done> {
        let mut g = self.conn.lock();
        let live =
            matches!(&*g, Some(c) if matches!(c.client.phase(), Phase::Ready | Phase::Processing));
        if !live && !self.target.reconnectable() {
            return Err(Error::new(
                libc::EIO,
                "nbd: the connection to the server was lost",
            ));
        }
        if !live {
            *g = None;
            *g = Some(Conn::connect(&self.target, &self.export, &self.tls)?);
        }
        match g.as_mut() {
            Some(conn) => conn.run(c, buf),
            None => Err(Error::new(libc::EIO, "nbd: not connected")),
        }
    }

    fn simple(&self, kind: u16, flags: u16, offset: u64, len: u64) -> Result<()> {
        self.run(Command::new(kind, flags, offset, len), Vec::new())
            .map(|_| ())
    }
}

impl Backend for NbdConn {
    fn size(&self) -> Result<u64> {
        Ok(self.info.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(!self.readonly && !self.flag(tx_flags::READ_ONLY))
    }
    fn can_flush(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::SEND_FLUSH))
    }
    fn can_fua(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::SEND_FUA))
    }
    fn can_trim(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::SEND_TRIM))
    }
    fn can_zero(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::SEND_WRITE_ZEROES))
    }
    fn can_fast_zero(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::SEND_FAST_ZERO))
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::CAN_MULTI_CONN))
    }
    fn can_cache(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::SEND_CACHE))
    }
    fn is_rotational(&self) -> Result<bool> {
        Ok(self.flag(tx_flags::ROTATIONAL))
    }
    fn can_extents(&self) -> Result<bool> {
        Ok(!self.info.meta_contexts.is_empty())
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        Ok(self.info.block_size)
    }

    fn reopen(&self) -> Result<()> {
        if !self.target.reconnectable() {
            return Err(Error::new(
                libc::EIO,
                "nbd: cannot reconnect to this server",
            ));
        }
        let mut g = self.conn.lock();
        *g = None;
        *g = Some(Conn::connect(&self.target, &self.export, &self.tls)?);
        Ok(())
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let (data, _) = self.run(
            Command::new(cmd::READ, 0, offset, buf.len() as u64),
            vec![0u8; buf.len()],
        )?;
        buf.copy_from_slice(&data);
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let f = if fua { cmd_flags::FUA } else { 0 };
        self.run(
            Command::new(cmd::WRITE, f, offset, buf.len() as u64),
            buf.to_vec(),
        )
        .map(|_| ())
    }
    fn flush(&self) -> Result<()> {
        self.simple(cmd::FLUSH, 0, 0, 0)
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        let f = if fua { cmd_flags::FUA } else { 0 };
        self.simple(cmd::TRIM, f, offset, count as u64)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let mut f = 0;
        if flags.fua {
            f |= cmd_flags::FUA;
        }
        if !flags.may_trim {
            f |= cmd_flags::NO_HOLE;
        }
        if flags.fast {
            f |= cmd_flags::FAST_ZERO;
        }
        self.simple(cmd::WRITE_ZEROES, f, offset, count as u64)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.simple(cmd::CACHE, 0, offset, count as u64)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let (_, ext) = self.run(
            Command::new(cmd::BLOCK_STATUS, 0, offset, count as u64),
            Vec::new(),
        )?;
        let mut pos = offset;
        for (len, flags) in ext {
            // base:allocation's flags fit 32 bits; the length may not
            // (extended headers), and the sink clips it to the query.
            if !sink.add(pos, len, flags as u32)? {
                return Ok(());
            }
            pos = pos.saturating_add(len);
        }
        if pos == offset {
            return Err(Error::new(libc::EIO, "nbd: server sent no extents"));
        }
        Ok(())
    }
}

/// A connection to the server for each client connection, made now; or
/// with shared=true, the one made at start.
impl Plugin for NbdPlugin {
    /// command= and socket-fd= connect here, in the final process.
    fn after_fork(&self) -> std::result::Result<(), String> {
        if self.shared && self.shared_conn.get().is_none() {
            let conn = self.connect().map_err(|e| e.to_string())?;
            let _ = self.shared_conn.set(Arc::new(conn));
        }
        Ok(())
    }

    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        match self.shared_conn.get() {
            Some(c) => Ok(Box::new(Arc::clone(c))),
            None if self.shared => Err(Error::new(libc::EIO, "nbd: not connected yet")),
            None if self.dynamic_export => {
                let name = String::from_utf8(info.export_name.clone())
                    .map_err(|_| Error::new(libc::EINVAL, "nbd: export name is not UTF-8"))?;
                Ok(Box::new(self.connect_to(&name)?))
            }
            None => Ok(Box::new(self.connect()?)),
        }
    }

    /// With dynamic-export=true, the back server's exports, as nbdkit's
    /// plugin lists them; otherwise the server's default rule.
    fn list_exports(&self, _: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        if !self.dynamic_export {
            return Ok(None);
        }
        Conn::list(&self.target, &self.tls).map(Some)
    }
}

/// A connection already made, shared by every client (xnbd-server's
/// remote).
impl Plugin for NbdConn {
    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(
            parse_uri("nbd://localhost:1234/disk").unwrap(),
            (Target::Tcp("localhost".into(), 1234), "disk".into())
        );
        assert_eq!(
            parse_uri("nbd://[::1]/").unwrap(),
            (Target::Tcp("::1".into(), 10809), "".into())
        );
        assert_eq!(
            parse_uri("nbd+unix:///a%20b?socket=/tmp/s%3D").unwrap(),
            (Target::Unix("/tmp/s=".into()), "a b".into())
        );
        assert!(uri_tls("nbds://h/").unwrap().is_some());
        assert!(uri_tls("nbd://h/").unwrap().is_none());
        assert!(parse_uri("http://h/").is_err());
        assert!(parse_uri("nbd+unix:///x").is_err());
        assert_eq!(
            parse_uri("nbd+vsock://2:10810/e").unwrap(),
            (Target::Vsock(2, 10810), "e".into())
        );
    }
}
