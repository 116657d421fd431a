//! nbdkit-service(1): socket activation with systemd-socket-activate (and
//! the example units), logging to stderr / syslog / nowhere, forking into
//! the background, AF_VSOCK. Clients are Debian's nbdinfo and our raw
//! client.

mod common;

use std::io::Read;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const SYSLOG_ENV: &str = "NBDKIT_TEST_SYSLOG_SOCKET";

fn nbdinfo_size(uri: &str) -> u64 {
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let out = Command::new(nbdinfo)
        .args(["--size", uri])
        .output()
        .unwrap();
    assert!(out.status.success(), "nbdinfo {uri}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn socket_activate(listen: &str, args: &[&str]) -> Child {
    let sa = require("systemd-socket-activate", "systemd");
    Command::new(sa)
        .arg("-l")
        .arg(listen)
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Socket activation on a TCP port of 127.0.0.1. The port is chosen here
/// and may be taken by another test in the meantime; then
/// systemd-socket-activate fails to bind and exits, and we try another.
fn socket_activate_tcp(args: &[&str]) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = socket_activate(&format!("127.0.0.1:{port}"), args);
        // Connecting starts the server; the first client waits in the backlog.
        let up = eventually(|| {
            matches!(child.try_wait(), Ok(Some(_)))
                || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if up && child.try_wait().unwrap().is_none() {
            return (child, port);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("systemd-socket-activate did not listen on any of 5 ports");
}

/// Stops `child` with SIGTERM; returns its exit code and standard error.
fn terminate(mut child: Child) -> (Option<i32>, String) {
    let _ = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let st = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (st.code(), err)
}

/// The executable of process `pid`.
fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// After the first client, the activated process is our nbdkit itself
/// (systemd-socket-activate execs it), still in the foreground.
fn assert_is_our_server_in_foreground(child: &mut Child) {
    assert!(child.try_wait().unwrap().is_none(), "server exited");
    assert_eq!(
        exe_of(child.id()),
        std::fs::canonicalize(BIN).unwrap(),
        "the activated process is not our nbdkit (did it fork?)"
    );
}

#[test]
fn socket_activation_tcp() {
    let (mut child, port) = socket_activate_tcp(&["memory", "3M"]);
    let uri = format!("nbd://127.0.0.1:{port}");
    assert_eq!(nbdinfo_size(&uri), 3 << 20);
    assert_eq!(nbdinfo_size(&uri), 3 << 20);
    assert_is_our_server_in_foreground(&mut child);
    let (code, err) = terminate(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn socket_activation_unix() {
    let dir = TempDir::new("sa-unix");
    let sock = dir.path().join("nbd.sock");
    let mut child = socket_activate(sock.to_str().unwrap(), &["memory", "5M"]);
    assert!(eventually(|| sock.exists()), "no socket");
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    assert_eq!(nbdinfo_size(&uri), 5 << 20);
    // Our raw client too, writing and reading back.
    let mut c = Client::connect(UnixStream::connect(&sock).unwrap(), true, true);
    c.write(4096, b"activated");
    assert_eq!(c.read(4096, 9), b"activated");
    c.disconnect();
    assert_is_our_server_in_foreground(&mut child);
    let (code, err) = terminate(child);
    assert_eq!(code, Some(0), "{err}");
    // The socket is systemd's: the server leaves it alone.
    assert!(sock.exists());
}

/// Runs our nbdkit as if socket-activated with one inherited descriptor
/// (fd 3, opened by `fd3` in the shell), LISTEN_PID set to its own pid.
fn fake_activation(fd3: &str, listen_fds: &str, args: &[&str]) -> std::process::Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{fd3}; export LISTEN_PID=$$ LISTEN_FDS={listen_fds}; exec \"$0\" \"$@\""
        ))
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_one_error(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("nbdkit: error: "), "{err}");
    assert!(err.contains(needle), "{err}");
}

#[test]
fn socket_activation_refuses_listening_options() {
    let fd3 = "exec 3<>/dev/null";
    for opts in [
        &["-i", "127.0.0.1"][..],
        &["-p", "10809"],
        &["--run", "true"],
        &["-s"],
        &["-U", "/tmp/x.sock"],
        &["--vsock"],
    ] {
        let mut args = opts.to_vec();
        args.extend(["memory", "1M"]);
        let out = fake_activation(fd3, "1", &args);
        assert_one_error(&out, "socket activation");
    }
    // Bad values of the variables are errors too, not silently ignored.
    let out = fake_activation(fd3, "0", &["memory", "1M"]);
    assert_one_error(&out, "LISTEN_FDS");
    let out = fake_activation(fd3, "17", &["memory", "1M"]);
    assert_one_error(&out, "LISTEN_FDS");
    let out = fake_activation("exec 3<&-", "1", &["memory", "1M"]);
    assert_one_error(&out, "invalid file descriptor");
    // An inherited descriptor that is not a listening socket.
    let out = fake_activation(fd3, "1", &["memory", "1M"]);
    assert_one_error(&out, "not a listening socket");
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    let dir = TempDir::new("sa-notours");
    let sock = dir.path().join("sock");
    let mut child = Command::new(BIN)
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .args(["-f", "-U", sock.to_str().unwrap(), "memory", "1M"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(|| sock.exists()), "server did not listen on -U");
    let c = Client::connect(UnixStream::connect(&sock).unwrap(), true, false);
    assert_eq!(c.size, 1 << 20);
    c.disconnect();
    assert!(child.try_wait().unwrap().is_none());
    let (code, err) = terminate(child);
    assert_eq!(code, Some(0));
    assert!(err.contains("LISTEN_PID was not for us (ignored)"), "{err}");
}

/// The shipped example units: systemd accepts them, and what they say
/// (ExecStart, with the socket of ListenStream) works when activated.
#[test]
fn example_units() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let socket = std::fs::read_to_string(src.join("nbdkit.socket")).unwrap();
    let service = std::fs::read_to_string(src.join("nbdkit.service")).unwrap();
    let dir = TempDir::new("units");
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![7u8; 2 << 20]).unwrap();
    let service = service
        .replace("/usr/sbin/nbdkit", BIN)
        .replace("/path/to/serve", disk.to_str().unwrap());
    std::fs::write(dir.path().join("nbdkit.socket"), &socket).unwrap();
    std::fs::write(dir.path().join("nbdkit.service"), &service).unwrap();
    let analyze = require("systemd-analyze", "systemd");
    let out = Command::new(analyze)
        .current_dir(dir.path())
        .args(["verify", "--man=no", "./nbdkit.socket", "./nbdkit.service"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {out:?}");
    assert!(
        !err.contains("Unknown") && !err.contains("ignoring"),
        "{err}"
    );

    let value = |unit: &str, key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in unit"))
            .to_string()
    };
    assert_eq!(value(&socket, "ListenStream"), "10809");
    assert_eq!(value(&socket, "Accept"), "no");
    let exec = value(&service, "ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], BIN);
    // Port 10809 may be taken here: the same unit on a free port.
    let (mut child, port) = socket_activate_tcp(&words[1..]);
    assert_eq!(nbdinfo_size(&format!("nbd://127.0.0.1:{port}")), 2 << 20);
    assert_is_our_server_in_foreground(&mut child);
    assert_eq!(terminate(child).0, Some(0));
}

/// A syslog daemon of our own: a datagram socket the server is pointed at
/// with NBDKIT_TEST_SYSLOG_SOCKET.
struct SyslogSink {
    sock: UnixDatagram,
    path: PathBuf,
}

impl SyslogSink {
    fn new(dir: &Path) -> SyslogSink {
        let path = dir.join("log");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        SyslogSink { sock, path }
    }

    fn recv(&self) -> String {
        let mut b = vec![0u8; 65536];
        let n = self.sock.recv(&mut b).expect("no syslog message arrived");
        String::from_utf8(b[..n].to_vec()).unwrap()
    }

    /// Whatever else arrived, without waiting.
    fn drain(&self) -> Vec<String> {
        self.sock.set_nonblocking(true).unwrap();
        let mut v = Vec::new();
        let mut b = vec![0u8; 65536];
        while let Ok(n) = self.sock.recv(&mut b) {
            v.push(String::from_utf8_lossy(&b[..n]).into_owned());
        }
        v
    }
}

/// `<11>Mmm dd hh:mm:ss nbdkit[PID]: error: ...` (facility user, LOG_ERR).
fn assert_syslog_error(rec: &str, pid: u32) {
    assert!(rec.starts_with("<11>"), "{rec}");
    let ts = &rec[4..19];
    let b = ts.as_bytes();
    assert!(
        b[0].is_ascii_uppercase() && b[3] == b' ' && b[6] == b' ' && b[9] == b':' && b[12] == b':',
        "timestamp {ts:?} in {rec}"
    );
    let rest = &rec[19..];
    let want = format!(" nbdkit[{pid}]: error: ");
    assert!(rest.starts_with(&want), "{rec}");
}

#[test]
fn log_to_syslog_debug_to_stderr() {
    let dir = TempDir::new("syslog");
    let sink = SyslogSink::new(dir.path());
    let sock = dir.path().join("sock");
    let child = Command::new(BIN)
        .env(SYSLOG_ENV, &sink.path)
        .args(["-f", "-v", "--log=syslog", "-U"])
        .arg(&sock)
        .args(["memory", "1M"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(eventually(|| sock.exists()));
    send_bad_request(&sock);
    let rec = sink.recv();
    assert_syslog_error(&rec, pid);
    let (_, err) = terminate(child);
    assert!(
        err.contains("nbdkit: debug: "),
        "-v messages missing: {err}"
    );
    assert!(!err.contains("error"), "errors went to stderr: {err}");
    for r in sink.drain() {
        assert!(!r.contains("debug"), "debug message in syslog: {r}");
    }
}

#[test]
fn log_null_and_stderr() {
    for (opt, on_stderr) in [("--log=null", false), ("--log=stderr", true), ("-f", true)] {
        let dir = TempDir::new("lognull");
        let sink = SyslogSink::new(dir.path());
        let sock = dir.path().join("sock");
        let child = Command::new(BIN)
            .env(SYSLOG_ENV, &sink.path)
            .args(["-f", opt, "-U"])
            .arg(&sock)
            .args(["memory", "1M"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(eventually(|| sock.exists()));
        send_bad_request(&sock);
        // A client after the bad one proves the error has been handled.
        Client::connect(UnixStream::connect(&sock).unwrap(), true, false).disconnect();
        let (_, err) = terminate(child);
        assert_eq!(err.contains("nbdkit: error: "), on_stderr, "{opt}: {err}");
        assert!(sink.drain().is_empty(), "{opt}: syslog used");
    }
}

/// Without -f: the parent returns once the daemon listens and has written
/// its pid file; errors then go to syslog by default; SIGTERM removes the
/// socket and the pid file.
#[test]
fn daemon_is_ready_when_parent_returns_and_logs_to_syslog() {
    let dir = TempDir::new("daemon");
    let sink = SyslogSink::new(dir.path());
    let sock = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let out = Command::new(BIN)
        .env(SYSLOG_ENV, &sink.path)
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(["memory", "1M"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // No waiting: all of this holds when the parent has returned.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file not written before the parent returned")
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    let c = Client::connect(
        UnixStream::connect(&sock).expect("not listening when the parent returned"),
        true,
        false,
    );
    assert_eq!(c.size, 1 << 20);
    c.disconnect();
    send_bad_request(&sock);
    assert_syslog_error(&sink.recv(), pid as u32);
    let _ = Command::new("kill").arg(pid.to_string()).status();
    assert!(
        eventually(|| !pid_alive(pid) && !sock.exists() && !pidfile.exists()),
        "daemon still running, or socket / pid file left behind"
    );
}

/// A parent whose daemon dies before it is ready does not report success.
#[test]
fn daemon_failure_reaches_the_parent() {
    let dir = TempDir::new("daemonfail");
    let out = Command::new(BIN)
        .arg("-U")
        .arg(dir.path().join("sock"))
        .arg("-P")
        .arg(dir.path().join("no/such/dir/pid"))
        .args(["memory", "1M"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("nbdkit: error: ") && err.contains("pid"),
        "{err}"
    );
    assert!(!dir.path().join("sock").exists());
}

#[test]
fn print_uri() {
    let dir = TempDir::new("printuri");
    let sock = dir.path().join("s");
    let mut child = Command::new(BIN)
        .args(["-f", "--print-uri", "-e", "x y", "-U"])
        .arg(&sock)
        .args(["memory", "1M"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
        r.read_line(&mut line).unwrap();
    }
    assert_eq!(
        line.trim_end(),
        format!("nbd+unix:///x%20y?socket={}", sock.display())
    );
    // Printed once listening.
    UnixStream::connect(&sock).unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

/// AF_VSOCK over the kernel's loopback transport (CID 1), where the kernel
/// offers it.
#[test]
fn vsock_loopback() {
    let have = |m: &str| Path::new("/sys/module").join(m).exists();
    if !have("vsock_loopback") {
        let _ = Command::new("modprobe")
            .arg("vsock_loopback")
            .stderr(Stdio::null())
            .status();
    }
    if !have("vsock_loopback") {
        eprintln!(
            "SKIP vsock_loopback: the kernel has no vsock loopback transport \
             (module vsock_loopback not loaded and modprobe failed or is missing), \
             so there is no CID 1 to connect to"
        );
        return;
    }
    let port = 20000 + std::process::id() % 20000;
    let mut child = Command::new(BIN)
        .args(["-f", "--vsock", "-p", &port.to_string(), "memory", "4M"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let uri = format!("nbd+vsock://1:{port}");
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let ok = eventually(|| {
        Command::new(&nbdinfo)
            .args(["--size", &uri])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !ok {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!("nbdinfo {uri} failed; server: {o:?}");
    }
    assert_eq!(nbdinfo_size(&uri), 4 << 20);
    assert_eq!(terminate(child).0, Some(0));
}
