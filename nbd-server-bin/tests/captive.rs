//! nbdkit-captive(1): --run (its variables, exit status, listening on the
//! default port) and --exit-with-parent.

mod common;
mod psk;
mod stack;

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::*;

/// `$uri`, `$nbd`, `$port`, `$unixsocket`, `$exportname` are shell
/// variables of the command, not exported to its children (as nbdkit);
/// `$tls` is unset (TLS off; see `run_tls_variable`); `$nbd` is the URI
/// (nbdkit >= 1.24).
#[test]
fn run_variables() {
    let out = Command::new(BIN)
        .args([
            "-U",
            "-",
            "-e",
            "it's",
            "--run",
            "echo \"[$uri][$nbd][$exportname][$port][${tls-unset}]\"; \
             sh -c 'echo \"child[$uri$nbd$port$unixsocket$exportname]\"'",
            "memory",
            "1M",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    let mut lines = s.lines();
    let l = lines.next().unwrap();
    assert!(l.starts_with("[nbd+unix:///it%27s?socket="), "{l}");
    let uri = &l[1..l.find(']').unwrap()];
    assert_eq!(l, format!("[{uri}][{uri}][it's][][unset]"));
    assert_eq!(lines.next(), Some("child[]"));
}

/// qemu-style commands get the URI too (nbdkit-captive(1): "$nbd" was
/// guessed from the command only up to nbdkit 1.22).
#[test]
fn run_nbd_is_the_uri_for_qemu_commands() {
    let out = Command::new(BIN)
        .args([
            "-U",
            "-",
            "--run",
            "qemu() { echo \"$nbd\"; }; qemu; echo \"$uri\"",
            "memory",
            "1M",
        ])
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let l: Vec<&str> = s.lines().collect();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0], l[1]);
}

#[test]
fn run_exit_status() {
    let run = |cmd: &str| {
        Command::new(BIN)
            .args(["-U", "-", "--run", cmd, "memory", "1M"])
            .output()
            .unwrap()
    };
    assert_eq!(run("exit 42").status.code(), Some(42));
    assert_eq!(run("true").status.code(), Some(0));
    // Killed by a signal: 128 + N, with nbdkit's message.
    let out = run("kill -9 $$");
    assert_eq!(out.status.code(), Some(137));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nbdkit: external command was killed by signal 9"),
        "{err}"
    );
    let out = run("kill -TERM $$");
    assert_eq!(out.status.code(), Some(128 + 15));
}

/// Without -U or -p, --run listens on the default port (10809) on all
/// addresses.
#[test]
fn run_on_default_port() {
    if std::net::TcpListener::bind(("0.0.0.0", 10809)).is_err() {
        panic!("port 10809 is in use on this machine: stop the NBD server holding it");
    }
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let out = Command::new(BIN)
        .args([
            "--run",
            &format!(
                "echo \"$port $uri $unixsocket\"; {} --size nbd://127.0.0.1:10809",
                nbdinfo.display()
            ),
            "memory",
            "2M",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    assert_eq!(s, "10809 nbd://localhost:10809/ \n2097152\n");
}

/// With `-U -` the server listens only on its private socket.
#[test]
fn run_private_socket_only() {
    let out = Command::new(BIN)
        .args([
            "-U",
            "-",
            "--run",
            "test -S \"$unixsocket\" && test -z \"$port\" && echo ok",
            "memory",
            "1M",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ok\n");
}

/// A shell starts nbdkit --exit-with-parent in the background and is then
/// killed: the server goes too (within 5 s), leaving no socket file.
#[test]
fn exit_with_parent() {
    let dir = TempDir::new("ewp");
    let sock = dir.path().join("sock");
    let mut parent = Command::new("/bin/sh")
        .arg("-c")
        .arg("\"$0\" --exit-with-parent -U \"$1\" memory 1M & echo $!; wait")
        .arg(BIN)
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(parent.stdout.take().unwrap());
        r.read_line(&mut line).unwrap();
    }
    let pid: i32 = line.trim().parse().unwrap();
    assert!(eventually(|| sock.exists()), "server did not start");
    // It serves, in the foreground, as a child of the shell.
    let mut c = Client::connect(UnixStream::connect(&sock).unwrap(), true, false);
    c.write(0, b"x");
    c.disconnect();
    assert!(pid_alive(pid));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(
        eventually(|| !pid_alive(pid)),
        "server {pid} still running after its parent died"
    );
    assert!(eventually(|| !sock.exists()), "socket file left behind");
}

/// `$tls` is unset with --tls=off, "1" with --tls=on and "2" with
/// --tls=require (and their other spellings), and with --tls=require the
/// URI's scheme is nbds, on a Unix socket and on TCP, as Debian's nbdkit
/// does. The URI works with a PSK client.
#[test]
fn run_tls_variable() {
    let dir = TempDir::new("captive-tls");
    let keys = psk::make_keys(dir.path());
    let psk_arg = format!("--tls-psk={}", keys.display());
    let show = "echo \"${tls-unset} ${uri%%:*} ${nbd%%:*}\"";
    for (mode, want) in [
        ("off", "unset nbd+unix nbd+unix"),
        ("on", "1 nbd+unix nbd+unix"),
        ("yes", "1 nbd+unix nbd+unix"),
        ("require", "2 nbds+unix nbds+unix"),
        ("force", "2 nbds+unix nbds+unix"),
    ] {
        let tls = format!("--tls={mode}");
        let args = [tls.as_str(), psk_arg.as_str(), "memory", "1M"];
        for bin in [BIN, stack::DEBIAN_NBDKIT] {
            let out = stack::run_with(bin, &args, show);
            assert!(out.status.success(), "{bin} {mode}: {out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{want}\n"),
                "{bin} {mode}"
            );
        }
    }
    let (port, out) = on_free_port(|port| {
        Command::new(BIN)
            .args(["-i", "127.0.0.1", "-p", port, "--tls=require", &psk_arg])
            .args(["--run", "echo \"$tls $uri\"", "memory", "1M"])
            .output()
            .unwrap()
    });
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("2 nbds://127.0.0.1:{port}/\n")
    );
    // The URI, with the user and key file added, connects over TLS.
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let script = format!(
        "u=$(echo \"$uri\" | sed 's|://|://{}@|'); {} --size \"$u&tls-psk-file={}\"",
        psk::USER,
        nbdinfo.display(),
        keys.display()
    );
    let out = stack::run_with(BIN, &["--tls=require", &psk_arg, "memory", "1M"], &script);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "1048576\n");
}
