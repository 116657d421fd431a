//! `xnbd-server`: xnbd's server (xnbd-server(8)) on our core and backends.
//!
//! - `--target DISK_IMAGE`: the file plugin.
//! - `--cow-target BASE_DISK_IMAGE`: the file plugin, read-only, under
//!   the xnbd-cache layer in copy-on-write mode; the layer and its bitmap
//!   are `BASE.cowID.layer1` and `BASE.cowID.bm` (the first free ID),
//!   created at startup and removed at shutdown. The base never changes.
//! - `--proxy REMOTE_HOST REMOTE_PORT CACHE_IMAGE CACHE_BITMAP_IMAGE
//!   CONTROL_SOCKET_PATH`: the nbd plugin (to the remote, never written)
//!   under the xnbd-cache layer, with a control socket (see `control.rs`)
//!   for `xnbd-bgctl`. SIGUSR2 switches to target mode (as
//!   `xnbd-bgctl --switch`).
//!
//! Clients get fixed newstyle with structured replies and block status,
//! or with `--oldstyle` the oldstyle handshake that xnbd itself speaks
//! (`NBDMAGIC`, 0x00420281861253, size, flags, 124 zero bytes; no options,
//! so simple replies and no block status), served by `conn::serve` like
//! our nbdkit's, on TCP port `--lport`
//! (default 8520), IPv6 and IPv4, or on standard input with `--inetd`.
//! `--connected-fd N` serves one client on descriptor N whose handshake
//! was already done, as xnbd-server(8) says: xnbd-wrapper negotiates with
//! the client (newstyle, NBD_OPT_EXPORT_NAME), then starts
//! `xnbd-server --connected-fd N`, which goes straight to requests (simple
//! replies) and exits when that client is gone.
//! SIGUSR1 in target mode writes a snapshot `DISK_IMAGE.snapshot.NNNNNNNN`
//! (a reflink where the file system offers one, else a copy). SIGINT,
//! SIGTERM, SIGHUP, SIGQUIT: the cache is flushed, the files of a
//! copy-on-write target and the control socket are removed, and the
//! server exits 0.
//!
//! Bad input (missing image, bitmap of the wrong size, unreachable remote,
//! control socket in use, ...) is one line on standard error and exit
//! status 1, checked before any file is created or changed.

use std::fs::{File, OpenOptions};
use std::os::unix::io::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::Signal;
use parking_lot::Mutex;

use nbd_core::server::Backend;
use nbd_core::wire::consts::handshake_flags;

use crate::chain::{Chain, Filter, Plugin};
use crate::conn::{self, Server};
use crate::filters::xnbd_cache::{Options, XnbdCache};
use crate::listen::{self, AcceptOpts, Listener};
use crate::log;
use crate::params::Params;
use crate::plugins::{file, nbd};
use crate::process::daemon;
use crate::process::signals::{self, Signals};

use super::control::{self, Control, Remote};

pub const USAGE: &str = "\
Usage:
  xnbd-server --target [options] DISK_IMAGE
  xnbd-server --cow-target [options] BASE_DISK_IMAGE
  xnbd-server --proxy [options] [--target-exportname NAME] [--clear-bitmap]
              REMOTE_HOST REMOTE_PORT CACHE_IMAGE CACHE_BITMAP_IMAGE
              CONTROL_SOCKET_PATH
  xnbd-server --help
  xnbd-server --version

