//! The rate, pause, retry-request, scan and ddrescue filters through the
//! server binary and real clients, each compared with Debian's nbdkit.
//! Times are checked only as generous lower bounds (a limited transfer
//! takes at least so long) or as orderings, never as tight thresholds.

mod common;
mod stack;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use stack::*;

/// Runs a libnbd Python script (nbdsh's `h` is the connected handle)
/// against `bin ARGS`; `before` is shell run first, in the same command.
fn nbdsh_with(bin: &str, args: &[&str], before: &str, script: &str) -> Output {
    require("nbdinfo", "libnbd-bin");
    assert!(
        !script.contains('\''),
        "script must not contain single quotes"
    );
    let cmd = format!("{before} /usr/bin/python3 -m nbd -u \"$uri\" -c '{script}'");
    run_with(bin, args, &cmd)
}

/// The script's standard output from both servers, which must succeed
/// and agree; returned once.
fn nbdsh_both(args: &[&str], script: &str) -> String {
    let mut outs = Vec::new();
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = nbdsh_with(bin, args, "", script);
        assert!(o.status.success(), "{bin} {args:?}: {o:?}");
        outs.push(String::from_utf8(o.stdout).unwrap());
    }
    assert_eq!(outs[0], outs[1], "ours vs Debian's, {args:?}");
    outs.pop().unwrap()
}

