//! The synchronous wait's short spin (src/spin.rs), seen by strace(1): a
//! run of synchronous reads against Debian's nbdkit polls the socket with
//! a zero timeout before it blocks (given a spare core), and with
//! LIBNBD_SPIN_US=0, or on a machine of one core, it never does; nor does
//! the handshake, or the wait for the server to close after
//! NBD_CMD_DISC.
//!
//! The test runs itself again under strace: with NBD_SYNC_SPIN_SOCK set,
//! the test body only connects to that socket, makes NBD_SYNC_SPIN_READS
//! reads and disconnects. The limit is read
//! once per process, so each setting needs its own child.

mod common;

use common::*;
use nbd::*;
use std::path::Path;
use std::process::Command;

const CHILD_ENV: &str = "NBD_SYNC_SPIN_SOCK";
const READS_ENV: &str = "NBD_SYNC_SPIN_READS";
const NAME: &str = "synchronous_waits_spin_unless_turned_off";

fn reads(sock: &str, n: u64) {
    let path = cstring(sock);
    let mut buf = vec![0u8; 4096];
    unsafe {
        let h = nbd_create();
        assert!(!h.is_null());
        assert_eq!(nbd_connect_unix(h, path.as_ptr()), 0, "{}", last_error());
        for i in 0..n {
            let r = nbd_pread(h, buf.as_mut_ptr().cast(), buf.len(), i * 4096, 0);
            assert_eq!(r, 0, "{}", last_error());
        }
        assert_eq!(nbd_shutdown(h, 0), 0, "{}", last_error());
        nbd_close(h);
    }
}

/// The poll(2) calls of one child run, by timeout: (zero, blocking).
fn polls(sock: &Path, dir: &Path, spin_us: Option<&str>, reads: u64) -> (usize, usize) {
    let trace = dir.join(format!("trace-{}-{reads}", spin_us.unwrap_or("default")));
    let mut cmd = Command::new("/usr/bin/strace");
    cmd.args(["-f", "-e", "trace=poll", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--test-threads=1"])
        .env(CHILD_ENV, sock)
        .env(READS_ENV, reads.to_string())
        .env_remove("LIBNBD_SPIN_US");
    if let Some(v) = spin_us {
        cmd.env("LIBNBD_SPIN_US", v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    // poll([{fd=3, events=POLLIN}, {fd=-1, events=POLLIN}], 2, 0) = 0 (Timeout)
    let zero = text.lines().filter(|l| l.contains("], 2, 0)")).count();
    let blocking = text.lines().filter(|l| l.contains("], 2, -1)")).count();
    (zero, blocking)
}

#[test]
fn synchronous_waits_spin_unless_turned_off() {
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        let n = std::env::var(READS_ENV).unwrap().parse().unwrap();
        return reads(&sock, n);
    }
    if !have_nbdkit() || !Path::new("/usr/bin/strace").exists() {
        eprintln!("skipped: needs {NBDKIT} and /usr/bin/strace");
        return;
    }
    let dir = std::env::temp_dir().join(format!("nbd-capi-sync-spin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let mut server = nbdkit_memory_on(&sock);
    let spare_core = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let default = polls(&sock, &dir, None, 50);
    let off = polls(&sock, &dir, Some("0"), 50);
    let no_reads = polls(&sock, &dir, None, 0);
    eprintln!(
        "poll(2) calls (zero timeout, blocking): default {default:?}, \
         LIBNBD_SPIN_US=0 {off:?}, no reads {no_reads:?}"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);

    // Each read waits for its reply at least once (poll sees a reply
    // already there without blocking, but under strace the server is
    // never that fast every time).
    assert!(default.0 + default.1 >= 50, "polls {default:?}");
    if spare_core {
        // The first wait of a handle may always spin, and a spin polls at
        // least once with a zero timeout.
        assert!(default.0 > 0, "no zero-timeout poll: {default:?}");
    } else {
        assert_eq!(default.0, 0, "spun on one core: {default:?}");
    }
    assert_eq!(off.0, 0, "spun with LIBNBD_SPIN_US=0: {off:?}");
    assert!(off.1 > 0, "polls {off:?}");
    // Connecting and disconnecting alone: waits, but no spin.
    assert_eq!(no_reads.0, 0, "spun outside replies: {no_reads:?}");
    assert!(no_reads.1 > 0, "polls {no_reads:?}");
}