Options:
  --lport PORT     listen on PORT (default 8520), IPv6 and IPv4; 0: a free
                   port, named in the startup message (... on port N)
  --readonly       writes fail with EPERM; the connection stays up
  --daemonize      run in the background
  --inetd          serve one client on standard input
  --connected-fd N serve one client on descriptor N, already negotiated
                   (by xnbd-wrapper): requests and simple replies at once
  --logpath FILE   messages to FILE
  --syslog         messages to the system log
  --tos            accepted for compatibility (no effect)
  --max-queue-size N
                   hold at most N requests at once, all clients together
                   (default 0: no limit); more are left unread until
                   replies have gone out
  --max-buf-size BYTES
                   hold at most BYTES of read and write data at once (a
                   request alone always goes through; default 0: no limit)
  --tls=off|on|require
                   TLS, as our nbdkit (see nbdkit-tls(1)): on offers it,
                   require refuses clients that do not start it
  --tls-certificates DIR
                   X.509: server-cert.pem, server-key.pem, and ca-cert.pem
                   and ca-crl.pem if present (default /etc/pki/nbdkit for
                   root, else $HOME/.pki/nbdkit)
  --tls-psk FILE   pre-shared keys instead (psktool's username:hexkey lines)
  --tls-verify-peer
                   X.509 clients must show a certificate the CA signed
  --oldstyle       the oldstyle handshake (xnbd's own, for old clients:
                   size and flags in the greeting, no options, no TLS)

Signals: SIGUSR1 snapshots a --target image; SIGUSR2 switches a proxy
to target mode (as xnbd-bgctl --switch).

Several clients may connect at once, and nothing coordinates their
writes: if several clients write, use a cluster file system on the export.
";

pub const VERSION: &str = concat!(
    "xnbd-server (nbd-rs ",
    env!("CARGO_PKG_VERSION"),
    "), compatible with xnbd 0.4.0"
);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Target(PathBuf),
    CowTarget(PathBuf),
    Proxy {
        host: String,
        port: u16,
        cache: PathBuf,
        bitmap: PathBuf,
        control: PathBuf,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cli {
    pub mode: Mode,
    pub lport: u16,
    pub readonly: bool,
    pub daemonize: bool,
    pub inetd: bool,
    /// `--connected-fd N`: one pre-negotiated client on descriptor N.
    pub connected_fd: Option<i32>,
    pub logpath: Option<PathBuf>,
    pub syslog: bool,
    pub target_exportname: String,
    pub clear_bitmap: bool,
    /// `--oldstyle`: xnbd's handshake instead of fixed newstyle.
    pub oldstyle: bool,
    /// `--max-queue-size`, `--max-buf-size` (0: no limit).
    pub max_queue: u64,
    pub max_buf: u64,
    /// `--tls` (None: off), `--tls-certificates`, `--tls-psk`,
    /// `--tls-verify-peer`: as our nbdkit's (`tls.rs`).
    pub tls: Option<String>,
    pub tls_certificates: Option<String>,
    pub tls_psk: Option<String>,
    pub tls_verify_peer: bool,
}

pub enum Action {
    Serve(Box<Cli>),
    Help,
    Version,
}

pub fn parse(args: &[String]) -> Result<Action, String> {
    let mut mode = None;
    let mut pos = Vec::new();
    let mut lport = 8520u16;
    let (mut readonly, mut daemonize, mut inetd, mut syslog, mut clear) =
        (false, false, false, false, false);
    let mut oldstyle = false;
    let mut connected_fd = None;
    let (mut max_queue, mut max_buf) = (0u64, 0u64);
    let (mut tls, mut tls_certificates, mut tls_psk) = (None, None, None);
    let mut tls_verify_peer = false;
    let mut logpath = None;
    let mut exportname = String::new();
    let mut it = args.iter();
    let mut only_pos = false;
    while let Some(a) = it.next() {
        if only_pos || !a.starts_with("--") {
            pos.push(a.clone());
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = |n: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("option {n} needs a value"))
        };
        let mut set_mode = |m: &'static str| match mode.replace(m) {
            Some(old) if old != m => Err(format!("--{old} and --{m} cannot be used together")),
            _ => Ok(()),
        };
        match name {
            "--" => only_pos = true,
            "--help" => return Ok(Action::Help),
            "--version" => return Ok(Action::Version),
            "--target" => set_mode("target")?,
            "--cow-target" => set_mode("cow-target")?,
            "--proxy" => set_mode("proxy")?,
            "--lport" => {
                let v = value(name)?;
                lport = v
                    .parse()
                    .map_err(|_| format!("--lport: not a port number: {v}"))?;
            }
            "--readonly" => readonly = true,
            "--daemonize" => daemonize = true,
            "--inetd" => inetd = true,
            "--syslog" => syslog = true,
            "--tos" => {}
            "--oldstyle" => oldstyle = true,
            "--tls" => tls = Some(value(name)?),
            "--tls-certificates" => tls_certificates = Some(value(name)?),
            "--tls-psk" => tls_psk = Some(value(name)?),
            "--tls-verify-peer" => tls_verify_peer = true,
            "--max-queue-size" => {
                let v = value(name)?;
                max_queue = v
                    .parse()
                    .map_err(|_| format!("--max-queue-size: not a number of requests: {v}"))?;
            }
            "--max-buf-size" => {
                let v = value(name)?;
                max_buf = v
                    .parse()
                    .map_err(|_| format!("--max-buf-size: not a number of bytes: {v}"))?;
            }
            "--clear-bitmap" => clear = true,
            "--logpath" => logpath = Some(PathBuf::from(value(name)?)),
            "--target-exportname" => exportname = value(name)?,
            "--connected-fd" => {
                let v = value(name)?;
                connected_fd = Some(
                    v.parse::<i32>()
                        .ok()
                        .filter(|fd| *fd >= 0)
                        .ok_or_else(|| format!("--connected-fd: not a file descriptor: {v}"))?,
                );
            }
            _ => return Err(format!("unknown option {a} (see --help)")),
        }
    }
    let mode = mode.ok_or("give one of --target, --cow-target or --proxy (see --help)")?;
    if (clear || !exportname.is_empty()) && mode != "proxy" {
        return Err("--clear-bitmap and --target-exportname are for --proxy only".into());
    }
    if daemonize && inetd {
        return Err("--daemonize and --inetd cannot be used together".into());
    }
    if connected_fd.is_some() && (inetd || daemonize || oldstyle) {
        return Err("--connected-fd cannot be used with --inetd, --daemonize or --oldstyle".into());
    }
    let tls_wanted = tls
        .as_deref()
        .is_some_and(|t| !matches!(t, "off" | "no" | "false" | "0"));
    if tls_wanted && oldstyle {
        return Err("--tls cannot be used with --oldstyle (oldstyle has no STARTTLS)".into());
    }
    if tls_wanted && connected_fd.is_some() {
        return Err(
            "--tls cannot be used with --connected-fd (the handshake was done elsewhere)".into(),
        );
    }
    let want = if mode == "proxy" { 5 } else { 1 };
    if pos.len() != want {
        return Err(match mode {
            "proxy" => "--proxy needs REMOTE_HOST REMOTE_PORT CACHE_IMAGE CACHE_BITMAP_IMAGE CONTROL_SOCKET_PATH".into(),
            "target" => "--target needs one DISK_IMAGE".into(),
            _ => "--cow-target needs one BASE_DISK_IMAGE".into(),
        });
    }
    let mode = match mode {
        "target" => Mode::Target(pos[0].clone().into()),
        "cow-target" => Mode::CowTarget(pos[0].clone().into()),
        _ => Mode::Proxy {
            host: pos[0].clone(),
            port: pos[1]
                .parse()
                .map_err(|_| format!("REMOTE_PORT: not a port number: {}", pos[1]))?,
            cache: pos[2].clone().into(),
            bitmap: pos[3].clone().into(),
            control: pos[4].clone().into(),
        },
    };
    Ok(Action::Serve(Box::new(Cli {
        mode,
        lport,
        readonly,
        daemonize,
        inetd,
        connected_fd,
        logpath,
        syslog,
        target_exportname: exportname,
        clear_bitmap: clear,
        oldstyle,
        max_queue,
        max_buf,
        tls,
        tls_certificates,
        tls_psk,
        tls_verify_peer,
    })))
}

