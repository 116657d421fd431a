//! `nbdkit`: an nbdkit-compatible NBD server over nbd-core.
//!
//! See `cli.rs` for the command line. Startup: parse, load the plugin
//! (errors are one line on stderr and exit status 1), bind, fork into the
//! background unless told not to, write the pid file, then accept
//! connections, each served by `conn::serve` on its own threads.

mod backend;
mod cli;
mod conn;

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::wire::consts::{handshake_flags, DEFAULT_PORT};

use cli::{Action, Cli};
use conn::Server;

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

fn exit(code: i32) -> ! {
    cleanup();
    std::process::exit(code)
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("nbdkit: error: {msg}");
    exit(1)
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

fn main() {
    let (filters, args) = backend::take_filter_args(std::env::args().skip(1).collect());
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
        Err(e) => die(e),
    };
    let backend =
        backend::open_stack(&c.plugin, &filters, &c.params, c.readonly).unwrap_or_else(|e| die(e));
    let srv = Arc::new(Server {
        backend,
        readonly: c.readonly,
        export_name: c.exportname.clone(),
        threads: c.threads,
        verbose: c.verbose,
        handshake_flags: c.mask_handshake.unwrap_or(handshake_flags::ALL) & handshake_flags::ALL,
    });

    if c.single {
        block_signals();
        if c.exit_with_parent {
            set_pdeathsig();
        }
        spawn_signal_thread();
        // SAFETY: dup of the standard descriptors, owned from here on.
        let (rd, wr) = unsafe { (dup_file(0), dup_file(1)) };
        conn::serve(srv, rd, wr, 0);
        exit(0);
    }

    let (listeners, env) = bind(&c);

    let foreground = c.foreground || c.run.is_some() || c.exit_with_parent;
    if !foreground {
        daemonize(c.verbose);
    }
    if let Some(p) = &c.pidfile {
        let path = absolute(Path::new(p));
        match File::create(&path).and_then(|mut f| writeln!(f, "{}", std::process::id())) {
            Ok(()) => CLEANUP.lock().push((path, false)),
            Err(e) => die(format!("{p}: {e}")),
        }
    }
    block_signals();
    if c.exit_with_parent {
        set_pdeathsig();
    }
    let next_id = Arc::new(AtomicUsize::new(0));
    for l in listeners {
        let srv = Arc::clone(&srv);
        let next_id = Arc::clone(&next_id);
        std::thread::spawn(move || accept_loop(l, srv, next_id));
    }
    if let Some(cmd) = &c.run {
        run_command(cmd, &env);
    }
    signal_loop();
}