/// Debian's nbdkit refuses ARGS as well (exit status 1).
fn debian_refuses(args: &[&str]) {
    let o = Command::new(DEBIAN_NBDKIT)
        .args(["-U", "-", "--run", "true"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "Debian accepted {args:?}: {o:?}");
}

/// Both refuse ARGS; ours with one error line containing `needle`.
fn both_refuse(args: &[&str], needle: &str) {
    bad(args, needle);
    debian_refuses(args);
}

/// A server (ours or Debian's) in the foreground on a Unix socket in
/// `dir`; killed on drop.
struct Srv {
    child: Child,
    sock: PathBuf,
}

impl Srv {
    fn start(bin: &str, dir: &Path, args: &[&str]) -> Srv {
        let sock = dir.join("nbd.sock");
        let child = Command::new(bin)
            .arg("-f")
            .arg("-U")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("start nbdkit");
        let srv = Srv { child, sock };
        assert!(eventually(|| srv.sock.exists()));
        srv
    }

    fn client(&self) -> Client {
        // The socket file may appear a moment before it accepts.
        let t = Instant::now();
        let s = loop {
            match UnixStream::connect(&self.sock) {
                Ok(s) => break s,
                Err(e) if t.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("connect {}: {e}", self.sock.display()),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client::connect(s, true, false)
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- ddrescue ----

const MAPFILE: &str = "# Mapfile. Created by GNU ddrescue version 1.27\n\
# Command line: ddrescue /dev/sdx disk.img disk.map\n\
# current_pos  current_status  current_pass\n\
0x00009000     +               1\n\
#      pos        size  status\n\
0x00000000  0x00008000  +\n\
0x00008000  0x00000200  -\n\
0x00008200  0x00000e00  *\n\
0x00009000  0x00007000  +\n";

#[test]
fn ddrescue_serves_only_rescued_blocks() {
    let dir = TempDir::new("ddrescue");
    let img = dir.path().join("disk.img");
    std::fs::write(&img, pattern(65536, 3)).unwrap();
    let map = dir.path().join("disk.map");
    std::fs::write(&map, MAPFILE).unwrap();
    let file = format!("file={}", img.display());
    let mapfile = format!("ddrescue-mapfile={}", map.display());
    let args = ["--filter=ddrescue", "file", &file, &mapfile];
    let script = r#"import errno
for off, n in [(0, 4096), (0x7e00, 0x400), (0x8000, 512), (0x8800, 512), (0x9000, 0x7000), (0xf000, 0x1000)]:
    try:
        b = h.pread(n, off)
        print("ok", hex(off), n, sum(b))
    except nbd.Error as e:
        print("err", hex(off), n, errno.errorcode.get(e.errnum))
print("read-only", h.is_read_only(), "cache", h.can_cache())
"#;
    let out = nbdsh_both(&args, script);
    let img_bytes = pattern(65536, 3);
    let sum = |o: usize, n: usize| img_bytes[o..o + n].iter().map(|&b| b as u64).sum::<u64>();
    let want = format!(
        "ok 0x0 4096 {}\nerr 0x7e00 1024 EIO\nerr 0x8000 512 EIO\nerr 0x8800 512 EIO\n\
ok 0x9000 28672 {}\nok 0xf000 4096 {}\nread-only True cache False\n",
        sum(0, 4096),
        sum(0x9000, 0x7000),
        sum(0xf000, 0x1000)
    );
    assert_eq!(out, want);
}

#[test]
fn ddrescue_bad_mapfiles() {
    let dir = TempDir::new("ddrescue-bad");
    let missing = format!("ddrescue-mapfile={}/nosuch.map", dir.path().display());
    both_refuse(
        &["--filter=ddrescue", "memory", "1M", &missing],
        "nosuch.map",
    );
    let neg = dir.path().join("neg.map");
    std::fs::write(&neg, "0 ?\n-0x200 0x200 +\n").unwrap();
    let neg = format!("ddrescue-mapfile={}", neg.display());
    both_refuse(
        &["--filter=ddrescue", "memory", "1M", &neg],
        "must not be negative",
    );
}

// ---- retry-request ----

/// A read fails while a file exists (the error filter); the file goes
/// away half a second in. With retry-request the read succeeds after a
/// retry a second later, on the same connection.
#[test]
fn retry_request_retries_a_failing_read() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let dir = TempDir::new("retry-request");
        let fail = dir.path().join("fail");
        let error_file = format!("error-pread-file={}", fail.display());
        let mut args = vec![
            "--filter=retry-request",
            "--filter=error",
            "pattern",
            "1M",
            "error-pread-rate=100%",
            &error_file,
            "retry-request-delay=1",
        ];
        let before = format!("touch {f}; (sleep 0.5; rm -f {f}) &", f = fail.display());
        let script = "print(h.pread(8, 8).hex())";
        let t = Instant::now();
        let o = nbdsh_with(bin, &args, &before, script);
        assert!(o.status.success(), "{bin}: {o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "0000000000000008\n");
        assert!(t.elapsed() >= Duration::from_millis(900), "{bin}: no retry");
        // No retries: the read fails.
        args.push("retry-request-retries=0");
        let o = nbdsh_with(bin, &args, &before, script);
        assert!(!o.status.success(), "{bin}: read should fail: {o:?}");
    }
}

#[test]
fn retry_request_bad_values() {
    let f = "--filter=retry-request";
    both_refuse(&[f, "null", "retry-request-delay=0"], "cannot be 0");
    both_refuse(&[f, "null", "retry-request-retries=1001"], "too large");
    both_refuse(
        &[f, "null", "retry-request-retries=-1"],
        "retry-request-retries",
    );
    both_refuse(
        &[f, "null", "retry-request-open=maybe"],
        "retry-request-open",
    );
}

// ---- rate ----

/// Seconds `script` took against `bin ARGS` (the whole run, server
/// start included), which must succeed.
fn timed(bin: &str, args: &[&str], script: &str) -> Duration {
    let t = Instant::now();
    let o = nbdsh_with(bin, args, "", script);
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    t.elapsed()
}

#[test]
fn rate_limits_reads_and_writes() {
    // 512K is 4 Mibit; at 1 Mibit/s with a full 2-second bucket the
    // transfer must take at least about 2 seconds.
    for bin in [BIN, DEBIAN_NBDKIT] {
        for (key, script) in [
            ("rate=1M", "h.pread(512 * 1024, 0)"),
            ("connection-rate=1M", "h.pread(512 * 1024, 0)"),
            ("rate=1M", "h.pwrite(bytearray(512 * 1024), 0)"),
        ] {
            let d = timed(bin, &["--filter=rate", "memory", "1M", key], script);
            assert!(
                d >= Duration::from_millis(1500),
                "{bin} {key} {script}: {d:?}"
            );
            assert!(d < Duration::from_secs(60), "{bin} {key} {script}: {d:?}");
        }
        // The bucket's capacity: with no burst allowed, the whole 4
        // Mibit waits.
        let d = timed(
            bin,
            &["--filter=rate", "memory", "1M", "rate=2M", "burstiness=0.1"],
            "h.pread(512 * 1024, 0)",
        );
        assert!(d >= Duration::from_millis(1500), "{bin} burstiness: {d:?}");
    }
}

#[test]
fn rate_file_replaces_the_rate() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let dir = TempDir::new("rate-file");
        let f = dir.path().join("rate");
        std::fs::write(&f, "1G\n").unwrap();
        let rate_file = format!("rate-file={}", f.display());
        // 2M at 8K bits per second would take half an hour; the file's
        // rate lifts that.
        let args = ["--filter=rate", "memory", "2M", "rate=8K", &rate_file];
        let d = timed(bin, &args, "h.pread(2 * 1024 * 1024, 0)");
        assert!(d < Duration::from_secs(60), "{bin}: {d:?}");
        // A rate file that is not there leaves the rate of rate=.
        std::fs::remove_file(&f).unwrap();
        let args = ["--filter=rate", "memory", "1M", "rate=1M", &rate_file];
        let d = timed(bin, &args, "h.pread(512 * 1024, 0)");
        assert!(d >= Duration::from_millis(1500), "{bin}: {d:?}");
    }
}

#[test]
fn rate_bad_values() {
    let f = "--filter=rate";
    both_refuse(&[f, "null", "rate=0"], "rate cannot be set to 0");
    both_refuse(
        &[f, "null", "connection-rate=0"],
        "connection-rate cannot be set to 0",
    );
    both_refuse(&[f, "null", "rate=1M", "rate=2M"], "rate set twice");
    both_refuse(&[f, "null", "rate=1x"], "rate");
    both_refuse(&[f, "null", "burstiness=soon"], "floating point");
}

// ---- pause ----

fn control(sock: &Path, cmd: u8) -> u8 {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&[cmd]).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    b[0]
}

#[test]
fn pause_holds_requests_until_resumed() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let dir = TempDir::new("pause");
        let ctl = dir.path().join("ctl");
        let ctl_arg = format!("pause-control={}", ctl.display());
        let srv = Srv::start(
            bin,
            dir.path(),
            &["--filter=pause", "pattern", "1M", &ctl_arg],
        );
        assert!(eventually(|| ctl.exists()));
        let mut c = srv.client();
        assert_eq!(c.read(8, 8), vec![0, 0, 0, 0, 0, 0, 0, 8]);
        // Commands on one control connection; whitespace is not answered.
        let mut s = UnixStream::connect(&ctl).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"p\n").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"P", "{bin}");
        // A read sent now waits.
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            let data = c.read(16, 8);
            tx.send(data).unwrap();
            c
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "{bin}: a read ran while paused"
        );
        s.write_all(b"zr").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"XR", "{bin}");
        let data = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(data, vec![0, 0, 0, 0, 0, 0, 0, 16]);
        t.join().unwrap().disconnect();
    }
}