/// What shutdown must do: flush this cache, remove these files.
struct Shutdown {
    cache: Option<Arc<XnbdCache>>,
    remove: Vec<PathBuf>,
}

static SHUTDOWN: Mutex<Shutdown> = Mutex::new(Shutdown {
    cache: None,
    remove: Vec::new(),
});

fn exit(code: i32) -> ! {
    let (cache, remove) = {
        let mut g = SHUTDOWN.lock();
        (g.cache.take(), std::mem::take(&mut g.remove))
    };
    if let Some(c) = cache {
        if let Err(e) = c.flush_cache() {
            log::error!("flushing the cache at exit: {e}");
        }
    }
    for p in remove {
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(code)
}

fn die(msg: impl std::fmt::Display) -> ! {
    log::error!("{msg}");
    exit(1)
}

pub fn main() {
    log::set_program("xnbd-server");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let c = match parse(&args) {
        Ok(Action::Serve(c)) => *c,
        Ok(Action::Help) => {
            print!("{USAGE}");
            return;
        }
        Ok(Action::Version) => {
            println!("{VERSION}");
            return;
        }
        Err(e) => die(e),
    };
    if let Some(p) = &c.logpath {
        match OpenOptions::new().create(true).append(true).open(p) {
            Ok(f) => log::set_file(f),
            Err(e) => die(format!("--logpath {}: {e}", p.display())),
        }
    } else if c.syslog {
        log::set_dest(crate::cli::LogDest::Syslog);
    }

    // Checks that create nothing come first.
    crate::tls::configure(
        c.tls.as_deref(),
        c.tls_certificates.as_deref(),
        c.tls_psk.as_deref(),
        c.tls_verify_peer,
    )
    .unwrap_or_else(|e| die(e));
    let connected = c
        .connected_fd
        .map(|fd| take_connected_fd(fd).unwrap_or_else(|e| die(e)));
    if let Mode::Proxy { control, .. } = &c.mode {
        control::check_free(control).unwrap_or_else(|e| die(e));
    }
    let one_client = c.inetd || connected.is_some();
    let (listeners, port) = if one_client {
        (Vec::new(), c.lport)
    } else {
        bind(c.lport)
    };
    let limits = Arc::new(conn::Limits::new(c.max_queue, c.max_buf));
    let Stack {
        chain,
        control,
        target,
    } = open_backend(&c, &limits).unwrap_or_else(|e| die(e));
    let control_listener = control.as_ref().map(|(ctl, path)| {
        let l = control::bind(path).unwrap_or_else(|e| die(e));
        SHUTDOWN.lock().remove.push(path.clone());
        (Arc::clone(ctl), l)
    });

    // Ready: clients may come.
    let listeners = listen_all(listeners);
    if c.daemonize {
        daemonize(c.logpath.is_none());
    }
    signals().block();
    let srv = Arc::new(Server {
        chain,
        readonly: c.readonly,
        export_name: String::new(),
        threads: 16,
        handshake_flags: handshake_flags::ALL,
        no_sr: false,
        no_eh: crate::conn::extended_headers_disabled_by_env(),
        oldstyle: c.oldstyle,
        limits,
    });
    if let Some((ctl, l)) = control_listener {
        std::thread::spawn(move || ctl.serve(l));
    }
    let cache = control.as_ref().map(|(ctl, _)| Arc::clone(&ctl.cache));
    let target = match (&c.mode, target) {
        (Mode::Target(p), Some(b)) => Some((p.clone(), b)),
        _ => None,
    };
    log::log_info(format_args!("{}", describe(&c, port)));
    if c.inetd {
        std::thread::spawn(move || signal_loop(cache, target));
        // As xnbd, the connection is standard input alone, read and
        // written.
        let stdin = std::io::stdin();
        let (rd, wr) = listen::inherited_connection(stdin.as_fd(), stdin.as_fd())
            .unwrap_or_else(|e| die(format!("dup: {e}")));
        let peer = listen::peer_of(0);
        conn::serve(srv, rd, wr, 0, peer);
        exit(0);
    }
    if let Some(fd) = connected {
        std::thread::spawn(move || signal_loop(cache, target));
        let peer = listen::peer_of(fd.as_raw_fd());
        let wr = File::from(fd);
        match wr.try_clone() {
            Ok(rd) => conn::serve_pre_negotiated(srv, rd, wr, 0, peer),
            Err(e) => die(format!("--connected-fd: {e}")),
        }
        exit(0);
    }
    listen::serve_all(listeners, srv, AcceptOpts::default(), "xnbd");
    signal_loop(cache, target)
}

/// The startup message. It comes once clients can connect, and names the
/// port (the one the system picked for `--lport 0`).
fn describe(c: &Cli, port: u16) -> String {
    let mut how = if c.inetd {
        "on standard input".to_string()
    } else if let Some(fd) = c.connected_fd {
        format!("to the pre-negotiated client on descriptor {fd}")
    } else {
        format!("on port {port}")
    };
    if c.oldstyle {
        how.push_str(" (oldstyle handshake)");
    }
    match crate::tls::policy() {
        nbd_core::server::negotiate::Tls::Off => {}
        nbd_core::server::negotiate::Tls::On => how.push_str(" (TLS offered)"),
        nbd_core::server::negotiate::Tls::Require => how.push_str(" (TLS required)"),
    }
    match &c.mode {
        Mode::Target(p) => format!("target mode: serving {} {how}", p.display()),
        Mode::CowTarget(p) => format!("cow-target mode: serving {} {how}", p.display()),
        Mode::Proxy { host, port, .. } => {
            format!("proxy mode: remote {host} port {port}, serving {how}")
        }
    }
}

/// What a mode serves.
struct Stack {
    /// The chain every connection opens.
    chain: Arc<Chain>,
    /// The proxy's control, with its socket path.
    control: Option<(Arc<Control>, PathBuf)>,
    /// The file plugin of a target, for snapshots (its handle is the same
    /// for every connection: the plugin itself).
    target: Option<Arc<dyn Backend>>,
}

/// The chain of the mode: the plugin, with the xnbd-cache filter over it
/// (started now, so that a bad bitmap is refused at startup); and the
/// proxy's control.
fn open_backend(c: &Cli, limits: &Arc<conn::Limits>) -> Result<Stack, String> {
    let file_plugin = |path: &Path, ro: bool| {
        if !path.exists() {
            return Err(format!("{}: no such file", path.display()));
        }
        let mut p = Params::new(
            "file",
            vec![("file".into(), path.to_string_lossy().into_owned())],
        );
        file::FilePlugin::from_parsed(&mut p, ro).map(Arc::new)
    };
    let over = |plugin: Arc<dyn Plugin>, cache: &Arc<XnbdCache>| {
        Arc::new(Chain::new(
            plugin,
            vec![Arc::clone(cache) as Arc<dyn Filter>],
        ))
    };
    match &c.mode {
        Mode::Target(path) => {
            let f = file_plugin(path, c.readonly)?;
            Ok(Stack {
                chain: Arc::new(Chain::plugin(Arc::clone(&f) as Arc<dyn Plugin>)),
                control: None,
                target: Some(f),
            })
        }
        Mode::CowTarget(base) => {
            let below = file_plugin(base, true)?;
            let (layer, bm) = claim_cow_files(base)?;
            let opts = Options {
                cache: layer,
                bitmap: bm,
                clear_bitmap: true,
                fetch_on_read: false,
            };
            let cache = Arc::new(XnbdCache::new(opts));
            cache.start(&*below)?;
            SHUTDOWN.lock().cache = Some(Arc::clone(&cache));
            Ok(Stack {
                chain: over(below, &cache),
                control: None,
                target: None,
            })
        }
        Mode::Proxy {
            host,
            port,
            cache,
            bitmap,
            control,
        } => {
            let mut p = Params::new(
                "nbd",
                vec![
                    ("hostname".into(), host.clone()),
                    ("port".into(), port.to_string()),
                    ("export".into(), c.target_exportname.clone()),
                ],
            );
            let remote = nbd::NbdPlugin::open(&mut p, true)
                .map(Arc::new)
                .map_err(|e| format!("cannot connect to the remote {host} port {port}: {e}"))?;
            let opts = Options {
                cache: absolute(cache),
                bitmap: absolute(bitmap),
                clear_bitmap: c.clear_bitmap,
                fetch_on_read: true,
            };
            let xc = Arc::new(XnbdCache::new(opts));
            xc.start(&*remote)?;
            // Blocks come from the remote, for clients and for cache-all
            // alike, until xnbd-bgctl --reconnect gives another.
            xc.set_source(Arc::clone(&remote) as Arc<dyn Backend>)?;
            SHUTDOWN.lock().cache = Some(Arc::clone(&xc));
            let ctl = Arc::new(Control {
                cache: Arc::clone(&xc),
                remote: Mutex::new(Remote {
                    host: host.clone(),
                    port: *port,
                    export: c.target_exportname.clone(),
                }),
                limits: Arc::clone(limits),
            });
            Ok(Stack {
                chain: over(remote, &xc),
                control: Some((ctl, control.clone())),
                target: None,
            })
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// Creates `BASE.cowID.layer1` and `BASE.cowID.bm` for the first ID free
/// of both (created exclusively: two servers never share them) and
/// registers them for removal at shutdown.
fn claim_cow_files(base: &Path) -> Result<(PathBuf, PathBuf), String> {
    for id in 0..10_000 {
        let layer = PathBuf::from(format!("{}.cow{id}.layer1", base.display()));
        let bm = PathBuf::from(format!("{}.cow{id}.bm", base.display()));
        if bm.exists() {
            continue;
        }
        let excl = |p: &Path| OpenOptions::new().write(true).create_new(true).open(p);
        match excl(&layer) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", layer.display())),
        }
        match excl(&bm) {
            Ok(_) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&layer);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    continue;
                }
                return Err(format!("{}: {e}", bm.display()));
            }
        }
        SHUTDOWN.lock().remove.extend([layer.clone(), bm.clone()]);
        return Ok((layer, bm));
    }
    Err(format!(
        "{}: no free copy-on-write file name",
        base.display()
    ))
}