/// Binds the listeners; returns them with the variables of `--run`.
fn bind(c: &Cli) -> (Vec<Listener>, Vec<(&'static str, String)>) {
    let export = uri_quote(&c.exportname, false);
    if let Some(u) = &c.unix {
        let path = if u == "-" {
            let dir = make_temp_dir();
            CLEANUP.lock().push((dir.clone(), true));
            dir.join("socket")
        } else {
            absolute(Path::new(u))
        };
        let l = UnixListener::bind(&path)
            .unwrap_or_else(|e| die(format!("bind: {}: {e}", path.display())));
        CLEANUP.lock().push((path.clone(), false));
        let p = path.to_string_lossy().into_owned();
        let uri = format!("nbd+unix:///{export}?socket={}", uri_quote(&p, true));
        let env = vec![
            ("uri", uri.clone()),
            ("nbd", uri.clone()),
            ("port", String::new()),
            ("unixsocket", p),
            ("exportname", c.exportname.clone()),
        ];
        return (vec![Listener::Unix(l)], env);
    }
    let port: u16 = match &c.port {
        Some(p) => p
            .parse()
            .unwrap_or_else(|_| die(format!("could not parse port number: {p}"))),
        None => DEFAULT_PORT,
    };
    let mut ls = Vec::new();
    match &c.ipaddr {
        Some(a) => {
            let addrs: Vec<SocketAddr> = (a.as_str(), port)
                .to_socket_addrs()
                .unwrap_or_else(|e| die(format!("getaddrinfo: {a}: {e}")))
                .collect();
            for addr in addrs {
                match TcpListener::bind(addr) {
                    Ok(l) => ls.push(l),
                    Err(e) => die(format!("bind: {addr}: {e}")),
                }
            }
        }
        None => {
            // [::] accepts IPv4 too on Linux (unless bindv6only is set, in
            // which case we add 0.0.0.0 as well).
            match TcpListener::bind(("::", port)) {
                Ok(l) => {
                    let actual = l.local_addr().map(|a| a.port()).unwrap_or(port);
                    ls.push(l);
                    if let Ok(l4) = TcpListener::bind(("0.0.0.0", actual)) {
                        ls.push(l4);
                    }
                }
                Err(_) => match TcpListener::bind(("0.0.0.0", port)) {
                    Ok(l) => ls.push(l),
                    Err(e) => die(format!("bind: port {port}: {e}")),
                },
            }
        }
    }
    let actual = ls
        .first()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port())
        .unwrap_or(port);
    let host = match &c.ipaddr {
        Some(a) if a.contains(':') => format!("[{a}]"),
        Some(a) => a.clone(),
        None => "localhost".to_string(),
    };
    let uri = format!("nbd://{host}:{actual}/{export}");
    let env = vec![
        ("uri", uri.clone()),
        ("nbd", uri.clone()),
        ("port", actual.to_string()),
        ("unixsocket", String::new()),
        ("exportname", c.exportname.clone()),
    ];
    (ls.into_iter().map(Listener::Tcp).collect(), env)
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

/// # Safety
/// `fd` must be an open descriptor.
unsafe fn dup_file(fd: i32) -> File {
    let d = libc::dup(fd);
    if d < 0 {
        die(format!("dup: {}", std::io::Error::last_os_error()));
    }
    File::from(OwnedFd::from_raw_fd(d))
}

fn daemonize(verbose: bool) {
    // SAFETY: no other thread exists yet (we fork before starting any).
    unsafe {
        match libc::fork() {
            -1 => die(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {}
            _ => libc::_exit(0),
        }
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if !verbose {
                libc::dup2(null, 2);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        let _ = libc::chdir(c"/".as_ptr());
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGQUIT);
        set
    }
}

/// Blocks the exit signals in this thread and every thread it starts, so
/// that `signal_loop` receives them with sigwait.
fn block_signals() {
    let set = signal_set();
    // SAFETY: setting this thread's mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn set_pdeathsig() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        if parent == 1 {
            exit(0);
        }
    }
}

/// Waits for an exit signal, then cleans up and exits.
fn signal_loop() -> ! {
    let set = signal_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait on a set of blocked signals.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            exit(0);
        }
    }
}

fn spawn_signal_thread() {
    std::thread::spawn(|| signal_loop());
}

fn accept_loop(l: Listener, srv: Arc<Server>, next_id: Arc<AtomicUsize>) {
    loop {
        let fd: OwnedFd = match &l {
            Listener::Unix(u) => match u.accept() {
                Ok((s, _)) => s.into(),
                Err(e) => {
                    accept_error(e);
                    continue;
                }
            },
            Listener::Tcp(t) => match t.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    s.into()
                }
                Err(e) => {
                    accept_error(e);
                    continue;
                }
            },
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let srv = Arc::clone(&srv);
        let r = std::thread::Builder::new()
            .name(format!("nbdkit-c{id}"))
            .spawn(move || {
                let wr = File::from(fd);
                let rd = match wr.try_clone() {
                    Ok(r) => r,
                    Err(_) => return,
                };
                conn::serve(srv, rd, wr, id);
            });
        if let Err(e) = r {
            eprintln!("nbdkit: error: cannot start a thread: {e}");
        }
    }
}

fn accept_error(e: std::io::Error) {
    eprintln!("nbdkit: error: accept: {e}");
    // Out of descriptors and the like: do not spin.
    std::thread::sleep(std::time::Duration::from_millis(10));
}

/// Starts `--run CMD`; when it exits, so do we, with its status.
fn run_command(cmd: &str, env: &[(&'static str, String)]) {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(cmd);
    for (k, v) in env {
        command.env(k, v);
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
                    (None, Some(sig)) => 128 + sig,
                    _ => 1,
                }
            }
            Err(e) => {
                eprintln!("nbdkit: error: waiting for --run command: {e}");
                1
            }
        };
        exit(code);
    });
}
