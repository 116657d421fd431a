//! qemu 10 as the client of our servers with extended headers (32-byte
//! requests and replies): proved by our nbdkit's debug log (-v) and by
//! qemu's own trace, where a zero of 6 GiB goes out as one request and
//! block status comes back as 64-bit chunks. Turned off
//! (NBD_NO_EXTENDED_HEADERS=1, or nbdkit's --no-eh), the same commands
//! work over structured replies, in requests of at most 4 GiB.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const GIB: u64 = 1 << 30;

/// Our nbdkit, verbose, on a Unix socket in `dir`, its messages in
/// `dir/log`; `env` is added to its environment.
fn nbdkit(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    let sock = dir.join("sock");
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let child = Command::new(BIN)
        .args(["-f", "-v", "-U"])
        .arg(&sock)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start nbdkit");
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nbdkit did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// qemu-io's commands against `uri`, with the NBD client's trace on:
/// (trace and messages, whether every command succeeded).
fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let qemu_io = require("qemu-io", "qemu-utils");
    let mut c = Command::new(qemu_io);
    c.args(["-f", "raw", "--trace", "nbd_send_request"]);
    c.args(["--trace", "nbd_receive_reply_chunk_header"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(uri).output().expect("run qemu-io");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "qemu-io: {text}");
    assert!(!text.contains("failed"), "qemu-io: {text}");
    text
}

/// The lengths of the write-zeroes requests qemu sent.
fn zero_requests(trace: &str) -> Vec<u64> {
    trace
        .lines()
        .filter(|l| l.contains("nbd_send_request") && l.contains("(write zeroes)"))
        .map(|l| {
            let rest = &l[l.find(".len = ").unwrap() + 7..];
            rest.split(',').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// Writes data at 1 GiB and 7 GiB, zeroes 6 GiB from 0, checks what reads
/// back, and maps the export.
fn exercise(uri: &str) -> String {
    qemu_io(
        uri,
        &[
            "write -P 0x55 1G 64k",
            "write -P 0x66 7G 64k",
            "write -z -n 0 6G",
            "read -P 0 1G 64k",
            "read -P 0x66 7G 64k",
            "read -P 0 6G 1M",
        ],
    )
}

fn qemu_img_map(uri: &str) -> String {
    let qemu_img = require("qemu-img", "qemu-utils");
    let out = Command::new(qemu_img)
        .args(["--trace", "nbd_receive_reply_chunk_header", "map"])
        .args(["--output=json", "-f", "raw", uri])
        .output()
        .expect("run qemu-img");
    assert!(out.status.success(), "{out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn qemu_with_our_nbdkit_over_extended_headers() {
    let dir = TempDir::new("eh");
    let mut srv = nbdkit(dir.path(), &[], &["memory", "8G"]);
    let uri = format!("nbd+unix:///?socket={}", dir.path().join("sock").display());
    let trace = exercise(&uri);
    // One request of 6 GiB: only a 64-bit header can carry it.
    assert_eq!(zero_requests(&trace), vec![6 * GIB], "{trace}");
    // Every reply is a chunk: none of qemu's simple replies.
    assert!(trace.contains("type = 0 (none)"), "{trace}");
    let map = qemu_img_map(&uri);
    assert!(map.contains("(block status (64-bit))"), "{map}");
    // The first 6 GiB and then some are one hole, reported in one extent.
    assert!(
        map.contains("{ \"start\": 0, \"length\": 7516192768, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false"),
        "{map}"
    );
    let _ = srv.kill();
    let _ = srv.wait();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("extended headers true"), "{log}");
    assert!(!log.contains("extended headers false"), "{log}");
}

#[test]
fn qemu_with_our_nbdkit_without_extended_headers() {
    for (env, args) in [
        (
            &[("NBD_NO_EXTENDED_HEADERS", "1")][..],
            &["memory", "8G"][..],
        ),
        (&[][..], &["--no-eh", "memory", "8G"][..]),
    ] {
        let dir = TempDir::new("noeh");
        let mut srv = nbdkit(dir.path(), env, args);
        let uri = format!("nbd+unix:///?socket={}", dir.path().join("sock").display());
        let trace = exercise(&uri);
        let zeroes = zero_requests(&trace);
        assert!(zeroes.len() > 1, "{trace}");
        assert!(zeroes.iter().all(|&n| n < 4 * GIB), "{trace}");
        assert_eq!(zeroes.iter().sum::<u64>(), 6 * GIB, "{trace}");
        let map = qemu_img_map(&uri);
        assert!(!map.contains("64-bit"), "{map}");
        assert!(map.contains("\"start\": 0,"), "{map}");
        let _ = srv.kill();
        let _ = srv.wait();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(
            log.contains("structured replies true extended headers false"),
            "{log}"
        );
    }
}

/// `xnbd-server --target --lport 0 DISK` with `env`; returns the child
/// and its port, from its startup message.
fn xnbd(disk: &Path, env: &[(&str, &str)]) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xnbd-server"))
        .args(["--target", "--lport", "0"])
        .arg(disk)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xnbd-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("xnbd-server said nothing").unwrap();
        if let Some(i) = line.find(" on port ") {
            break line[i + 9..].trim().parse().unwrap();
        }
    };
    // Keep draining its messages so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

#[test]
fn qemu_with_xnbd_server_over_extended_headers_and_without() {
    let dir = TempDir::new("xnbd-eh");
    let disk = dir.path().join("disk");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 * GIB)
        .unwrap();
    for (env, extended) in [
        (&[][..], true),
        (&[("NBD_NO_EXTENDED_HEADERS", "1")][..], false),
    ] {
        let (mut child, port) = xnbd(&disk, env);
        let uri = format!("nbd://127.0.0.1:{port}/");
        let trace = exercise(&uri);
        let zeroes = zero_requests(&trace);
        if extended {
            assert_eq!(zeroes, vec![6 * GIB], "{trace}");
        } else {
            assert!(
                zeroes.len() > 1 && zeroes.iter().all(|&n| n < 4 * GIB),
                "{trace}"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
