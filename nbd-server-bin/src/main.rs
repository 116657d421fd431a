//! `nbdkit`: an nbdkit-compatible NBD server over nbd-core.
//!
//! See `cli.rs` for the command line. Startup: parse, take over sockets
//! passed by socket activation (LISTEN_FDS/LISTEN_PID, nbdkit-service(1)),
//! load the plugin and filters (errors are one line on stderr and exit
//! status 1), bind, fork into the background unless told not to (the
//! parent returns once the daemon is listening and has written its pid
//! file), then accept connections, each served by `conn::serve` on its
//! own threads. Messages: see `log.rs`.

use nbd_server_bin::process::signals::{self, Signals};
use nbd_server_bin::process::{daemon, pidfile, privileges, selinux};
use nbd_server_bin::{chain, cli, conn, cplugin, listen, log, tls};

use std::ffi::CString;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use nix::unistd::Pid;
use parking_lot::Mutex;

use nbd_core::server::negotiate::Tls as TlsPolicy;
use nbd_core::wire::consts::{handshake_flags, DEFAULT_PORT};

use cli::{Action, Cli, LogDest};
use conn::Server;
use listen::{AcceptOpts, Listener};

/// The nbdkit release whose behaviour we follow.
const NBDKIT_VERSION: &str = "1.32.5";
const VERSION: &str = concat!("nbdkit 1.32.5 (nbd-rs ", env!("CARGO_PKG_VERSION"), ")");

/// Paths to remove at exit: the socket, the private socket directory, the
/// pid file.
static CLEANUP: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());

