//! The system calls of one short connection (nbd_create,
//! nbd_connect_unix, nbd_shutdown, nbd_close) against Debian's nbdkit,
//! seen by strace(1): as libnbd, the client makes no eventfd (no other
//! thread can need to wake a poller in the handshake or after
//! NBD_CMD_DISC), sends NBD_CMD_DISC and then shuts down its write side
//! exactly once.
//!
//! The test runs itself again under strace: with NBD_CONNECT_CYCLE_SOCK
//! set, the test body only does the cycle on that socket.

mod common;

use common::*;
use nbd::*;
use std::path::Path;
use std::process::Command;

const CHILD_ENV: &str = "NBD_CONNECT_CYCLE_SOCK";
/// How strace shows the start of an NBD_CMD_DISC request: the request
/// magic 0x25609513, no flags, type 2.
const DISC_REQUEST: &str = r#""%`\225\23\0\0\0\2"#;

fn cycle(sock: &str) {
    let path = cstring(sock);
    unsafe {
        let h = nbd_create();
        assert!(!h.is_null());
        assert_eq!(nbd_connect_unix(h, path.as_ptr()), 0, "{}", last_error());
        assert_eq!(nbd_shutdown(h, 0), 0, "{}", last_error());
        nbd_close(h);
    }
}

#[test]
fn short_connection_makes_no_eventfd_and_shuts_writes_once_after_disc() {
    if let Ok(sock) = std::env::var(CHILD_ENV) {
        return cycle(&sock);
    }
    if !have_nbdkit() || !Path::new("/usr/bin/strace").exists() {
        eprintln!("skipped: needs {NBDKIT} and /usr/bin/strace");
        return;
    }
    let dir =
        std::env::temp_dir().join(format!("nbd-capi-connect-syscalls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let mut server = nbdkit_memory_on(&sock);
    let trace = dir.join("trace");
    let out = Command::new("/usr/bin/strace")
        .args(["-f", "-e", "trace=eventfd2,shutdown,sendmsg,sendto", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "short_connection_makes_no_eventfd_and_shuts_writes_once_after_disc",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &sock)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let text = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines.iter().any(|l| l.contains("eventfd2(")),
        "an eventfd was made:\n{text}"
    );
    let shutdowns: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("shutdown("))
        .collect();
    assert_eq!(shutdowns.len(), 1, "shutdown calls:\n{text}");
    assert!(lines[shutdowns[0]].contains("SHUT_WR"), "{text}");
    let last_send = lines[..shutdowns[0]]
        .iter()
        .rev()
        .find(|l| l.contains("sendmsg(") || l.contains("sendto("))
        .expect("nothing sent before shutdown");
    assert!(
        last_send.contains(DISC_REQUEST),
        "the last send before shutdown is not NBD_CMD_DISC:\n{text}"
    );
}
