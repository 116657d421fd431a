//! The command line: --run with a private socket, -s, errors, --version.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::*;

fn nbdkit(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nbdkit")
}

#[test]
fn run_with_private_socket() {
    let tmp = TempDir::new("run");
    let out = Command::new(BIN)
        .env("TMPDIR", tmp.path())
        .args([
            "-U",
            "-",
            "-e",
            "disk",
            "--run",
            "echo \"$uri|$nbd|$unixsocket|$exportname|$port\"; test -S \"$unixsocket\" || exit 9; exit 7",
            "memory",
            "1M",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = s.trim_end().split('|').collect();
    assert_eq!(f.len(), 5, "{s}");
    let sock = f[2];
    assert!(sock.starts_with(tmp.path().to_str().unwrap()), "{sock}");
    assert!(sock.ends_with("/socket"));
    assert_eq!(f[0], format!("nbd+unix:///disk?socket={sock}"));
    assert_eq!(f[0], f[1]);
    assert_eq!(f[3], "disk");
    assert_eq!(f[4], "");
    // The private directory is gone.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn run_command_reaches_the_server() {
    let out = nbdkit(&[
        "-U",
        "-",
        "--run",
        "test -S \"$unixsocket\" && exec cat /dev/null",
        "memory",
        "1M",
    ]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_over_tcp() {
    let out = nbdkit(&[
        "-p",
        "0",
        "-i",
        "127.0.0.1",
        "--run",
        "echo \"$uri $port\"",
        "memory",
        "1M",
    ]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    let (uri, port) = s.trim().split_once(' ').unwrap();
    let port: u16 = port.parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(uri, format!("nbd://127.0.0.1:{port}/"));
}

#[test]
fn single_on_stdin() {
    let (mine, theirs) = UnixStream::pair().unwrap();
    let fd: std::os::unix::io::OwnedFd = theirs.into();
    let fd2 = fd.try_clone().unwrap();
    let mut child = Command::new(BIN)
        .args(["-s", "memory", "1M"])
        .stdin(Stdio::from(fd))
        .stdout(Stdio::from(fd2))
        .spawn()
        .unwrap();
    mine.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut c = Client::connect(mine, true, true);
    assert_eq!(c.size, 1 << 20);
    c.write(100, b"single");
    assert_eq!(c.read(100, 6), b"single");
    c.disconnect();
    assert!(child.wait().unwrap().success());
}

fn one_error_line(args: &[&str], needle: &str) {
    let out = nbdkit(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("nbdkit: error: "), "{err}");
    assert!(err.contains(needle), "{err}");
}

#[test]
fn errors_are_one_line() {
    one_error_line(&["-U", "-", "nosuchplugin"], "nosuchplugin");
    one_error_line(
        &["-U", "-", "file", "/nonexistent/disk.img"],
        "/nonexistent/disk.img",
    );
    one_error_line(&["-U", "-", "memory", "size=12Q"], "12Q");
    one_error_line(&["-U", "-", "memory", "1M", "bogus=1"], "bogus");
    one_error_line(&["-U", "-", "memory"], "size");
    one_error_line(&["--no-such-option", "memory", "1M"], "no-such-option");
}

#[test]
fn version_and_help() {
    let out = nbdkit(&["--version"]);
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert_eq!(s.lines().count(), 1);
    assert!(s.starts_with("nbdkit "), "{s}");
    let out = nbdkit(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("PLUGIN"));
}

#[test]
fn background_with_pidfile() {
    let tmp = TempDir::new("bg");
    let sock = tmp.path().join("sock");
    let pidfile = tmp.path().join("pid");
    let out = nbdkit(&[
        "-U",
        sock.to_str().unwrap(),
        "-P",
        pidfile.to_str().unwrap(),
        "memory",
        "1M",
    ]);
    // The parent returns at once, leaving a listening server behind.
    assert!(out.status.success());
    let t = std::time::Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().is_empty() {
        assert!(t.elapsed().as_secs() < 10);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut c = Client::connect(UnixStream::connect(&sock).unwrap(), true, true);
    c.write(0, b"bg");
    c.disconnect();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let t = std::time::Instant::now();
    while sock.exists() || pidfile.exists() {
        assert!(
            t.elapsed().as_secs() < 10,
            "socket and pid file not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = std::io::stdout().flush();
}

/// `--short-options` and `--long-options` print Debian's nbdkit's lists,
/// in its order (ours may add options after them), one a line.
#[test]
fn short_and_long_options_list_nbdkits() {
    for flag in ["--short-options", "--long-options"] {
        let ours = nbdkit(&[flag]);
        assert!(ours.status.success(), "{flag}: {ours:?}");
        let theirs = Command::new("/usr/bin/nbdkit").arg(flag).output().unwrap();
        assert!(theirs.status.success(), "Debian's {flag}: {theirs:?}");
        let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
        let theirs = String::from_utf8_lossy(&theirs.stdout).into_owned();
        assert!(theirs.lines().count() > 10, "{flag}: {theirs}");
        assert!(
            ours.starts_with(&theirs),
            "{flag}: ours\n{ours}\nDebian's\n{theirs}"
        );
    }
}
