//! xnbd-server and xnbd-bgctl with real clients: qemu-img, Debian's
//! nbdinfo and nbdcopy, and our raw client (over TCP, or over a socket
//! pair given to `--inetd`). The remote of a proxy is our nbdkit, read-only.
//! The base and the remote are checked byte for byte after every test.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::io::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nbd_core::wire::consts::cmd;

const XNBD_SERVER: &str = env!("CARGO_BIN_EXE_xnbd-server");
const XNBD_BGCTL: &str = env!("CARGO_BIN_EXE_xnbd-bgctl");
const BS: u64 = 4096;

/// A server process; SIGTERM (a clean shutdown) then SIGKILL on drop.
struct Proc {
    child: Child,
    port: u16,
}

/// Where a server says which port it listens on.
enum PortFrom {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// The port in `nbd://HOST:PORT/` (nbdkit --print-uri) or in xnbd-server's
/// startup message ("... on port PORT").
fn port_in(line: &str) -> Option<u16> {
    if let Some(rest) = line.strip_prefix("nbd://") {
        return rest.split('/').next()?.rsplit(':').next()?.parse().ok();
    }
    let rest = &line[line.find(" on port ")? + 9..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A TCP port on 127.0.0.1 where nothing listens, and nothing will while
/// the returned socket (bound, not listening) is open: connections to it
/// are refused.
fn closed_port() -> (OwnedFd, u16) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: socket, bind and getsockname with a local sockaddr_in of the
    // right size; the descriptor is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let mut len = std::mem::size_of_val(&sa) as libc::socklen_t;
        let sap = &mut sa as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::bind(fd.as_raw_fd(), sap, len), 0);
        assert_eq!(libc::getsockname(fd.as_raw_fd(), sap, &mut len), 0);
        (fd, u16::from_be(sa.sin_port))
    }
}

