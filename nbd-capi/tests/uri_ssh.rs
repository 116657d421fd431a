//! The URI forms of libnbd 1.20–1.24 through nbd_connect_uri: schemes in
//! any case, `nbd-port=`, `tls-username=`, `tls-hostname=`, and
//! `nbd+ssh://` through the local `ssh` command, against Debian's nbdkit.
//!
//! `ssh` is a stand-in put first on PATH: it records its arguments, reads
//! ssh's options up to `--`, knows one host (`nbd-test-host`), and runs the
//! remote command locally through `sh -c`, as sshd runs it through the
//! user's shell; there `nc` is a stand-in too (Python: `nc -U SOCKET` or
//! `nc HOST PORT`, stdin and stdout to the socket).
//!
//! One test function, so that PATH is changed while no other test of this
//! binary runs.

mod common;

use common::*;
use nbd::*;
use std::ffi::CStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSH_STAND_IN: &str = r#"#!/bin/bash
# ssh stand-in: log the arguments, one per line, then act as ssh would.
printf '%s\n' "$@" >>"$SSH_LOG"
printf -- '----\n' >>"$SSH_LOG"
while [[ $# -gt 0 ]]; do
  case $1 in
    --) shift; break ;;
    -C) shift ;;
    -p|-o|-l) shift 2 ;;
    -*) echo "ssh stand-in: unknown option $1" >&2; exit 255 ;;
    *) break ;;
  esac
done
host=$1; shift
if [[ $host != nbd-test-host ]]; then
  echo "ssh: Could not resolve hostname $host" >&2
  exit 255
fi
# The remote side: the command line through a shell, with nc on PATH.
PATH=$REMOTE_BIN:$PATH exec sh -c "$*"
"#;

const NC_STAND_IN: &str = r#"#!/usr/bin/python3
# nc stand-in: nc -U SOCKET, or nc HOST PORT; stdin/stdout <-> the socket.
import os, socket, sys, threading
a = sys.argv[1:]
if a[0] == "-U":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(a[1])
else:
    s = socket.create_connection((a[0], int(a[1])))
def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(d)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    os.write(1, d)
"#;

/// A child process killed and reaped when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory made by mkdtemp(3), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let mut template = std::env::temp_dir()
            .join("nbd-ssh-XXXXXX")
            .into_os_string()
            .into_encoded_bytes();
        template.push(0);
        let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
        assert!(!p.is_null(), "mkdtemp failed");
        template.pop();
        TempDir(PathBuf::from(String::from_utf8(template).unwrap()))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// nbdkit on a Unix socket, serving many clients.
fn nbdkit_unix(sock: &Path) -> Reaped {
    let child = Command::new(NBDKIT)
        .args(["-f", "-U"])
        .arg(sock)
        .args(["memory", "1M"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "nbdkit did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Reaped(child)
}

/// nbdkit on a TCP port the kernel picks, handed over by socket
/// activation (no port chosen in advance).
fn nbdkit_tcp() -> (Reaped, u16) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {NBDKIT} -f memory 1M"),
    ]);
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.stdout(Stdio::null()).spawn().unwrap();
    (Reaped(child), port)
}