fn cleanup() {
    let list = std::mem::take(&mut *CLEANUP.lock());
    for (p, is_dir) in list.into_iter().rev() {
        let _ = if is_dir {
            std::fs::remove_dir(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

/// The exit status `signal_loop` leaves with: that of the `--run`
/// command once it has ended, else 0.
static EXIT_STATUS: AtomicI32 = AtomicI32::new(0);

fn exit(code: i32) -> ! {
    // As nbdkit: connections whose client has gone have closed their
    // chains (filters' finalize and close, the plugin's close) before
    // cleanup and unload.
    nbd_server_bin::process::live::wait_for_finishing(std::time::Duration::from_secs(2));
    cplugin::shut_down();
    nbd_server_bin::plugins::sh::shut_down();
    cleanup();
    std::process::exit(code)
}

fn die(msg: impl std::fmt::Display) -> ! {
    log::error!("{msg}");
    exit(1)
}

/// A message printed as it is, without the program's name (nbdkit's
/// perror(3) messages).
fn die_plain(msg: impl std::fmt::Display) -> ! {
    eprintln!("{msg}");
    exit(1)
}

/// The variables of `--run` (shell variables, not exported, as nbdkit).
type RunVars = Vec<(&'static str, String)>;

fn main() {
    cplugin::keep_exported_functions();
    let parent = nix::unistd::getppid();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let c = match cli::parse(&args) {
        Ok(Action::Serve(c)) => *c,
        Ok(Action::Help) => {
            print!("{}", cli::USAGE);
            return;
        }
        Ok(Action::Version) => {
            println!("{VERSION}");
            return;
        }
        Ok(Action::ShortOptions) => {
            cli::SHORT_OPTIONS.iter().for_each(|o| println!("{o}"));
            return;
        }
        Ok(Action::LongOptions) => {
            cli::LONG_OPTIONS.iter().for_each(|o| println!("{o}"));
            return;
        }
        Ok(Action::DumpConfig) => {
            dump_config();
            return;
        }
        Err(e) => die(e),
    };
    if let Some(d) = c.log {
        log::set_dest(d);
    }
    log::set_verbose(c.verbose);
    // With -s the client is on stdin/stdout: plugins must not read them.
    cplugin::set_stdio_safe(!c.single);
    cplugin::set_debug_flags(&c.debug_flags);
    if c.help {
        // The usage, then the plugin's own help, as nbdkit.
        print!("{}", cli::USAGE);
        for f in &c.filters {
            let help = nbd_server_bin::chain::filter_help(f).unwrap_or_else(|e| die(e));
            print!("\n{help}");
        }
        let help = cplugin::plugin_help(&c.plugin).unwrap_or_else(|e| die(e));
        print!("\n{help}");
        exit(0);
    }
    if c.version {
        // The filters', then the plugin's, as nbdkit; a name that is not
        // a plugin or filter fails.
        let mut lines = vec![VERSION.to_string()];
        for f in &c.filters {
            lines.push(nbd_server_bin::chain::filter_version(f).unwrap_or_else(|e| die(e)));
        }
        lines.push(cplugin::plugin_version(&c.plugin).unwrap_or_else(|e| die(e)));
        println!("{}", lines.join("\n"));
        exit(0);
    }
    if c.dump_plugin {
        let filters_model =
            nbd_server_bin::chain::filters_thread_model(&c.filters).unwrap_or_else(|e| die(e));
        match cplugin::dump_plugin(&c.plugin, &c.params, filters_model) {
            Ok(()) => exit(0),
            Err(e) => die(e),
        }
    }
    // Names are checked before anything is bound; the change itself
    // comes after binding and forking.
    let user = c
        .user
        .as_deref()
        .map(|u| privileges::parse_user(u).unwrap_or_else(|e| die(e)));
    let group = c
        .group
        .as_deref()
        .map(|g| privileges::parse_group(g).unwrap_or_else(|e| die(e)));
    if c.swap {
        privileges::lock_in_memory().unwrap_or_else(|e| die(e));
    }
    // Before any thread exists: this edits the environment.
    let activated = listen::activation().unwrap_or_else(|e| die(e));
    if activated.is_some()
        && (c.ipaddr.is_some()
            || c.port.is_some()
            || c.run.is_some()
            || c.single
            || c.unix.is_some()
            || c.vsock)
    {
        die("socket activation: -i, -p, --run, -s, -U and --vsock cannot be used with socket activation (LISTEN_FDS/LISTEN_PID)");
    }

    tls::configure(
        c.tls.as_deref(),
        c.tls_certificates.as_deref(),
        c.tls_psk.as_deref(),
        c.tls_verify_peer,
    )
    .unwrap_or_else(|e| die(e));
    // An empty error: a loaded plugin reported it already.
    let chain = chain::build(&c.plugin, &c.filters, &c.params, c.readonly).unwrap_or_else(|e| {
        if e.is_empty() {
            exit(1)
        }
        die(e)
    });
    // Below the parallel thread model a connection's requests run on its
    // own thread, as nbdkit's (see `Chain::parallel_requests`).
    let threads = if chain.parallel_requests() {
        c.threads
    } else {
        1
    };
    let srv = Arc::new(Server {
        chain,
        readonly: c.readonly,
        export_name: c.exportname.clone(),
        threads,
        handshake_flags: c.mask_handshake.unwrap_or(handshake_flags::ALL) & handshake_flags::ALL,
        no_sr: c.no_sr,
        no_eh: c.no_eh || nbd_server_bin::conn::extended_headers_disabled_by_env(),
        oldstyle: c.oldstyle,
        limits: Default::default(),
    });

    let signals = Signals::new(&signals::EXIT);
    if c.single {
        signals.block();
        exit_with_parent(c.exit_with_parent, parent);
        privileges::change(user, group).unwrap_or_else(|e| die(e));
        srv.chain.after_fork().unwrap_or_else(|e| die(e));
        std::thread::spawn(move || signal_loop(&signals));
        let (rd, wr) =
            listen::inherited_connection(std::io::stdin().as_fd(), std::io::stdout().as_fd())
                .unwrap_or_else(|e| die(format!("dup: {e}")));
        let peer = listen::peer_of(0);
        conn::serve(srv, rd, wr, 0, peer);
        exit(0);
    }

    let is_activated = activated.is_some();
    let (listeners, vars) = match activated {
        Some(ls) => {
            for l in &ls {
                if !listen::is_listening(l.0.as_raw_fd()) {
                    die(format!(
                        "socket activation: file descriptor {} is not a listening socket",
                        l.0.as_raw_fd()
                    ));
                }
            }
            (ls, Vec::new())
        }
        None => {
            // The label goes on the listening sockets only.
            if let Some(label) = &c.selinux_label {
                selinux::set(label).unwrap_or_else(|e| die_plain(e));
            }
            let (ls, mut vars) = bind(&c);
            if c.selinux_label.is_some() {
                selinux::clear().unwrap_or_else(|e| die_plain(e));
            }
            tls_vars(&mut vars);
            (ls, vars)
        }
    };
    if c.print_uri {
        if let Some((_, uri)) = vars.iter().find(|(k, _)| *k == "uri") {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{uri}").and_then(|()| out.flush());
        }
    }

    let foreground = c.foreground || c.run.is_some() || c.exit_with_parent || is_activated;
    let ready = if foreground {
        None
    } else {
        Some(daemon::fork_when_ready().unwrap_or_else(|e| die(format!("fork: {e}"))))
    };
    // `--run` with `-u`/`-g`: the command keeps the identity the server
    // started with, as nbdkit's does (it runs in nbdkit's first process),
    // so it is started now and waits until the server is ready.
    let run_gate = match &c.run {
        Some(cmd) if user.is_some() || group.is_some() => {
            // The thread that waits for it must not take the exit signals.
            signals.block();
            Some(run_command(cmd, &vars, true))
        }
        _ => None,
    };
    // After forking, so the pid file is written as the new user (as
    // nbdkit writes it).
    privileges::change(user, group).unwrap_or_else(|e| die(e));
    if let Some(p) = &c.pidfile {
        let path = absolute(Path::new(p));
        match pidfile::write(&path) {
            Ok(()) => CLEANUP.lock().push((path, false)),
            Err(e) => die(format!("{p}: {e}")),
        }
    }
    if ready.is_some() {
        // Standard error stays with -v.
        daemon::null_stdio(c.verbose);
        let _ = std::env::set_current_dir("/");
        if c.log.is_none() {
            log::set_dest(LogDest::Syslog);
        }
    }
    signals.block();
    exit_with_parent(c.exit_with_parent, parent);
    srv.chain.after_fork().unwrap_or_else(|e| die(e));
    let opts = AcceptOpts {
        keep_alive: c.keep_alive,
    };
    listen::serve_all(listeners, srv, opts, "nbdkit");
    if let Some(r) = ready {
        r.notify();
    }
    match (run_gate, &c.run) {
        (Some(Some(gate)), _) => {
            let _ = std::fs::File::from(gate).write_all(b"go\n");
        }
        (None, Some(cmd)) => {
            run_command(cmd, &vars, false);
        }
        _ => {}
    }
    signal_loop(&signals);
}

/// `--dump-config`: key=value lines, as nbdkit's. `plugindir` is where
/// plugins given by name are looked for (after the built-in ones, and
/// before Debian's directory).
fn dump_config() {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("nbdkit"));
    let bindir = exe
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut v = NBDKIT_VERSION.split('.');
    let major = v.next().unwrap_or("1");
    let minor = v.next().unwrap_or("0");
    let mut out = String::new();
    for (k, val) in [
        ("binary", exe.display().to_string()),
        ("bindir", bindir.clone()),
        ("exit_with_parent", "yes".into()),
        ("filterdir", cplugin::filterdir()),
        ("host_cpu", std::env::consts::ARCH.into()),
        ("host_os", "linux-gnu".into()),
        ("name", "nbdkit".into()),
        ("plugindir", cplugin::plugindir()),
        ("sbindir", bindir),
        ("selinux", "no".into()),
        ("sysconfdir", "/etc".into()),
        ("tls", "yes".into()),
        ("version", NBDKIT_VERSION.into()),
        ("version_major", major.into()),
        ("version_minor", minor.into()),
        ("zstd", "no".into()),
    ] {
        out.push_str(&format!("{k}={val}\n"));
    }
    print!("{out}");
}

/// nbdkit-captive(1): `$tls` is "1" with `--tls=on`, "2" with
/// `--tls=require` and unset when TLS is off; with `--tls=require` the
/// URI's scheme is nbds (nbds+unix, nbds+vsock), as nbdkit 1.32.
fn tls_vars(vars: &mut RunVars) {
    let level = match tls::policy() {
        TlsPolicy::Off => return,
        TlsPolicy::On => "1",
        TlsPolicy::Require => "2",
    };
    if level == "2" {
        for (k, v) in vars.iter_mut() {
            if *k == "uri" || *k == "nbd" {
                *v = v.replacen("nbd", "nbds", 1);
            }
        }
    }
    vars.push(("tls", level.into()));
}

/// Binds and listens on a Unix socket at `path`, so that the path appears
/// only once the socket accepts connections: a client (or a script) that
/// waits for the file and then connects is never refused. The socket is
/// made under a temporary name beside `path` and then hard-linked to it,
/// which, unlike a rename, fails if `path` exists (as bind(2) would, with
/// EADDRINUSE). A path too long for a longer temporary name is bound
/// directly.
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    if tmp.as_os_str().len() >= 108 {
        // Too long for sun_path where `path` itself may still fit.
        return UnixListener::bind(path);
    }
    let _ = std::fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(std::io::Error::from_raw_os_error(libc::EADDRINUSE))
        }
        Err(e) => Err(e),
    }
}

/// Binds the listeners; returns them with the variables of `--run`.
fn bind(c: &Cli) -> (Vec<Listener>, RunVars) {
    let export = uri_quote(&c.exportname, false);
    if let Some(u) = &c.unix {
        let path = if u == "-" {
            let dir = make_temp_dir();
            CLEANUP.lock().push((dir.clone(), true));
            dir.join("socket")
        } else {
            absolute(Path::new(u))
        };
        let l = bind_unix(&path).unwrap_or_else(|e| die(format!("bind: {}: {e}", path.display())));
        CLEANUP.lock().push((path.clone(), false));
        let p = path.to_string_lossy().into_owned();
        let uri = format!("nbd+unix:///{export}?socket={}", uri_quote(&p, true));
        let env = vec![
            ("uri", uri.clone()),
            ("nbd", uri),
            ("port", String::new()),
            ("unixsocket", p),
            ("exportname", c.exportname.clone()),
        ];
        return (vec![Listener(l.into())], env);
    }
    if c.vsock {
        let port: u32 = match &c.port {
            Some(p) => p
                .parse()
                .unwrap_or_else(|_| die(format!("could not parse port number: {p}"))),
            None => DEFAULT_PORT as u32,
        };
        let (l, actual) = listen::bind_vsock(port)
            .unwrap_or_else(|e| die(format!("bind: AF_VSOCK port {port}: {e}")));
        // CID 1 is this machine (VMADDR_CID_LOCAL); a guest reaches its
        // host at CID 2.
        let uri = format!("nbd+vsock://1:{actual}/{export}");
        let env = vec![
            ("uri", uri.clone()),
            ("nbd", uri),
            ("port", actual.to_string()),
            ("unixsocket", String::new()),
            ("exportname", c.exportname.clone()),
        ];
        return (vec![l], env);
    }
    let port: u16 = match &c.port {
        Some(p) => p
            .parse()
            .unwrap_or_else(|_| die(format!("could not parse port number: {p}"))),
        None => DEFAULT_PORT,
    };
    let (ls, actual) = match &c.ipaddr {
        Some(a) => {
            let addrs: Vec<SocketAddr> = (a.as_str(), port)
                .to_socket_addrs()
                .unwrap_or_else(|e| die(format!("getaddrinfo: {a}: {e}")))
                .filter(|s| !(c.ipv4_only && s.is_ipv6() || c.ipv6_only && s.is_ipv4()))
                .collect();
            if addrs.is_empty() {
                die(format!(
                    "getaddrinfo: {a}: {port}: Name or service not known"
                ));
            }
            let mut ls = Vec::new();
            for addr in addrs {
                match TcpListener::bind(addr) {
                    Ok(l) => ls.push(Listener(OwnedFd::from(l))),
                    Err(e) => die(format!("bind: {addr}: {e}")),
                }
            }
            let actual = ls
                .first()
                .and_then(|l| listen::local_port(&l.0))
                .unwrap_or(port);
            (ls, actual)
        }
        None if c.ipv4_only || c.ipv6_only => {
            let (fd, actual) = listen::bind_any_of_family(port, c.ipv6_only)
                .unwrap_or_else(|e| die(format!("bind: port {port}: {e}")));
            (
                listen::listen_all(vec![fd]).unwrap_or_else(|e| die(format!("listen: {e}"))),
                actual,
            )
        }
        // [::], plus 0.0.0.0 where IPv6 sockets are v6-only.
        None => match listen::bind_any(port) {
            Ok((fds, actual)) => (
                listen::listen_all(fds).unwrap_or_else(|e| die(format!("listen: {e}"))),
                actual,
            ),
            Err((_, e)) => die(format!("bind: port {port}: {e}")),
        },
    };
    let host = match &c.ipaddr {
        Some(a) if a.contains(':') => format!("[{a}]"),
        Some(a) => a.clone(),
        None => "localhost".to_string(),
    };
    let uri = format!("nbd://{host}:{actual}/{export}");
    let env = vec![
        ("uri", uri.clone()),
        ("nbd", uri),
        ("port", actual.to_string()),
        ("unixsocket", String::new()),
        ("exportname", c.exportname.clone()),
    ];
    (ls, env)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Percent-encodes everything but unreserved characters (and '/' in paths).
fn uri_quote(s: &str, path: bool) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (path && b == b'/');
        if keep {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn make_temp_dir() -> PathBuf {
    let tmp = std::env::var_os("TMPDIR")
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let template = tmp.join("nbdkitXXXXXX");
    let c = CString::new(template.as_os_str().as_bytes())
        .unwrap_or_else(|_| die("TMPDIR contains a NUL byte"));
    let mut bytes = c.into_bytes_with_nul();
    // SAFETY: mkdtemp rewrites the XXXXXX of a NUL-terminated buffer we own.
    let r = unsafe { libc::mkdtemp(bytes.as_mut_ptr() as *mut libc::c_char) };
    if r.is_null() {
        die(format!(
            "mkdtemp: {}: {}",
            template.display(),
            std::io::Error::last_os_error()
        ));
    }
    bytes.pop();
    PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))
}

/// `--exit-with-parent`: SIGTERM (taken by `signal_loop`, which cleans
/// up) when the parent dies; if it is already gone, exit now.
fn exit_with_parent(on: bool, parent: Pid) {
    if on && !signals::term_on_parent_death(parent) {
        exit(0);
    }
}

/// Waits for an exit signal, then cleans up and exits. On the main
/// thread this is where the plugin's `cleanup` and `unload` run: plugins
/// that embed an interpreter (python, perl, tcl) initialised it on the
/// main thread in `load` and must tear it down there.
fn signal_loop(signals: &Signals) -> ! {
    signals.wait();
    exit(EXIT_STATUS.load(Ordering::SeqCst))
}

/// Quotes `s` for /bin/sh: single quotes, with embedded ones as '\''.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Starts `--run CMD` under /bin/sh with `$uri`, `$nbd`, `$port`,
/// `$unixsocket`, `$exportname` and, with TLS, `$tls` set as shell
/// variables (not exported, as nbdkit). When it exits, so do we,
/// with its status; killed by signal N: 128 + N, with a message.
/// Starts the `--run` command. `gated`: it first waits for a line on
/// its descriptor 3, written to the pipe returned (if the server ends
/// first, the pipe's end makes it exit with status 1).
fn run_command(cmd: &str, vars: &[(&'static str, String)], gated: bool) -> Option<OwnedFd> {
    let (gate_rd, gate_wr) = if gated {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .unwrap_or_else(|e| die(format!("--run: pipe: {e}")));
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let mut script = String::new();
    if gated {
        script.push_str("read _ <&3 || exit 1; exec 3<&-\n");
    }
    for (k, v) in vars {
        script.push_str(&format!("{k}={}\n", shell_quote(v)));
    }
    script.push_str(cmd);
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(script);
    // The exit signals are blocked in every thread of ours (see
    // `Signals::block`), and a signal mask survives exec: unblock them in
    // the child, or the command could not be interrupted or terminated.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        let gate = gate_rd.as_ref().map(|r| r.as_raw_fd());
        command.pre_exec(move || {
            signals::unblock_all();
            if let Some(fd) = gate {
                // dup2 onto itself would keep close-on-exec.
                if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| die(format!("--run: /bin/sh: {e}")));
    std::thread::spawn(move || {
        let code = match child.wait() {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(c), _) => c,
                    (None, Some(sig)) => {
                        eprintln!("nbdkit: external command was killed by signal {sig}");
                        128 + sig
                    }
                    _ => 1,
                }
            }
            Err(e) => {
                log::error!("waiting for --run command: {e}");
                1
            }
        };
        // The main thread exits, in `signal_loop`, as nbdkit's server
        // does when its captive command ends (nbdkit sends it SIGTERM).
        EXIT_STATUS.store(code, Ordering::SeqCst);
        // SAFETY: kill(2) on our own pid with a signal number.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
    drop(gate_rd);
    gate_wr
}