impl Proc {
    /// Starts `cmd` and waits until it says which port it listens on, in
    /// a line it writes (standard output, standard error or a log file, as
    /// `port_of` says); the servers say so only once they accept
    /// connections. The server picks its port (port 0): a port chosen
    /// here and handed to it could be taken by a test running beside this
    /// one in between.
    fn start(mut cmd: Command, port_of: PortFrom) -> Proc {
        let what = format!("{cmd:?}");
        match &port_of {
            PortFrom::Stdout => cmd.stdout(Stdio::piped()),
            PortFrom::Stderr => cmd.stderr(Stdio::piped()),
            PortFrom::File(_) => &mut cmd,
        };
        let mut child = cmd.stdin(Stdio::null()).spawn().expect("start server");
        let (tx, rx) = std::sync::mpsc::channel();
        // Lines are passed on to our standard error as they come, so the
        // pipe never fills.
        let pipe: Option<Box<dyn std::io::Read + Send>> = match &port_of {
            PortFrom::Stdout => Some(Box::new(child.stdout.take().unwrap())),
            PortFrom::Stderr => Some(Box::new(child.stderr.take().unwrap())),
            PortFrom::File(_) => None,
        };
        if let Some(pipe) = pipe {
            std::thread::spawn(move || {
                use std::io::BufRead;
                for l in std::io::BufReader::new(pipe).lines() {
                    let Ok(l) = l else { break };
                    eprintln!("{l}");
                    if let Some(p) = port_in(&l) {
                        let _ = tx.send(p);
                    }
                }
            });
        }
        let t = Instant::now();
        let port = loop {
            if let PortFrom::File(f) = &port_of {
                let log = std::fs::read_to_string(f).unwrap_or_default();
                if let Some(p) = log.lines().find_map(port_in) {
                    break p;
                }
            }
            if let Ok(p) = rx.recv_timeout(Duration::from_millis(10)) {
                break p;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!("{what} exited: {st}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{what} did not start"
            );
        };
        Proc { child, port }
    }

    /// Our nbdkit `ARGS`, on a port it picks (`-p 0 --print-uri`).
    fn nbdkit(args: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(["-f", "-p", "0", "--print-uri"]).args(args);
        Proc::start(cmd, PortFrom::Stdout)
    }

    /// Our nbdkit serving `img` read-only.
    fn remote(img: &Path) -> Proc {
        Proc::nbdkit(&["-r", "file", img.to_str().unwrap()])
    }

    /// `xnbd-server --lport 0 ARGS`: the port is in its startup message,
    /// which comes once everything is ready.
    fn xnbd(args: &[&str]) -> Proc {
        let mut cmd = Command::new(XNBD_SERVER);
        cmd.args(["--lport", "0"]).args(args);
        let log = args
            .iter()
            .position(|a| *a == "--logpath")
            .map(|i| PathBuf::from(args[i + 1]));
        let p = Proc::start(cmd, log.map_or(PortFrom::Stderr, PortFrom::File));
        if args.contains(&"--proxy") {
            assert!(
                Path::new(args[args.len() - 1]).exists(),
                "no control socket"
            );
        }
        p
    }

    fn uri(&self) -> String {
        format!("nbd://127.0.0.1:{}/", self.port)
    }

    fn client(&self) -> Client {
        tcp_client(self.port)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill on our child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM, and waits for the exit.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let t = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if t.elapsed() > Duration::from_secs(5) {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Our raw client over TCP (its socket type is a Unix stream, but it only
/// reads and writes the descriptor).
fn tcp_client(port: u16) -> Client {
    let t = TcpStream::connect(("127.0.0.1", port)).unwrap();
    t.set_nodelay(true).unwrap();
    // SAFETY: the descriptor moves from the TcpStream.
    let s = unsafe { UnixStream::from_raw_fd(t.into_raw_fd()) };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    Client::connect(s, true, true)
}

/// `xnbd-server --inetd ARGS` with our raw client on a socket pair.
fn inetd(args: &[&str]) -> (Child, Client) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd: OwnedFd = theirs.into();
    let child = Command::new(XNBD_SERVER)
        .arg("--inetd")
        .args(args)
        .stdin(Stdio::from(fd))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    (child, Client::connect(ours, true, true))
}

fn finish(mut child: Child, c: Client) {
    c.disconnect();
    let st = child.wait().unwrap();
    assert!(st.success(), "xnbd-server --inetd: {st}");
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run");
    assert!(o.status.success(), "{cmd:?}: {o:?}");
    o
}

fn bgctl(args: &[&str]) -> Output {
    Command::new(XNBD_BGCTL).args(args).output().unwrap()
}

/// A bad start: exit status 1 and one error line naming `needle`.
fn bad_start(args: &[&str], needle: &str) {
    let o = Command::new(XNBD_SERVER)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

fn write_file(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
}

fn p(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The bitmap words expected when exactly `blocks` are cached.
fn words_for(nblocks: u64, blocks: &[u64]) -> Vec<u64> {
    let mut w = vec![0u64; nblocks.div_ceil(64) as usize];
    for b in blocks {
        w[(b / 64) as usize] |= 1 << (b % 64);
    }
    w
}

fn read_words(p: &Path) -> Vec<u64> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn target_serves_writes_and_snapshots() {
    let qemu_img = require("qemu-img", "qemu-utils");
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let d = TempDir::new("xnbd-target");
    let img = p(&d, "disk.img");
    let data = pattern(4 << 20, 1);
    write_file(&img, &data);
    let srv = Proc::xnbd(&["--target", s(&img)]);
    run(Command::new(&qemu_img)
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&img)
        .arg(srv.uri()));
    let new = pattern(1 << 20, 2);
    write_file(&p(&d, "new.img"), &new);
    run(Command::new(&nbdcopy)
        .arg(p(&d, "new.img"))
        .arg(srv.uri())
        .arg("--flush"));
    let now = std::fs::read(&img).unwrap();
    assert_eq!(&now[..1 << 20], &new[..]);
    assert_eq!(&now[1 << 20..], &data[1 << 20..]);
    // SIGUSR1: a snapshot beside the image.
    srv.signal(libc::SIGUSR1);
    let snap = PathBuf::from(format!("{}.snapshot.00000000", img.display()));
    assert!(eventually(|| std::fs::read(&snap).is_ok_and(|s| s == now)));
    srv.stop();
}

#[test]
fn cow_target_leaves_the_base_alone() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let d = TempDir::new("xnbd-cow");
    let base = p(&d, "base.img");
    let data = pattern((3 << 20) + 1000, 3);
    write_file(&base, &data);
    let a = Proc::xnbd(&["--cow-target", s(&base)]);
    let b = Proc::xnbd(&["--cow-target", s(&base)]);
    for f in [
        "base.img.cow0.layer1",
        "base.img.cow0.bm",
        "base.img.cow1.layer1",
        "base.img.cow1.bm",
    ] {
        assert!(p(&d, f).exists(), "{f}");
    }
    // Unaligned writes through the raw client; then everything through nbdcopy.
    let mut expect = data.clone();
    let mut c = a.client();
    for (off, len) in [(5000u64, 10usize), (BS * 100, 4096), ((3 << 20) + 900, 100)] {
        let w = pattern(len, off as u8);
        c.write(off, &w);
        expect[off as usize..off as usize + len].copy_from_slice(&w);
    }
    c.disconnect();
    let out = p(&d, "out.img");
    run(Command::new(&nbdcopy).arg(a.uri()).arg(&out));
    assert!(std::fs::read(&out).unwrap() == expect);
    run(Command::new(&nbdcopy).arg(b.uri()).arg(&out));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the other instance sees the base"
    );
    a.stop();
    b.stop();
    assert!(std::fs::read(&base).unwrap() == data, "base changed");
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".cow"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn proxy_bitmap_bits_after_partial_reads() {
    let d = TempDir::new("xnbd-bits");
    let remote_img = p(&d, "remote.img");
    let size = BS * 130 + 100; // 131 blocks, the last one short
    let data = pattern(size as usize, 4);
    write_file(&remote_img, &data);
    let remote = Proc::remote(&remote_img);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let args = ["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)];
    let (child, mut c) = inetd(&args);
    assert_eq!(c.size, size);
    let reads = [
        (BS * 5 + 10, 100u32),
        (BS * 63 + 4000, 200),
        (size - 50, 50),
        (0, 1),
    ];
    for (off, len) in reads {
        assert_eq!(
            c.read(off, len),
            &data[off as usize..(off + len as u64) as usize]
        );
    }
    // A partial write fetches its block first, and lands in the cache only.
    c.write(BS * 100 + 7, b"xnbd");
    let r = c.cmd(cmd::FLUSH, 0, 0, 0, &[]);
    assert_eq!(r.error, 0);
    let expect = words_for(131, &[0, 5, 63, 64, 100, 130]);
    assert_eq!(read_words(&bm), expect);
    assert_eq!(std::fs::metadata(&bm).unwrap().len(), 24);
    let got = c.read(BS * 100, 4096);
    let mut want = data[(BS * 100) as usize..(BS * 101) as usize].to_vec();
    want[7..11].copy_from_slice(b"xnbd");
    assert_eq!(got, want);
    finish(child, c);
    assert!(
        std::fs::read(&remote_img).unwrap() == data,
        "remote changed"
    );
    assert!(!ctl.exists(), "control socket left behind");
}

#[test]
fn proxy_restart_resumes_from_its_bitmap() {
    let d = TempDir::new("xnbd-restart");
    let remote_img = p(&d, "remote.img");
    let data = pattern(2 << 20, 5);
    write_file(&remote_img, &data);
    let remote = Proc::remote(&remote_img);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let args = ["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)];
    let srv = Proc::xnbd(&args);
    let mut c = srv.client();
    assert_eq!(
        c.read(BS * 10, 8192),
        &data[(BS * 10) as usize..(BS * 12) as usize]
    );
    c.write(BS * 20, &[7u8; 4096]);
    c.disconnect();
    srv.stop(); // a clean shutdown flushes
    assert_eq!(read_words(&bm)[0], (1 << 10) | (1 << 11) | (1 << 20));
    // Again, with the same files; then the remote goes away.
    let srv = Proc::xnbd(&args);
    let q = run(Command::new(XNBD_BGCTL).args(["--query", s(&ctl)]));
    let q = String::from_utf8(q.stdout).unwrap();
    assert!(q.contains("cached blocks: 3 / 512 (0%)"), "{q}");
    assert!(
        q.contains(&format!("remote: 127.0.0.1 port {rport}")),
        "{q}"
    );
    assert!(q.contains(s(&cache)) && q.contains(s(&bm)), "{q}");
    assert!(q.contains("size: 2097152 bytes"), "{q}");
    remote.stop();
    let mut c = srv.client();
    assert_eq!(
        c.read(BS * 10, 8192),
        &data[(BS * 10) as usize..(BS * 12) as usize]
    );
    assert_eq!(c.read(BS * 20, 4096), vec![7u8; 4096]);
    // An uncached block cannot be had now: an error, and the connection stays.
    let r = c.cmd(cmd::READ, 0, BS * 300, 4096, &[]);
    assert_ne!(r.error, 0);
    assert_eq!(
        c.read(BS * 11, 10),
        &data[(BS * 11) as usize..(BS * 11 + 10) as usize]
    );
    c.disconnect();
    srv.stop();
    assert!(
        std::fs::read(&remote_img).unwrap() == data,
        "remote changed"
    );
}

#[test]
fn cache_all_switch_then_the_remote_dies() {
    let qemu_img = require("qemu-img", "qemu-utils");
    let d = TempDir::new("xnbd-switch");
    let remote_img = p(&d, "remote.img");
    let data = pattern((8 << 20) + 512, 6);
    write_file(&remote_img, &data);
    let remote = Proc::remote(&remote_img);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let srv = Proc::xnbd(&["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)]);
    let mut early = srv.client();
    assert_eq!(early.read(0, 100), &data[..100]);
    // Not everything is here yet: refused.
    let o = bgctl(&["--switch", s(&ctl)]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not cached"),
        "{o:?}"
    );
    let o = run(Command::new(XNBD_BGCTL).args(["--cache-all", "--progress", s(&ctl)]));
    // Not a terminal (a pipe): plain lines, no bar, no carriage returns.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("caching: 2049 / 2049 blocks (100%)\n"),
        "{o:?}"
    );
    assert!(
        !err.contains('\r') && err.lines().all(|l| l.starts_with("caching: ")),
        "{o:?}"
    );
    // On a terminal (script(1) gives it one): the bar, redrawn in place.
    if let Ok(o) = Command::new("script")
        .args([
            "-qec",
            &format!("{XNBD_BGCTL} --progress --cache-all {}", s(&ctl)),
            "/dev/null",
        ])
        .env("COLUMNS", "60")
        .output()
    {
        let tty = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{o:?}");
        assert!(tty.contains("\rcaching [###"), "{tty:?}");
        assert!(tty.contains("] 100% 2049 / 2049 blocks"), "{tty:?}");
    }
    let q = run(Command::new(XNBD_BGCTL).args(["--query", s(&ctl)]));
    assert!(String::from_utf8_lossy(&q.stdout).contains("cached blocks: 2049 / 2049 (100%)"));
    run(Command::new(XNBD_BGCTL).args(["--switch", s(&ctl)]));
    let q = run(Command::new(XNBD_BGCTL).args(["--query", s(&ctl)]));
    assert!(String::from_utf8_lossy(&q.stdout).contains("mode: target"));
    remote.stop();
    // The client from before the switch goes on, and new ones too.
    assert_eq!(early.read(5 << 20, 4096), &data[5 << 20..(5 << 20) + 4096]);
    early.write(1 << 20, &[9u8; 100]);
    let mut expect = data.clone();
    expect[1 << 20..(1 << 20) + 100].fill(9);
    let r = early.cmd(cmd::FLUSH, 0, 0, 0, &[]);
    assert_eq!(r.error, 0);
    write_file(&p(&d, "expect.img"), &expect);
    run(Command::new(&qemu_img)
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(p(&d, "expect.img"))
        .arg(srv.uri()));
    early.disconnect();
    srv.stop();
    assert!(
        std::fs::read(&remote_img).unwrap() == data,
        "remote changed"
    );
}

#[test]
fn sigusr2_switches_a_proxy() {
    let d = TempDir::new("xnbd-usr2");
    let remote_img = p(&d, "remote.img");
    let data = pattern(1 << 20, 7);
    write_file(&remote_img, &data);
    let remote = Proc::remote(&remote_img);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let srv = Proc::xnbd(&["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)]);
    run(Command::new(XNBD_BGCTL).args(["--cache-all", s(&ctl)]));
    srv.signal(libc::SIGUSR2);
    assert!(eventually(|| {
        let q = bgctl(&["--query", s(&ctl)]);
        String::from_utf8_lossy(&q.stdout).contains("mode: target")
    }));
    remote.stop();
    let mut c = srv.client();
    assert_eq!(c.read(0, 1 << 20), data);
    c.disconnect();
}

#[test]
fn readonly_refuses_writes_and_reads_go_on() {
    let d = TempDir::new("xnbd-ro");
    let img = p(&d, "disk.img");
    let data = pattern(1 << 20, 8);
    write_file(&img, &data);
    let (child, mut c) = inetd(&["--target", "--readonly", s(&img)]);
    let r = c.cmd(cmd::WRITE, 0, 0, 4, b"abcd");
    assert_eq!(r.error, 1, "EPERM");
    assert_eq!(c.read(0, 4096), &data[..4096]);
    finish(child, c);
    assert!(std::fs::read(&img).unwrap() == data);
    // Debian's nbdinfo sees a read-only export over TCP.
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let srv = Proc::xnbd(&["--target", "--readonly", s(&img)]);
    let o = run(Command::new(&nbdinfo).arg(srv.uri()));
    let o = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.contains("is_read_only: true") && o.contains("base:allocation"),
        "{o}"
    );
}

#[test]
fn bad_input_is_one_line_and_exit_1() {
    let d = TempDir::new("xnbd-bad");
    let missing = p(&d, "missing.img");
    bad_start(&["--target", "--inetd", s(&missing)], "missing.img");
    bad_start(&["--cow-target", "--inetd", s(&missing)], "missing.img");
    bad_start(&["--target"], "DISK_IMAGE");
    bad_start(&["--bogus"], "--bogus");
    bad_start(&["--proxy", "h", "notaport", "c", "b", "s"], "notaport");

    let remote_img = p(&d, "remote.img");
    let data = pattern(1 << 20, 9);
    write_file(&remote_img, &data);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    // Unreachable remote: nothing created.
    let (_closed, dead) = closed_port();
    let dead = dead.to_string();
    bad_start(
        &[
            "--proxy",
            "--inetd",
            "127.0.0.1",
            &dead,
            s(&cache),
            s(&bm),
            s(&ctl),
        ],
        "remote",
    );
    assert!(!cache.exists() && !bm.exists() && !ctl.exists());

    let remote = Proc::remote(&remote_img);
    let rport = remote.port.to_string();
    let args = [
        "--proxy",
        "--inetd",
        "127.0.0.1",
        &rport,
        s(&cache),
        s(&bm),
        s(&ctl),
    ];
    // A bitmap of the wrong size: refused, nothing overwritten.
    write_file(&bm, &[0xa5; 40]);
    write_file(&cache, &pattern(1 << 20, 10));
    bad_start(&args, "bitmap");
    assert_eq!(std::fs::read(&bm).unwrap(), [0xa5; 40]);
    assert!(std::fs::read(&cache).unwrap() == pattern(1 << 20, 10));
    std::fs::remove_file(&bm).unwrap();
    std::fs::remove_file(&cache).unwrap();

    // The control socket path in use: by a running proxy, or by a file.
    let srv = Proc::xnbd(
        &args[..1]
            .iter()
            .chain(&args[2..])
            .copied()
            .collect::<Vec<_>>(),
    );
    let other = (p(&d, "c2.img"), p(&d, "b2.img"));
    bad_start(
        &[
            "--proxy",
            "--inetd",
            "127.0.0.1",
            &rport,
            s(&other.0),
            s(&other.1),
            s(&ctl),
        ],
        "in use",
    );
    assert!(!other.0.exists() && !other.1.exists());
    let mut c = srv.client();
    assert_eq!(c.read(0, 10), &data[..10]);
    c.disconnect();
    let f = p(&d, "notasocket");
    write_file(&f, b"keep me");
    bad_start(
        &[
            "--proxy",
            "--inetd",
            "127.0.0.1",
            &rport,
            s(&other.0),
            s(&other.1),
            s(&f),
        ],
        "not a socket",
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"keep me");
    // bgctl: no server there.
    let o = bgctl(&["--query", s(&p(&d, "nothing"))]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    srv.stop();
    assert!(std::fs::read(&remote_img).unwrap() == data);
}

#[test]
fn logpath_gets_the_messages() {
    let d = TempDir::new("xnbd-log");
    let img = p(&d, "disk.img");
    write_file(&img, &[0u8; 65536]);
    let log = p(&d, "log");
    let srv = Proc::xnbd(&["--target", "--logpath", s(&log), s(&img)]);
    srv.signal(libc::SIGUSR2); // not a proxy: an error in the log
    assert!(eventually(|| std::fs::read_to_string(&log).is_ok_and(
        |l| l.contains("target mode") && l.contains("not a proxy")
    )));
    srv.stop();
}

/// A live migration: the proxy fetches everything while a client writes,
/// switches, loses its remote, and serves exactly what the client expects.
/// XNBD_MIGRATION_MIB sets the size in MiB (default 1024, a whole 1 GiB
/// migration; smaller for a quick run).
#[test]
fn migration_with_a_writing_client() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let mib: usize = std::env::var("XNBD_MIGRATION_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let d = TempDir::new("xnbd-migrate");
    let remote_img = p(&d, "remote.img");
    let data = pattern(size, 11);
    write_file(&remote_img, &data);
    let remote = Proc::remote(&remote_img);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let srv = Proc::xnbd(&["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)]);

    let mut c = srv.client();
    let ctl2 = ctl.clone();
    let cacher = std::thread::spawn(move || {
        run(Command::new(XNBD_BGCTL).args(["--cache-all", s(&ctl2)]));
    });
    let mut expect = data.clone();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut writes = 0;
    // Write until the fetch is done (at least 200 writes), some unaligned.
    while writes < 200 || !cacher.is_finished() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 20000) as usize;
        let off = (x >> 20) as usize % (size - len);
        let w = vec![(x >> 8) as u8 | 1; len];
        c.write(off as u64, &w);
        expect[off..off + len].copy_from_slice(&w);
        writes += 1;
    }
    cacher.join().unwrap();
    run(Command::new(XNBD_BGCTL).args(["--switch", s(&ctl)]));
    remote.stop();
    c.write(0, b"after the switch");
    expect[..16].copy_from_slice(b"after the switch");
    let out = p(&d, "out.img");
    run(Command::new(&nbdcopy).arg(srv.uri()).arg(&out));
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == expect,
        "migrated disk differs from what the client wrote"
    );
    c.disconnect();
    srv.stop();
    assert!(
        std::fs::read(&remote_img).unwrap() == data,
        "remote changed"
    );
    let _ = std::io::stderr().flush();
}

#[test]
fn daemonize_ipv6_and_several_clients() {
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let d = TempDir::new("xnbd-daemon");
    let img = p(&d, "disk.img");
    let data = pattern(1 << 20, 12);
    write_file(&img, &data);
    let log = p(&d, "log");
    // The parent returns once everything is bound; the daemon picks the
    // port and names it in the log.
    run(Command::new(XNBD_SERVER)
        .args([
            "--target",
            "--daemonize",
            "--lport",
            "0",
            "--logpath",
            s(&log),
            s(&img),
        ])
        .stdin(Stdio::null()));
    let (mut pid, mut port) = (0i32, 0u16);
    assert!(eventually(|| {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        pid = l
            .split("xnbd-server[")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        port = l.lines().find_map(port_in).unwrap_or(0);
        pid > 0 && port > 0
    }));
    // Two clients at once: one writes, the other sees it.
    let mut a = tcp_client(port);
    let mut b = tcp_client(port);
    a.write(4096, b"from a");
    assert_eq!(b.read(4096, 6), b"from a");
    assert_eq!(b.read(0, 100), &data[..100]);
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let o = run(Command::new(&nbdinfo).arg(format!("nbd://[::1]:{port}/")));
        assert!(String::from_utf8_lossy(&o.stdout).contains("export-size: 1048576"));
    }
    a.disconnect();
    b.disconnect();
    // SAFETY: kill on the daemon's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(eventually(|| !pid_alive(pid)));
    assert_eq!(&std::fs::read(&img).unwrap()[4096..4102], b"from a");
}

#[test]
fn reconnect_to_another_remote() {
    let d = TempDir::new("xnbd-reconnect");
    let remote_img = p(&d, "remote.img");
    let data = pattern(1 << 20, 13);
    write_file(&remote_img, &data);
    let remote = Proc::remote(&remote_img);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let srv = Proc::xnbd(&["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)]);
    let mut c = srv.client();
    assert_eq!(c.read(0, 4096), &data[..4096]);
    remote.stop();
    assert_ne!(c.cmd(cmd::READ, 0, 8192, 4096, &[]).error, 0);
    // Nothing listens there: refused, the old remote stays.
    let (_closed, dead) = closed_port();
    let o = bgctl(&["--reconnect", s(&ctl), "127.0.0.1", &dead.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // A disk of another size: refused.
    let small = p(&d, "small.img");
    write_file(&small, &data[..65536]);
    let other = Proc::remote(&small);
    let o = bgctl(&["--reconnect", s(&ctl), "127.0.0.1", &other.port.to_string()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("65536 bytes"),
        "{o:?}"
    );
    let again = Proc::remote(&remote_img);
    let aport = again.port.to_string();
    run(Command::new(XNBD_BGCTL).args(["--reconnect", s(&ctl), "127.0.0.1", &aport]));
    assert_eq!(c.read(8192, 4096), &data[8192..12288]);
    let q = run(Command::new(XNBD_BGCTL).args(["--query", s(&ctl)]));
    assert!(String::from_utf8_lossy(&q.stdout).contains(&format!("port {aport}")));
    c.disconnect();
}

/// The cache as a filter of our nbdkit, over the nbd plugin.
#[test]
fn nbdkit_filter_over_the_nbd_plugin() {
    let d = TempDir::new("xnbd-filter");
    let remote_img = p(&d, "remote.img");
    let data = pattern((1 << 20) + 4096 * 3, 14);
    write_file(&remote_img, &data);
    let remote = Proc::remote(&remote_img);
    let (cache, bm) = (p(&d, "cache.img"), p(&d, "bm.img"));
    let uri = format!("nbd://127.0.0.1:{}/", remote.port);
    let cache_arg = format!("cache={}", cache.display());
    let bm_arg = format!("bitmap={}", bm.display());
    let out = p(&d, "out.img");
    let srv = Server::start(&["--filter=xnbd-cache", "nbd", &uri, &cache_arg, &bm_arg]);
    run(Command::new(require("nbdcopy", "libnbd-bin"))
        .arg(srv.uri())
        .arg(&out));
    assert!(std::fs::read(&out).unwrap() == data);
    // The reader's disconnect flushes: 259 blocks, every one marked.
    let want = [u64::MAX, u64::MAX, u64::MAX, u64::MAX, 0b111];
    assert!(
        eventually(|| read_words(&bm) == want),
        "{:?}",
        read_words(&bm)
    );
    drop(srv);
    assert_eq!(std::fs::read(&cache).unwrap(), data);
    // A bitmap of the wrong size is refused.
    write_file(&bm, &[0; 8]);
    let o = Command::new(BIN)
        .args([
            "-U",
            "-",
            "--filter=xnbd-cache",
            "nbd",
            &uri,
            &cache_arg,
            &bm_arg,
        ])
        .args(["--run", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bitmap"),
        "{o:?}"
    );
    assert_eq!(std::fs::read(&bm).unwrap(), [0; 8]);
    assert!(std::fs::read(&remote_img).unwrap() == data);
}

/// `--oldstyle`: xnbd's own handshake (NBDMAGIC, 0x00420281861253, size,
/// flags, 124 zero bytes, then requests at once). Checked byte for byte,
/// with Debian's nbdinfo and nbdcopy (libnbd), and as the remote of a
/// proxy of ours (our client core), as an xnbd proxy in front of an xnbd
/// target.
#[test]
fn oldstyle_handshake() {
    use std::io::Read;
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let d = TempDir::new("xnbd-oldstyle");
    let img = p(&d, "disk.img");
    let size = (1 << 20) + 4096 * 3;
    let data = pattern(size, 15);
    write_file(&img, &data);
    let srv = Proc::xnbd(&["--target", "--oldstyle", s(&img)]);

    let mut t = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut g = [0u8; 152];
    t.read_exact(&mut g).unwrap();
    assert_eq!(&g[..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], &0x0000_4202_8186_1253_u64.to_be_bytes());
    assert_eq!(
        u64::from_be_bytes(g[16..24].try_into().unwrap()),
        size as u64
    );
    let flags = u32::from_be_bytes(g[24..28].try_into().unwrap());
    assert_eq!(flags & 0b11, 0b01, "HAS_FLAGS, not read-only: {flags:#x}");
    assert_ne!(flags & 4, 0, "SEND_FLUSH: {flags:#x}");
    assert!(g[28..].iter().all(|&b| b == 0), "124 zero bytes");
    // A simple-reply READ straight away.
    let h = nbd_core::wire::request::RequestHeader {
        flags: 0,
        kind: cmd::READ,
        cookie: 77,
        offset: 4096,
        length: 100,
    };
    t.write_all(&h.encode()).unwrap();
    let mut r = [0u8; 116];
    t.read_exact(&mut r).unwrap();
    assert_eq!(&r[..4], &0x6744_6698u32.to_be_bytes());
    assert_eq!(&r[4..8], &[0; 4], "no error");
    assert_eq!(&r[8..16], &77u64.to_be_bytes());
    assert_eq!(&r[16..], &data[4096..4196]);
    drop(t);

    let o = run(Command::new(&nbdinfo).arg(srv.uri()));
    let o = String::from_utf8_lossy(&o.stdout);
    assert!(o.contains("protocol: oldstyle"), "{o}");
    assert!(o.contains(&format!("export-size: {size}")), "{o}");
    let out = p(&d, "out.img");
    run(Command::new(&nbdcopy).arg(srv.uri()).arg(&out));
    assert!(std::fs::read(&out).unwrap() == data);

    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = srv.port.to_string();
    let proxy = Proc::xnbd(&["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)]);
    let mut c = proxy.client();
    assert_eq!(c.size, size as u64);
    assert_eq!(c.read(8192, 5000), &data[8192..13192]);
    c.write(0, b"proxy");
    assert_eq!(c.read(0, 5), b"proxy");
    c.disconnect();
    proxy.stop();
    srv.stop();
    assert!(std::fs::read(&img).unwrap() == data, "the remote changed");
}

/// Starts `xnbd-server ARGS` with `sock` as its descriptor 100 (the test
/// puts `--connected-fd 100` in ARGS).
fn spawn_with_fd(args: &[&str], sock: OwnedFd) -> Child {
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = sock.as_raw_fd();
    let mut cmd = Command::new(XNBD_SERVER);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: only dup2 (async-signal-safe) between fork and exec; the
    // copy at 100 does not have close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 100) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(sock);
    child
}

/// What xnbd-wrapper does before it starts `xnbd-server --connected-fd`:
/// newstyle without options (handshake flags 0), the client's
/// NBD_OPT_EXPORT_NAME, then size, flags HAS_FLAGS|SEND_FLUSH and 124 zero
/// bytes. Returns the export name.
fn wrapper_negotiate(s: &mut TcpStream, size: u64) -> String {
    use std::io::Read;
    let mut g = b"NBDMAGIC".to_vec();
    g.extend_from_slice(&0x4948_4156_454F_5054u64.to_be_bytes());
    g.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&g).unwrap();
    let mut h = [0u8; 4 + 8 + 4 + 4];
    s.read_exact(&mut h).unwrap();
    assert_eq!(&h[4..12], &0x4948_4156_454F_5054u64.to_be_bytes());
    assert_eq!(u32::from_be_bytes(h[12..16].try_into().unwrap()), 1);
    let mut name = vec![0u8; u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize];
    s.read_exact(&mut name).unwrap();
    let mut r = size.to_be_bytes().to_vec();
    r.extend_from_slice(&(1u16 | 4).to_be_bytes());
    r.extend_from_slice(&[0u8; 124]);
    s.write_all(&r).unwrap();
    String::from_utf8(name).unwrap()
}

/// `--connected-fd N`: one client on descriptor N whose handshake was done
/// by someone else. Our raw client talks requests at once over a socket
/// pair; then Debian's nbdcopy and qemu-img connect to a stand-in for
/// xnbd-wrapper, which negotiates and hands each connection to a new
/// `xnbd-server --connected-fd`, as xnbd-wrapper does.
#[test]
fn connected_fd_serves_a_pre_negotiated_client() {
    use std::io::Read;
    let d = TempDir::new("xnbd-connfd");
    let img = p(&d, "disk.img");
    let size = (2 << 20) + 512;
    let data = pattern(size, 16);
    write_file(&img, &data);
    let mut expect = data.clone();

    let (mut ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut child = spawn_with_fd(
        &["--target", "--connected-fd", "100", s(&img)],
        theirs.into(),
    );
    let req = |kind: u16, cookie: u64, offset: u64, length: u32| {
        nbd_core::wire::request::RequestHeader {
            flags: 0,
            kind,
            cookie,
            offset,
            length: length.into(),
        }
        .encode()
    };
    let reply = |s: &mut UnixStream, cookie: u64| {
        let mut r = [0u8; 16];
        s.read_exact(&mut r).unwrap();
        assert_eq!(&r[..4], &0x6744_6698u32.to_be_bytes());
        assert_eq!(&r[8..], &cookie.to_be_bytes());
        u32::from_be_bytes(r[4..8].try_into().unwrap())
    };
    let mut w = req(cmd::WRITE, 1, 1000, 6).to_vec();
    w.extend_from_slice(b"handed");
    ours.write_all(&w).unwrap();
    assert_eq!(reply(&mut ours, 1), 0);
    expect[1000..1006].copy_from_slice(b"handed");
    ours.write_all(&req(cmd::FLUSH, 2, 0, 0)).unwrap();
    assert_eq!(reply(&mut ours, 2), 0);
    ours.write_all(&req(cmd::READ, 3, 990, 30)).unwrap();
    assert_eq!(reply(&mut ours, 3), 0);
    let mut got = [0u8; 30];
    ours.read_exact(&mut got).unwrap();
    assert_eq!(&got[..], &expect[990..1020]);
    // Out of range: an error, and the connection stays.
    ours.write_all(&req(cmd::READ, 4, size as u64, 1)).unwrap();
    assert_ne!(reply(&mut ours, 4), 0);
    ours.write_all(&req(cmd::DISC, 5, 0, 0)).unwrap();
    assert!(is_closed(&mut ours));
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(std::fs::read(&img).unwrap() == expect);

    // A stand-in for xnbd-wrapper, in front of real clients.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let img2 = img.clone();
    let wrapper = std::thread::spawn(move || {
        let mut children = Vec::new();
        for _ in 0..2 {
            let (mut c, _) = l.accept().unwrap();
            assert_eq!(wrapper_negotiate(&mut c, size as u64), "");
            let fd: OwnedFd = c.into();
            children.push(spawn_with_fd(
                &["--target", "--connected-fd", "100", s(&img2)],
                fd,
            ));
        }
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
    });
    let uri = format!("nbd://127.0.0.1:{port}/");
    let new = pattern(1 << 20, 17);
    write_file(&p(&d, "new.img"), &new);
    run(Command::new(require("nbdcopy", "libnbd-bin"))
        .arg(p(&d, "new.img"))
        .arg(&uri));
    expect[..1 << 20].copy_from_slice(&new);
    write_file(&p(&d, "expect.img"), &expect);
    run(Command::new(require("qemu-img", "qemu-utils"))
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(p(&d, "expect.img"))
        .arg(&uri));
    wrapper.join().unwrap();
    assert!(std::fs::read(&img).unwrap() == expect);

    bad_start(
        &["--target", "--connected-fd", "x", s(&img)],
        "not a file descriptor",
    );
    bad_start(
        &["--target", "--connected-fd", "99", s(&img)],
        "--connected-fd 99",
    );
    bad_start(
        &["--target", "--inetd", "--connected-fd", "0", s(&img)],
        "--connected-fd cannot be used",
    );
}

/// `xnbd-bgctl --query`'s counts of what the server holds:
/// (requests, bytes).
fn held(ctl: &Path) -> (u64, u64) {
    let q = bgctl(&["--query", s(ctl)]);
    let q = String::from_utf8_lossy(&q.stdout).into_owned();
    let first = |key: &str| {
        q.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.trim().split([' ', '/']).next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key:?} in {q}"))
    };
    (
        first("pending request count:"),
        first("internal buffer usage:"),
    )
}

/// Sends `reads` (offset, length) at once through `c`, samples `--query`
/// while they are in flight, and returns the largest (requests, bytes)
/// seen. Every reply must be right.
fn sample_while_reading(
    c: &mut Client,
    ctl: &Path,
    reads: &[(u64, u32)],
    data: &[u8],
) -> (u64, u64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, ctl2) = (std::sync::Arc::clone(&stop), ctl.to_path_buf());
    let sampler = std::thread::spawn(move || {
        let mut most = (0, 0);
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let (q, b) = held(&ctl2);
            most = (most.0.max(q), most.1.max(b));
        }
        most
    });
    let mut want = std::collections::HashMap::new();
    for &(off, len) in reads {
        want.insert(c.send(cmd::READ, 0, off, len, &[]), (off, len));
    }
    for _ in reads {
        let (cookie, r) = c.recv();
        let (off, len) = want.remove(&cookie).unwrap();
        assert_eq!(r.error, 0);
        assert!(r.data == data[off as usize..(off + len as u64) as usize]);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap()
}

/// `--max-queue-size` and `--max-buf-size`: bad values are refused; with
/// limits of 1 a client with many requests in flight gets every reply
/// right; and over a slow remote, `xnbd-bgctl --query` never sees the
/// server hold more than the limits allow, while without limits it holds
/// every request the client sent.
#[test]
fn max_queue_and_buffer_sizes() {
    let d = TempDir::new("xnbd-limits");
    let img = p(&d, "disk.img");
    let size = 32 << 20;
    let data = pattern(size, 18);
    write_file(&img, &data);
    bad_start(
        &["--target", "--max-queue-size", "x", s(&img)],
        "--max-queue-size",
    );
    bad_start(
        &["--target", "--max-buf-size", "-5", s(&img)],
        "--max-buf-size",
    );
    bad_start(&["--target", "--max-buf-size"], "--max-buf-size");

    // Limits of 1: one request at a time, the rest wait unread.
    let srv = Proc::xnbd(&[
        "--target",
        "--max-queue-size",
        "1",
        "--max-buf-size",
        "1",
        s(&img),
    ]);
    let mut c = srv.client();
    let mut expect = data.clone();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut cookies = Vec::new();
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 20000) as usize;
        let off = (x >> 24) as usize % (size - len);
        let w = vec![(x >> 8) as u8; len];
        expect[off..off + len].copy_from_slice(&w);
        cookies.push(c.send(cmd::WRITE, 0, off as u64, len as u32, &w));
    }
    for _ in 0..64 {
        let (cookie, r) = c.recv();
        assert_eq!(r.error, 0);
        cookies.retain(|&k| k != cookie);
    }
    assert!(cookies.is_empty());
    let reads: Vec<(u64, u32)> = (0..64).map(|i| (i * 500_000, 8192)).collect();
    let mut want = std::collections::HashMap::new();
    for &(off, len) in &reads {
        want.insert(c.send(cmd::READ, 0, off, len, &[]), (off, len));
    }
    for _ in &reads {
        let (cookie, r) = c.recv();
        let (off, len) = want.remove(&cookie).unwrap();
        assert!(r.error == 0 && r.data == expect[off as usize..(off + len as u64) as usize]);
    }
    c.disconnect();
    srv.stop();
    assert!(std::fs::read(&img).unwrap() == expect);

    // Over a remote whose reads take 0.1 s.
    let remote = Proc::nbdkit(&["-r", "--filter=delay", "file", s(&img), "rdelay=0.1"]);
    let ps = remote.port.to_string();
    let limited = |extra: &[&str], tag: &str| {
        let (cache, bm, ctl) = (
            p(&d, &format!("c{tag}")),
            p(&d, &format!("b{tag}")),
            p(&d, &format!("s{tag}")),
        );
        let mut a = vec!["--proxy"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["127.0.0.1", &ps, s(&cache), s(&bm), s(&ctl)]);
        let a: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        let a: Vec<&str> = a.iter().map(|x| x.as_str()).collect();
        (Proc::xnbd(&a), ctl)
    };
    let small: Vec<(u64, u32)> = (0..12).map(|i| (i << 20, 4096)).collect();
    let big: Vec<(u64, u32)> = (0..8).map(|i| ((16 + i) << 20, 65536)).collect();
    let (srv, ctl) = limited(&["--max-queue-size", "3", "--max-buf-size", "131072"], "1");
    let q = run(Command::new(XNBD_BGCTL).args(["--query", s(&ctl)]));
    let q = String::from_utf8_lossy(&q.stdout);
    assert!(q.contains("pending request count: 0 / 3 (0%)"), "{q}");
    assert!(
        q.contains("internal buffer usage: 0 bytes / 131072 bytes (0%)"),
        "{q}"
    );
    let mut c = srv.client();
    let (most_q, _) = sample_while_reading(&mut c, &ctl, &small, &expect);
    assert!((1..=3).contains(&most_q), "requests held: {most_q}");
    let (most_q, most_b) = sample_while_reading(&mut c, &ctl, &big, &expect);
    assert!((1..=2).contains(&most_q), "requests held: {most_q}");
    assert!(most_b <= 131072, "bytes held: {most_b}");
    c.disconnect();
    srv.stop();
    // Without limits the server takes in all 12 at once.
    let (srv, ctl) = limited(&[], "2");
    let q = run(Command::new(XNBD_BGCTL).args(["--query", s(&ctl)]));
    assert!(String::from_utf8_lossy(&q.stdout).contains("pending request count: 0 (no limit)"));
    let mut c = srv.client();
    let (most_q, _) = sample_while_reading(&mut c, &ctl, &small, &expect);
    assert!(most_q > 3, "requests held without limits: {most_q}");
    c.disconnect();
    srv.stop();
    drop(remote);
}

/// TLS on xnbd-server, as on our nbdkit, with keys made now
/// (scripts/gen-tls-keys.sh: psktool and certtool): Debian's nbdinfo and
/// nbdcopy over PSK under `--tls=require`, where plain clients and a wrong
/// key are refused while the server goes on; X.509 under `--tls=on` with
/// `--tls-verify-peer`; bad TLS options are one line and exit 1.
#[test]
fn tls_psk_and_x509() {
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    require("psktool", "gnutls-bin");
    require("certtool", "gnutls-bin");
    let d = TempDir::new("xnbd-tls");
    let keys = p(&d, "keys");
    run(Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/gen-tls-keys.sh"
        ))
        .arg(&keys));
    let img = p(&d, "disk.img");
    let size = 3 << 20;
    let data = pattern(size, 19);
    write_file(&img, &data);
    let psk = keys.join("keys.psk");
    let srv = Proc::xnbd(&["--target", "--tls=require", "--tls-psk", s(&psk), s(&img)]);
    let psk_uri = |file: &Path| {
        format!(
            "nbds://alice@127.0.0.1:{}/?tls-psk-file={}",
            srv.port,
            file.display()
        )
    };
    let o = run(Command::new(&nbdinfo).arg(psk_uri(&psk)));
    let o = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.contains("TLS") && o.contains(&format!("export-size: {size}")),
        "{o}"
    );
    let new = pattern(1 << 20, 20);
    write_file(&p(&d, "new.img"), &new);
    run(Command::new(&nbdcopy)
        .arg(p(&d, "new.img"))
        .arg(psk_uri(&psk)));
    let mut expect = data.clone();
    expect[..1 << 20].copy_from_slice(&new);
    let out = p(&d, "out.img");
    run(Command::new(&nbdcopy).arg(psk_uri(&psk)).arg(&out));
    assert!(std::fs::read(&out).unwrap() == expect);
    assert!(std::fs::read(&img).unwrap() == expect);
    // Refused: a client without TLS, a wrong key.
    for uri in [srv.uri(), psk_uri(&keys.join("wrong.psk"))] {
        let o = Command::new(&nbdinfo).arg(&uri).output().unwrap();
        assert!(!o.status.success(), "{uri}: {o:?}");
    }
    // The plain client got as far as GO, which was refused.
    let o = Command::new(&nbdinfo).arg(srv.uri()).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("without TLS")
            && String::from_utf8_lossy(&o.stderr).contains("opt_go"),
        "{o:?}"
    );
    run(Command::new(&nbdinfo).arg(psk_uri(&psk)));
    srv.stop();

    // X.509, offered: clients with and without TLS; a client that trusts
    // another CA gives up.
    let pki = keys.join("pki");
    let srv = Proc::xnbd(&[
        "--target",
        "--tls=on",
        "--tls-certificates",
        s(&pki),
        "--tls-verify-peer",
        s(&img),
    ]);
    let x509 = |dir: &Path| {
        format!(
            "nbds://localhost:{}/?tls-certificates={}",
            srv.port,
            dir.display()
        )
    };
    run(Command::new(&nbdcopy).arg(x509(&pki)).arg(&out));
    assert!(std::fs::read(&out).unwrap() == expect);
    let o = run(Command::new(&nbdinfo).arg(srv.uri()));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("export-size: {size}")));
    let rogue = Command::new(&nbdinfo)
        .arg(x509(&keys.join("rogue")))
        .output()
        .unwrap();
    assert!(!rogue.status.success(), "{rogue:?}");
    srv.stop();

    bad_start(&["--target", "--tls=maybe", s(&img)], "--tls");
    bad_start(
        &[
            "--target",
            "--tls=require",
            "--tls-psk",
            s(&p(&d, "none.psk")),
            s(&img),
        ],
        "none.psk",
    );
    bad_start(
        &[
            "--target",
            "--tls=require",
            "--tls-certificates",
            s(d.path()),
            s(&img),
        ],
        "server-cert.pem",
    );
    bad_start(
        &["--target", "--tls=require", "--oldstyle", s(&img)],
        "--oldstyle",
    );
    assert!(std::fs::read(&img).unwrap() == expect);
}

/// `nbdinfo --map URI`, one type per 4096-byte block (0 data, 3 hole and
/// zero, ...).
fn map_blocks(nbdinfo: &Path, uri: &str, size: u64) -> Vec<u32> {
    let o = run(Command::new(nbdinfo).arg("--map").arg(uri));
    let mut v = Vec::new();
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (off, len, t): (u64, u64, u32) = (
            w[0].parse().unwrap(),
            w[1].parse().unwrap(),
            w[2].parse().unwrap(),
        );
        assert_eq!(off, v.len() as u64 * BS, "{l}");
        assert_eq!(len % BS, 0, "{l}");
        v.extend(std::iter::repeat_n(t, (len / BS) as usize));
    }
    assert_eq!(v.len() as u64, size / BS);
    v
}

/// Trim and write-zeroes in proxy and copy-on-write modes, from qemu-io
/// (discard, write -z with and without -u) and our raw client (unaligned):
/// the ranges read as zeros, the remote and the base are never changed,
/// and Debian's nbdinfo --map shows punched blocks as holes, blocks
/// written as zeros as data, and everything else as the remote or base
/// reports it.
#[test]
fn trim_zero_and_block_status_in_proxy_and_cow() {
    use std::os::unix::fs::FileExt;
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let qemu_io = require("qemu-io", "qemu-utils");
    let d = TempDir::new("xnbd-trim");
    let img = p(&d, "remote.img");
    let size: u64 = 3 << 20;
    // Data, a hole, data.
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&pattern(1 << 20, 21), 0).unwrap();
    f.write_all_at(&pattern(1 << 20, 22), 2 << 20).unwrap();
    drop(f);
    let data = std::fs::read(&img).unwrap();
    let remote = Proc::remote(&img);
    let base_map = map_blocks(&nbdinfo, &remote.uri(), size);

    // What the operations below should leave: bytes, and block types.
    let mut expect = data.clone();
    let mut want_map = base_map.clone();
    let mut zero = |off: u64, len: u64, hole_blocks: std::ops::Range<u64>, data_blocks: &[u64]| {
        expect[off as usize..(off + len) as usize].fill(0);
        for b in hole_blocks {
            want_map[b as usize] = 3;
        }
        for &b in data_blocks {
            want_map[b as usize] = 0;
        }
    };
    zero(256 << 10, 256 << 10, 64..128, &[]); // discard: punched
    zero((2 << 20) + 4096, 8192, 513..515, &[]); // write -z -u: punched
    zero(1_310_720, 4096, 0..0, &[320]); // write -z: zeros written
    zero(100, 4900, 0..0, &[0, 1]); // trim within two blocks: written
                                    // write-zeroes over 3 whole blocks and 2 partial ones.
    let wz = (3 << 19) + 10;
    zero(wz, 20000, 385..388, &[384, 388]);

    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let proxy = Proc::xnbd(&["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)]);
    let cow = Proc::xnbd(&["--cow-target", s(&img)]);
    for srv in [&proxy, &cow] {
        // Nothing cached or written yet: the remote's or the base's map.
        assert_eq!(map_blocks(&nbdinfo, &srv.uri(), size), base_map);
        run(Command::new(&qemu_io).args([
            "-f",
            "raw",
            "-c",
            "discard 262144 262144",
            "-c",
            "write -z -u 2101248 8192",
            "-c",
            "write -z 1310720 4096",
            &srv.uri(),
        ]));
        let mut c = srv.client();
        assert_ne!(c.flags & 0x20, 0, "SEND_TRIM");
        assert_eq!(c.cmd(cmd::TRIM, 0, 100, 4900, &[]).error, 0);
        assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, wz, 20000, &[]).error, 0);
        assert_eq!(c.read(0, 8192), &expect[..8192]);
        c.disconnect();
        assert_eq!(
            map_blocks(&nbdinfo, &srv.uri(), size),
            want_map,
            "{}",
            srv.uri()
        );
        let out = p(&d, "out.img");
        run(Command::new(&nbdcopy).arg(srv.uri()).arg(&out));
        assert!(std::fs::read(&out).unwrap() == expect, "{}", srv.uri());
    }
    proxy.stop();
    cow.stop();
    assert!(
        std::fs::read(&img).unwrap() == data,
        "remote or base changed"
    );
}

/// `xnbd-bgctl --cache-all --blocks-per-request N`: the remote (our
/// nbdkit, logging every call) is asked for at most N blocks at a time,
/// and the migrated disk is the remote's; a bad count is one line and
/// exit status 1.
#[test]
fn cache_all_blocks_per_request() {
    let d = TempDir::new("xnbd-bpr");
    let img = p(&d, "remote.img");
    let size = (2 << 20) + 4096 * 5; // 517 blocks
    let data = pattern(size, 23);
    write_file(&img, &data);
    let log = p(&d, "remote.log");
    let logfile = format!("logfile={}", log.display());
    let remote = Proc::nbdkit(&["-r", "--filter=log", "file", s(&img), &logfile]);
    let (cache, bm, ctl) = (p(&d, "cache.img"), p(&d, "bm.img"), p(&d, "ctl"));
    let rport = remote.port.to_string();
    let srv = Proc::xnbd(&["--proxy", "127.0.0.1", &rport, s(&cache), s(&bm), s(&ctl)]);
    for bad in ["0", "x"] {
        let o = bgctl(&["--blocks-per-request", bad, "--cache-all", s(&ctl)]);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    }
    let o = run(Command::new(XNBD_BGCTL).args([
        "--progress",
        "--blocks-per-request",
        "3",
        "--cache-all",
        s(&ctl),
    ]));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("517 / 517 blocks (100%)"),
        "{o:?}"
    );
    let counts: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" Read ") && !l.contains("return"))
        .filter_map(|l| l.split("count=0x").nth(1))
        .filter_map(|c| u64::from_str_radix(c.split_whitespace().next()?, 16).ok())
        .collect();
    assert!(!counts.is_empty());
    assert!(counts.iter().all(|&c| c <= 3 * BS), "{counts:?}");
    // Every byte once, nearly all of it in requests of 3 blocks.
    assert_eq!(counts.iter().sum::<u64>(), size as u64);
    assert!(counts.iter().filter(|&&c| c == 3 * BS).count() >= 170);
    run(Command::new(XNBD_BGCTL).args(["--switch", s(&ctl)]));
    remote.stop();
    let out = p(&d, "out.img");
    run(Command::new(require("nbdcopy", "libnbd-bin"))
        .arg(srv.uri())
        .arg(&out));
    assert!(std::fs::read(&out).unwrap() == data);
}