/// A new handle connected to `uri` (or the error), then a write and a
/// read back through it.
fn connect_and_use(uri: &str) -> Result<Conn, String> {
    let h = unsafe { nbd_create() };
    let c = Conn(h);
    let u = cstring(uri);
    if unsafe { nbd_connect_uri(h, u.as_ptr()) } == -1 {
        return Err(format!("{} (errno {})", last_error(), errno()));
    }
    let data = [0x5au8; 4096];
    let mut back = [0u8; 4096];
    assert_eq!(
        unsafe { nbd_pwrite(h, data.as_ptr().cast(), 4096, 8192, 0) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(
        unsafe { nbd_pread(h, back.as_mut_ptr().cast(), 4096, 8192, 0) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(back, data);
    Ok(c)
}

/// The argument lists ssh was run with since the last call.
fn ssh_runs(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    text.split_terminator("----\n")
        .map(|run| run.lines().map(str::to_string).collect())
        .collect()
}

fn owned(p: *mut std::os::raw::c_char) -> String {
    assert!(!p.is_null(), "{}", last_error());
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { libc::free(p.cast()) };
    s
}

#[test]
fn uri_forms_of_libnbd_1_24() {
    if !have_nbdkit() {
        eprintln!("skipped: {NBDKIT} is not installed");
        return;
    }
    let tmp = TempDir::new();
    let bin = tmp.0.join("bin");
    let remote_bin = tmp.0.join("remote-bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(&remote_bin).unwrap();
    script(&bin.join("ssh"), SSH_STAND_IN);
    script(&remote_bin.join("nc"), NC_STAND_IN);
    let log = tmp.0.join("ssh.log");
    let marker = tmp.0.join("injected");
    // The only test in this binary: nothing else reads the environment.
    std::env::set_var(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    );
    std::env::set_var("SSH_LOG", &log);
    std::env::set_var("REMOTE_BIN", &remote_bin);

    let sock = tmp.0.join("nbd.sock");
    let _unix = nbdkit_unix(&sock);
    let sock_s = sock.to_str().unwrap();
    let (_tcp, port) = nbdkit_tcp();

    // Schemes in any case.
    connect_and_use(&format!("NBD+Unix:///?socket={sock_s}")).unwrap();
    connect_and_use(&format!("NBD://127.0.0.1:{port}/")).unwrap();

    // nbd-port= overrides the authority's port (1, where nothing listens).
    connect_and_use(&format!("nbd://127.0.0.1:1/?nbd-port={port}")).unwrap();

    // nbd+ssh to a Unix socket on the remote side, with the ssh user and
    // port from the authority, and the TLS user and host name from the
    // query.
    let uri = format!(
        "nbd+ssh://alice@nbd-test-host:2222/?socket={sock_s}\
         &tls-username=bob&tls-hostname=cert.example"
    );
    let c = connect_and_use(&uri).unwrap();
    assert_eq!(owned(unsafe { nbd_get_tls_username(c.0) }), "bob");
    assert_eq!(owned(unsafe { nbd_get_tls_hostname(c.0) }), "cert.example");
    drop(c);
    assert_eq!(
        ssh_runs(&log),
        [[
            "-p",
            "2222",
            "-o",
            "User=alice",
            "--",
            "nbd-test-host",
            "nc",
            "-U",
            sock_s
        ]]
    );

    // nbds+ssh needs TLS, so only the scheme in another case; nbd+ssh to
    // a TCP port on the remote side, with compression.
    connect_and_use(&format!(
        "Nbd+SSH://nbd-test-host/?nbd-port={port}&compress=true"
    ))
    .unwrap();
    assert_eq!(
        ssh_runs(&log),
        [[
            "-C",
            "--",
            "nbd-test-host",
            "nc",
            "localhost",
            &port.to_string()
        ]]
    );

    // Host names and parameters that try to smuggle in ssh options or
    // shell commands run nothing.
    let touch = format!("touch%20{}", marker.display());
    for (uri, why) in [
        (
            format!("nbd+ssh://-oProxyCommand={touch}/?socket={sock_s}"),
            "an ssh option as host",
        ),
        (
            format!("nbd+ssh://nbd-test-host/?socket={sock_s}%3B{touch}"),
            "a shell command in socket=",
        ),
        (
            format!("nbd+ssh://nbd-test-host/?nbd-port={port}%60{touch}%60"),
            "a shell command in nbd-port=",
        ),
        (
            "nbd+ssh://a%25C@nbd-test-host/".to_string(),
            "ssh's % tokens in the user",
        ),
    ] {
        let e = connect_and_use(&uri).err();
        assert!(e.is_some(), "{why}: {uri} connected");
        assert!(e.unwrap().ends_with("(errno 22)"), "{why}: {uri}");
        assert_eq!(ssh_runs(&log), Vec::<Vec<String>>::new(), "{why}: ssh ran");
        assert!(!marker.exists(), "{why}: the injected command ran");
    }

    // nbd_set_uri_allow_transports without LIBNBD_ALLOW_TRANSPORT_SSH.
    let h = unsafe { nbd_create() };
    let c = Conn(h);
    assert_eq!(
        unsafe {
            nbd_set_uri_allow_transports(
                h,
                LIBNBD_ALLOW_TRANSPORT_MASK & !LIBNBD_ALLOW_TRANSPORT_SSH,
            )
        },
        0
    );
    let u = cstring(&format!("nbd+ssh://nbd-test-host/?socket={sock_s}"));
    assert_eq!(unsafe { nbd_connect_uri(h, u.as_ptr()) }, -1);
    assert_eq!(errno(), libc::EPERM, "{}", last_error());
    drop(c);
    assert_eq!(ssh_runs(&log), Vec::<Vec<String>>::new());
    assert_eq!(LIBNBD_ALLOW_TRANSPORT_SSH, 0x08);
}