/// The pause is answered only once the request already running is done.
#[test]
fn pause_waits_for_requests_in_flight() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let dir = TempDir::new("pause-flight");
        let ctl = dir.path().join("ctl");
        let ctl_arg = format!("pause-control={}", ctl.display());
        let srv = Srv::start(
            bin,
            dir.path(),
            &[
                "--filter=pause",
                "--filter=delay",
                "memory",
                "1M",
                &ctl_arg,
                "rdelay=1",
            ],
        );
        assert!(eventually(|| ctl.exists()));
        let mut c = srv.client();
        let sent = Instant::now();
        let t = std::thread::spawn(move || c.read(0, 512));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(control(&ctl, b'p'), b'P', "{bin}");
        // The read takes a second (rdelay=1): the answer came after it.
        let paused_after = sent.elapsed();
        assert!(
            paused_after >= Duration::from_millis(900),
            "{bin}: paused {paused_after:?} after the read was sent"
        );
        t.join().unwrap();
        assert_eq!(control(&ctl, b'r'), b'R', "{bin}");
    }
}

/// In the background (no -f), the control socket still answers: its
/// thread starts in the daemon, after the fork.
#[test]
fn pause_in_a_daemon() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let dir = TempDir::new("pause-daemon");
        let ctl = dir.path().join("ctl");
        let pid = dir.path().join("pid");
        let sock = dir.path().join("nbd.sock");
        let o = Command::new(bin)
            .arg("-U")
            .arg(&sock)
            .arg("-P")
            .arg(&pid)
            .args(["--filter=pause", "memory", "1M"])
            .arg(format!("pause-control={}", ctl.display()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{bin}: {o:?}");
        assert!(eventually(|| std::fs::read_to_string(&pid)
            .map(|p| !p.trim().is_empty())
            .unwrap_or(false)));
        let pid: i32 = std::fs::read_to_string(&pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let answers = (control(&ctl, b'p'), control(&ctl, b'r'));
        let _ = Command::new("kill").arg(pid.to_string()).status();
        assert!(
            eventually(|| !pid_alive(pid)),
            "{bin}: daemon still running"
        );
        assert_eq!(answers, (b'P', b'R'), "{bin}");
    }
}

#[test]
fn pause_needs_its_socket() {
    both_refuse(
        &["--filter=pause", "null"],
        "pause-control socket was not set",
    );
    let long = format!("pause-control=/tmp/{}", "x".repeat(200));
    both_refuse(&["--filter=pause", "null", &long], "too long");
}

// ---- scan ----

/// The cache requests the log filter under the scan filter recorded,
/// as "offset count" lines, once the scan has reached the end.
fn scan_log(bin: &str, extra: &[&str], expected: usize) -> Vec<String> {
    let dir = TempDir::new("scan");
    let log = dir.path().join("log");
    let logfile = format!("logfile={}", log.display());
    let mut args = vec!["--filter=scan", "--filter=log", "memory", "4M", &logfile];
    args.extend_from_slice(extra);
    let srv = Srv::start(bin, dir.path(), &args);
    let c = srv.client();
    let caches = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("Cache id=").map(|(_, r)| r.to_string()))
            .filter_map(|r| {
                let f: Vec<&str> = r.split_whitespace().collect();
                (f.len() >= 3 && f[1].starts_with("offset=")).then(|| format!("{} {}", f[1], f[2]))
            })
            .collect()
    };
    assert!(
        eventually(|| caches().len() >= expected),
        "{bin}: {:?}",
        caches()
    );
    c.disconnect();
    caches()
}

#[test]
fn scan_prefetches_the_disk() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let got = scan_log(bin, &["scan-size=1M"], 4);
        assert_eq!(
            got,
            [
                "offset=0x0 count=0x100000",
                "offset=0x100000 count=0x100000",
                "offset=0x200000 count=0x100000",
                "offset=0x300000 count=0x100000",
            ],
            "{bin}"
        );
        // Forever: the scan starts over, until the client goes.
        let got = scan_log(bin, &["scan-size=2M", "scan-forever=true"], 6);
        assert_eq!(
            &got[..4],
            [
                "offset=0x0 count=0x200000",
                "offset=0x200000 count=0x200000",
                "offset=0x0 count=0x200000",
                "offset=0x200000 count=0x200000",
            ],
            "{bin}"
        );
    }
}

#[test]
fn scan_bad_sizes() {
    for v in ["scan-size=256", "scan-size=3K", "scan-size=64M"] {
        both_refuse(&["--filter=scan", "null", v], "scan-size");
    }
    both_refuse(&["--filter=scan", "null", "scan-ahead=maybe"], "scan-ahead");
}