/// Binds the port on every address (see `listen::bind_any`), or dies.
fn bind(port: u16) -> (Vec<OwnedFd>, u16) {
    listen::bind_any(port)
        .unwrap_or_else(|(e6, e)| die(format!("cannot listen on port {port}: {e} (IPv6: {e6})")))
}

/// Starts listening on the bound sockets.
fn listen_all(fds: Vec<OwnedFd>) -> Vec<Listener> {
    listen::listen_all(fds).unwrap_or_else(|e| die(format!("listen: {e}")))
}

/// Takes descriptor `fd` (`--connected-fd`), which must be open and is
/// ours from now on, and makes it blocking, as xnbd does.
fn take_connected_fd(fd: i32) -> Result<OwnedFd, String> {
    // SAFETY: fcntl on a number; F_GETFL fails with EBADF if it is not an
    // open descriptor, and then nothing is taken.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(format!(
            "--connected-fd {fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the descriptor is open and was handed to us to own; the
    // flags are its own minus O_NONBLOCK, plus close-on-exec.
    unsafe {
        if fl & libc::O_NONBLOCK != 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Forks; the parent exits 0 (every socket is already bound, so clients
/// may connect at once). The child leaves the terminal; messages go to
/// the system log unless `--logpath` was given.
fn daemonize(to_syslog: bool) {
    if let Err(e) = daemon::fork_detached() {
        die(format!("fork: {e}"));
    }
    daemon::null_stdio(false);
    if to_syslog {
        log::set_dest(crate::cli::LogDest::Syslog);
    }
}

/// Ours: the exit signals, SIGUSR1 (snapshot) and SIGUSR2 (switch).
fn signals() -> Signals {
    let mut set = signals::EXIT.to_vec();
    set.extend([Signal::SIGUSR1, Signal::SIGUSR2]);
    Signals::new(&set)
}

fn signal_loop(cache: Option<Arc<XnbdCache>>, target: Option<(PathBuf, Arc<dyn Backend>)>) -> ! {
    let set = signals();
    loop {
        match set.wait() {
            Signal::SIGUSR2 => match &cache {
                Some(c) if c.options().fetch_on_read => match c.switch(false) {
                    Ok(()) => log::log_info(format_args!("switched to target mode")),
                    Err(e) => log::error!("SIGUSR2: cannot switch: {e}"),
                },
                _ => log::error!("SIGUSR2: not a proxy"),
            },
            Signal::SIGUSR1 => match &target {
                Some((path, b)) => match snapshot(path, &**b) {
                    Ok(p) => log::log_info(format_args!("snapshot {}", p.display())),
                    Err(e) => log::error!("SIGUSR1: snapshot: {e}"),
                },
                None => log::error!("SIGUSR1: snapshots are for --target only"),
            },
            _ => exit(0),
        }
    }
}

/// Writes `IMAGE.snapshot.NNNNNNNN` (the first free number) after a flush:
/// a reflink (FICLONE) where the file system offers one, else a copy.
pub fn snapshot(image: &Path, b: &dyn Backend) -> Result<PathBuf, String> {
    if b.can_flush().unwrap_or(false) {
        b.flush().map_err(|e| e.to_string())?;
    }
    let src = File::open(image).map_err(|e| format!("{}: {e}", image.display()))?;
    for n in 0..100_000_000u32 {
        let dst_path = PathBuf::from(format!("{}.snapshot.{n:08}", image.display()));
        let mut dst = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dst_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", dst_path.display())),
        };
        const FICLONE: libc::c_ulong = 0x4004_9409;
        // SAFETY: ioctl on two descriptors we own.
        let cloned = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) } == 0;
        if !cloned {
            let mut s = &src;
            std::io::copy(&mut s, &mut dst)
                .and_then(|_| dst.sync_all())
                .map_err(|e| {
                    let _ = std::fs::remove_file(&dst_path);
                    format!("{}: {e}", dst_path.display())
                })?;
        }
        return Ok(dst_path);
    }
    Err("no free snapshot name".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Cli, String> {
        let v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        match parse(&v)? {
            Action::Serve(c) => Ok(*c),
            _ => Err("not serve".into()),
        }
    }

    #[test]
    fn command_lines() {
        let c = p(&["--target", "--lport", "9000", "--readonly", "img"]).unwrap();
        assert_eq!(c.mode, Mode::Target("img".into()));
        assert_eq!(c.lport, 9000);
        assert!(c.readonly && !c.oldstyle);
        assert!(p(&["--cow-target", "--oldstyle", "img"]).unwrap().oldstyle);
        let c = p(&["--target", "--connected-fd=7", "img"]).unwrap();
        assert_eq!(c.connected_fd, Some(7));
        assert!(p(&["--target", "--connected-fd", "-1", "img"]).is_err());
        assert!(p(&["--target", "--connected-fd", "3", "--inetd", "img"]).is_err());
        let c = p(&[
            "--target",
            "--max-queue-size",
            "4",
            "--max-buf-size=65536",
            "i",
        ])
        .unwrap();
        assert_eq!((c.max_queue, c.max_buf), (4, 65536));
        assert!(p(&["--target", "--max-queue-size", "-1", "i"]).is_err());
        assert!(p(&["--target", "--max-buf-size", "1M", "i"]).is_err());
        assert!(p(&["--target", "--max-buf-size"]).is_err());
        let c = p(&[
            "--target",
            "--tls=require",
            "--tls-psk",
            "k",
            "--tls-verify-peer",
            "i",
        ])
        .unwrap();
        assert_eq!(c.tls.as_deref(), Some("require"));
        assert_eq!(c.tls_psk.as_deref(), Some("k"));
        assert!(c.tls_verify_peer && c.tls_certificates.is_none());
        assert!(p(&["--target", "--tls=on", "--oldstyle", "i"]).is_err());
        assert!(p(&["--target", "--tls=off", "--oldstyle", "i"]).is_ok());
        assert!(p(&["--target", "--tls=require", "--connected-fd", "3", "i"]).is_err());
        let c = p(&[
            "--proxy",
            "--target-exportname=x",
            "h",
            "10809",
            "c",
            "b",
            "s",
        ])
        .unwrap();
        assert!(matches!(c.mode, Mode::Proxy { port: 10809, .. }));
        assert_eq!(c.target_exportname, "x");
        assert!(p(&["--target"]).is_err());
        assert!(p(&["--target", "--proxy", "a"]).is_err());
        assert!(p(&["--proxy", "h", "x", "c", "b", "s"]).is_err());
        assert!(p(&["--target", "--clear-bitmap", "a"]).is_err());
        assert!(p(&["--target", "--bogus", "a"]).is_err());
        assert!(p(&["img"]).is_err());
    }
}
