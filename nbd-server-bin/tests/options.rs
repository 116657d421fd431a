//! Server options of nbdkit(1): --oldstyle, --no-sr, -e with NBD_OPT_LIST,
//! --keep-alive, -D, --dump-config, and bad combinations.

mod common;

use std::process::{Command, Stdio};

use common::*;
use nbd_core::wire::consts::{opt, rep};

fn captive(args: &[&str], cmd: &str) -> String {
    let out = Command::new(BIN)
        .args(["-U", "-"])
        .args(args)
        .args(["--run", cmd, "memory", "1M"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} {cmd}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn oldstyle_with_debian_libnbd() {
    require("nbdinfo", "libnbd-bin");
    let s = captive(&["-o"], "nbdinfo \"$uri\"");
    assert!(s.contains("protocol: oldstyle"), "{s}");
    assert!(s.contains("export-size: 1048576"), "{s}");
    // And data moves both ways.
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("old");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, pattern(1 << 20, 9)).unwrap();
    let s = captive(
        &["--oldstyle"],
        &format!(
            "nbdcopy {a} \"$uri\" && nbdcopy \"$uri\" {b} && cmp {a} {b} && echo same",
            a = a.display(),
            b = b.display()
        ),
    );
    assert_eq!(s.trim(), "same");
}

#[test]
fn no_sr() {
    let s = captive(&["--no-sr"], "nbdinfo --json \"$uri\"");
    assert!(s.contains("\"structured\": false"), "{s}");
    let s = captive(&[], "nbdinfo --json \"$uri\"");
    assert!(s.contains("\"structured\": true"), "{s}");
    let srv = Server::start(&["--no-sr", "memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 3);
    send_option(&mut s, opt::STRUCTURED_REPLY, &[]);
    assert_eq!(option_reply(&mut s).1, rep::ERR_UNSUP);
    // The simple replies still work.
    let mut c = Client::connect(srv.raw(), false, false);
    c.write(0, b"simple");
    assert_eq!(c.read(0, 6), b"simple");
}

#[test]
fn list_answers_the_export_name() {
    let s = captive(&["-e", "mydisk"], "nbdinfo --list --json \"$uri\"");
    assert!(s.contains("\"export-name\": \"mydisk\""), "{s}");
    let srv = Server::start(&["-e", "other", "memory", "1M"]);
    let mut s = srv.raw();
    greet(&mut s, 3);
    send_option(&mut s, opt::LIST, &[]);
    let (_, t, p) = option_reply(&mut s);
    assert_eq!(t, rep::SERVER);
    assert_eq!(&p[4..], b"other");
    assert_eq!(option_reply(&mut s).1, rep::ACK);
}

/// The keepalive timer of the server's end of a connection, from
/// /proc/net/tcp ("tr" is 2 for the keepalive timer).
fn server_side_timer(port: u16) -> Option<String> {
    let t = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let want = format!(":{port:04X}");
    t.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // local address ends with our port, state 01 (established)
        (f[1].ends_with(&want) && f[3] == "01").then(|| f[5].split(':').next().unwrap().to_string())
    })
}

#[test]
fn keep_alive() {
    for (opts, want) in [(&["--keep-alive"][..], "02"), (&[][..], "00")] {
        // The server picks its port (-p 0) and says which once it listens
        // (--print-uri): a port chosen here and bound there could be taken
        // by a test running beside this one in between.
        let mut child = Command::new(BIN)
            .args(["-f", "-i", "127.0.0.1", "-p", "0", "--print-uri"])
            .args(opts)
            .args(["memory", "1M"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut uri = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut uri,
        )
        .unwrap();
        // nbd://127.0.0.1:PORT/
        let port: u16 = uri
            .trim()
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in --print-uri output {uri:?}"));
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut g = [0u8; 18];
        std::io::Read::read_exact(&mut c, &mut g).unwrap();
        assert_eq!(server_side_timer(port).as_deref(), Some(want), "{opts:?}");
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn debug_flags_and_threads_are_accepted() {
    let s = captive(
        &[
            "-D",
            "nbdkit.backend.datapath=0",
            "--debug=memory.unknown=1",
            "-t",
            "2",
        ],
        "nbdinfo --size \"$uri\"",
    );
    assert_eq!(s.trim(), "1048576");
}

#[test]
fn dump_config() {
    let out = Command::new(BIN).arg("--dump-config").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    let kv: std::collections::HashMap<&str, &str> =
        s.lines().map(|l| l.split_once('=').unwrap()).collect();
    assert_eq!(
        std::fs::canonicalize(kv["binary"]).unwrap(),
        std::fs::canonicalize(BIN).unwrap()
    );
    assert_eq!(kv["version"], "1.32.5");
    assert_eq!(kv["version_major"], "1");
    assert_eq!(kv["version_minor"], "32");
    assert_eq!(kv["exit_with_parent"], "yes");
    assert_eq!(kv["name"], "nbdkit");
    assert!(kv.contains_key("bindir") && kv.contains_key("host_cpu"));
    // Where plugins and filters named on the command line are looked for.
    assert!(kv["plugindir"].ends_with("/nbdkit/plugins"), "{s}");
    assert!(kv["filterdir"].ends_with("/nbdkit/filters"), "{s}");
}

fn one_error_line(args: &[&str], needle: &str) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("nbdkit: error: "), "{err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_combinations_and_values() {
    one_error_line(&["-s", "-U", "x", "memory", "1M"], "-s");
    one_error_line(&["--run", "true", "-s", "memory", "1M"], "-s");
    one_error_line(&["--vsock", "-U", "x", "memory", "1M"], "--vsock");
    one_error_line(&["-U", "x", "-p", "1", "memory", "1M"], "-U");
    one_error_line(&["-p", "99999", "memory", "1M"], "99999");
    one_error_line(&["-p", "ten", "memory", "1M"], "ten");
    one_error_line(
        &["--vsock", "-p", "4294967296", "memory", "1M"],
        "4294967296",
    );
    one_error_line(
        &[
            "-f",
            "-i",
            "no.such.host.invalid",
            "-p",
            "0",
            "memory",
            "1M",
        ],
        "no.such.host.invalid",
    );
    one_error_line(
        &["-f", "-i", "192.0.2.1", "-p", "0", "memory", "1M"],
        "bind",
    );
    one_error_line(&["--log=journal", "memory", "1M"], "--log");
    one_error_line(&["--threads=many", "memory", "1M"], "threads");
    one_error_line(&["--mask-handshake=x", "memory", "1M"], "mask-handshake");
    one_error_line(&["--bogus", "memory", "1M"], "--bogus");
    one_error_line(
        &["-U", "-", "--filter=no-such-filter", "memory", "1M"],
        "no-such-filter",
    );
}
