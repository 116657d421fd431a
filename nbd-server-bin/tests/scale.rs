//! 1,000 concurrent clients: each negotiates, then all issue one read at
//! once, and every reply is right. Also reports the server's memory per
//! idle connection (one thread each, on a small stack).

mod common;

use std::os::unix::net::UnixStream;

use common::*;
use nbd_core::wire::consts::cmd;

const CLIENTS: usize = 1000;

/// Lets this process (and the server it starts) open enough descriptors:
/// 1,000 here, 2,000 in the server (each socket is held twice).
fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
        assert!(
            r.rlim_cur >= want,
            "RLIMIT_NOFILE hard limit {} is below the {want} this test needs",
            r.rlim_max
        );
    }
}

/// A field of /proc/PID/status, in its own unit (kB for VmRSS).
fn status_field(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

#[test]
fn thousand_concurrent_connections() {
    raise_nofile(4 * CLIENTS as u64 + 100);
    let srv = Server::start(&["memory", "1M"]);
    let pid = srv.pid();
    let data = pattern(1 << 20, 5);
    let mut first = srv.client();
    for (i, chunk) in data.chunks(64 << 10).enumerate() {
        first.write((i as u64) << 16, chunk);
    }
    // Settle the allocator with a few connections before the baseline.
    let mut clients = vec![first];
    for _ in 0..9 {
        clients.push(Client::connect(srv.raw(), true, false));
    }
    let rss0 = status_field(pid, "VmRSS:");
    let n0 = clients.len();
    for _ in n0..CLIENTS {
        let s = UnixStream::connect(&srv.sock).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        clients.push(Client::connect(s, true, false));
    }
    let rss1 = status_field(pid, "VmRSS:");
    let threads = status_field(pid, "Threads:");
    let per_conn = (rss1.saturating_sub(rss0)) * 1024 / (CLIENTS - n0) as u64;
    eprintln!(
        "scale: {CLIENTS} idle connections: server RSS {rss0} kB -> {rss1} kB, \
         {} bytes ({} KiB) per idle connection, {threads} threads",
        per_conn,
        per_conn / 1024
    );
    assert!(
        threads as usize >= CLIENTS && (threads as usize) < CLIENTS + 16,
        "{threads} threads for {CLIENTS} idle connections"
    );
    // The target, 64 KiB; about 30 KiB is measured (4 KiB of read buffer
    // until a read fills it, the thread's stack, the connection's state),
    // so the bound leaves room for allocator noise.
    assert!(
        per_conn <= 64 * 1024,
        "{per_conn} bytes per idle connection"
    );

    // All send, then all receive.
    let len = 512u32;
    let off = |i: usize| ((i * 4099) % ((1 << 20) - len as usize)) as u64;
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(cmd::READ, 0, off(i), len, &[]);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let (_, r) = c.recv();
        assert_eq!(r.error, 0, "client {i}");
        let o = off(i) as usize;
        assert!(
            r.data == data[o..o + len as usize],
            "client {i}: wrong data"
        );
    }
    for c in clients {
        c.disconnect();
    }
    // Everything closed: the server is still well.
    let mut c = srv.client();
    assert_eq!(c.read(0, 16), &data[..16]);
    c.disconnect();
}
