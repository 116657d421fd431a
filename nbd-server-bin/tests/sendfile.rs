//! Reads the file plugin sends with sendfile(2): the bytes a client gets
//! are the file's, whatever the size and offset (around the threshold,
//! SENDFILE_MIN, unaligned, up to the end of the file), in simple,
//! structured and extended-header replies, with 64 requests in flight and
//! over several connections at once. strace shows the path is taken for
//! large reads only, and not with NBDKIT_NO_SENDFILE=1 or over TLS; a file
//! truncated under a connection fails reads as Debian's nbdkit fails them.

mod common;
mod psk;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nbd_core::wire::codec::Reader;
use nbd_core::wire::consts::{chunk, client_flags, cmd, opt, rep};
use nbd_core::wire::option::{GoRequest, InfoReply};
use nbd_core::wire::reply::{parse_extended_reply_header, parse_reply_start, ReplyStart};
use nbd_core::wire::request::RequestHeader;
use nbd_server_bin::sendfile::SENDFILE_MIN;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The reply forms a client may negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Simple,
    Structured,
    Extended,
}

/// A client that only reads, in any reply form, with many requests in
/// flight.
struct Reads {
    s: UnixStream,
    form: Form,
    size: u64,
    next: u64,
    /// Cookie → (offset, length) of each request not yet answered.
    pending: HashMap<u64, (u64, usize)>,
}

impl Reads {
    fn connect(sock: &Path, form: Form) -> Reads {
        // The socket file appears at bind(), a moment before listen(): a
        // connection in between is refused, so try again for a while.
        let t = std::time::Instant::now();
        let mut s = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && t.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("connect: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        greet(&mut s, client_flags::ALL);
        let option = match form {
            Form::Simple => None,
            Form::Structured => Some(opt::STRUCTURED_REPLY),
            Form::Extended => Some(opt::EXTENDED_HEADERS),
        };
        if let Some(o) = option {
            send_option(&mut s, o, &[]);
            assert_eq!(option_reply(&mut s).1, rep::ACK, "{form:?} refused");
        }
        let g = GoRequest {
            export_name: b"",
            info_requests: vec![],
        }
        .encode();
        send_option(&mut s, opt::GO, &g);
        let mut size = 0;
        loop {
            let (_, t, p) = option_reply(&mut s);
            match t {
                rep::INFO => {
                    if let Ok(InfoReply::Export { size: sz, .. }) = InfoReply::decode(&p) {
                        size = sz;
                    }
                }
                rep::ACK => break,
                t => panic!("GO failed: {t:#x} {}", String::from_utf8_lossy(&p)),
            }
        }
        Reads {
            s,
            form,
            size,
            next: 1,
            pending: HashMap::new(),
        }
    }

    fn send(&mut self, offset: u64, len: usize) {
        let cookie = self.next;
        self.next += 1;
        let h = RequestHeader {
            flags: 0,
            kind: cmd::READ,
            cookie,
            offset,
            length: len as u64,
        };
        let bytes = h.encode_for(self.form == Form::Extended);
        self.s.write_all(bytes.as_bytes()).unwrap();
        self.pending.insert(cookie, (offset, len));
    }

    /// The next reply: (offset, length, the data or the error).
    fn recv(&mut self) -> (u64, usize, Result<Vec<u8>, u32>) {
        let mut data: Option<Vec<u8>> = None;
        let mut error = 0;
        loop {
            // (flags, type, cookie, payload length) of the next chunk, or
            // a whole simple reply.
            let (flags, kind, cookie, len) = match self.form {
                Form::Extended => {
                    let b: [u8; 32] = read_exact(&mut self.s, 32).try_into().unwrap();
                    let h = parse_extended_reply_header(&b).expect("extended reply");
                    (h.flags, h.kind, h.cookie, h.length as usize)
                }
                Form::Simple | Form::Structured => {
                    let b: [u8; 16] = read_exact(&mut self.s, 16).try_into().unwrap();
                    match parse_reply_start(&b).expect("reply") {
                        ReplyStart::Simple { error, cookie } => {
                            assert_eq!(self.form, Form::Simple, "a simple reply");
                            let (offset, len) = self.pending.remove(&cookie).expect("cookie");
                            if error != 0 {
                                return (offset, len, Err(error));
                            }
                            return (offset, len, Ok(read_exact(&mut self.s, len)));
                        }
                        ReplyStart::Structured {
                            flags,
                            kind,
                            cookie,
                        } => {
                            assert_eq!(self.form, Form::Structured, "a structured reply");
                            let l = read_exact(&mut self.s, 4);
                            (
                                flags,
                                kind,
                                cookie,
                                u32::from_be_bytes(l.try_into().unwrap()) as usize,
                            )
                        }
                    }
                }
            };
            let p = read_exact(&mut self.s, len);
            let (offset, length) = self.pending[&cookie];
            let d = data.get_or_insert_with(|| vec![0xee; length]);
            match kind {
                chunk::OFFSET_DATA => {
                    let at = u64::from_be_bytes(p[..8].try_into().unwrap());
                    let start = (at - offset) as usize;
                    d[start..start + p.len() - 8].copy_from_slice(&p[8..]);
                }
                chunk::OFFSET_HOLE => {
                    let mut r = Reader::new(&p);
                    let at = r.u64().unwrap();
                    let n = if self.form == Form::Extended {
                        r.u64().unwrap() as usize
                    } else {
                        r.u32().unwrap() as usize
                    };
                    let start = (at - offset) as usize;
                    d[start..start + n].fill(0);
                }
                chunk::NONE => {}
                k if k & 0x8000 != 0 => {
                    error = u32::from_be_bytes(p[..4].try_into().unwrap());
                }
                k => panic!("unexpected chunk type {k}"),
            }
            if flags & chunk::FLAG_DONE != 0 {
                self.pending.remove(&cookie);
                let res = if error != 0 {
                    Err(error)
                } else {
                    Ok(data.unwrap_or_default())
                };
                return (offset, length, res);
            }
        }
    }

    /// Reads every (offset, length) of `ranges` with up to `depth`
    /// requests in flight, and checks each answer against `file`.
    fn check(&mut self, file: &[u8], ranges: &[(u64, usize)], depth: usize) {
        let mut todo = ranges.iter();
        let mut done = 0;
        loop {
            while self.pending.len() < depth {
                match todo.next() {
                    Some(&(o, l)) => self.send(o, l),
                    None => break,
                }
            }
            if self.pending.is_empty() {
                break;
            }
            let (offset, len, got) = self.recv();
            let got = got.unwrap_or_else(|e| panic!("read {len} at {offset}: error {e}"));
            let want = &file[offset as usize..offset as usize + len];
            assert!(
                got == want,
                "{:?}: read of {len} bytes at {offset} differs from the file",
                self.form
            );
            done += 1;
        }
        assert_eq!(done, ranges.len());
    }
}

/// A disk whose size is not a multiple of any block size.
const DISK: usize = 9 * MIB + 12_345;

fn disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("disk.img");
    let data = pattern(DISK, 11);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// Sizes around the threshold and well above it, at aligned and
/// unaligned offsets, and ending at the end of the file.
fn ranges() -> Vec<(u64, usize)> {
    let sizes = [
        1,
        511,
        4 * KIB,
        SENDFILE_MIN - 1,
        SENDFILE_MIN,
        SENDFILE_MIN + 1,
        32 * KIB,
        64 * KIB + 7,
        MIB,
        MIB + 3,
        4 * MIB,
    ];
    let mut v = Vec::new();
    for &len in &sizes {
        for offset in [0, 1, 4095, 32 * KIB as u64, 1_234_567, (DISK - len) as u64] {
            v.push((offset, len));
        }
    }
    v
}

#[test]
fn reads_of_every_size_and_form_are_the_files_bytes() {
    let dir = TempDir::new("sendfile-forms");
    let (path, data) = disk(dir.path());
    let srv = Server::start(&["file", path.to_str().unwrap()]);
    for form in [Form::Simple, Form::Structured, Form::Extended] {
        let mut c = Reads::connect(&srv.sock, form);
        assert_eq!(c.size, DISK as u64);
        // One at a time, then 64 in flight.
        c.check(&data, &ranges(), 1);
        c.check(&data, &ranges(), 64);
    }
}

/// Four connections (nbdcopy's default), each with 64 reads in flight,
/// sharing the file plugin's one descriptor.
#[test]
fn parallel_connections_with_64_in_flight() {
    let dir = TempDir::new("sendfile-multi");
    let (path, data) = disk(dir.path());
    let srv = Server::start(&["file", path.to_str().unwrap()]);
    let data = std::sync::Arc::new(data);
    let threads: Vec<_> = [
        Form::Simple,
        Form::Structured,
        Form::Extended,
        Form::Structured,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, form)| {
        let sock = srv.sock.clone();
        let data = std::sync::Arc::clone(&data);
        std::thread::spawn(move || {
            let mut c = Reads::connect(&sock, form);
            // A different walk over the disk on each connection.
            let mut ranges = Vec::new();
            let mut x = 0x9e37_79b9u64.wrapping_mul(i as u64 + 1);
            for _ in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = [4 * KIB, 32 * KIB, 100_000, 256 * KIB, MIB][(x % 5) as usize];
                let offset = (x >> 8) % (DISK - len) as u64;
                ranges.push((offset, len));
            }
            c.check(&data, &ranges, 64);
        })
    })
    .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// nbdcopy (Debian's libnbd) copies the disk out through our server with
/// four connections and 64 requests in flight each: the copy is the file.
#[test]
fn nbdcopy_copies_the_file_exactly() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("sendfile-nbdcopy");
    let (path, data) = disk(dir.path());
    let srv = Server::start(&["file", path.to_str().unwrap()]);
    let out = dir.path().join("copy.img");
    for request_size in ["32768", "1048576", "4194304"] {
        let st = Command::new(&nbdcopy)
            .args(["--connections=4", "--requests=64"])
            .arg(format!("--request-size={request_size}"))
            .arg(srv.uri())
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "nbdcopy --request-size={request_size}");
        assert!(std::fs::read(&out).unwrap() == data, "{request_size}");
        std::fs::remove_file(&out).unwrap();
    }
}

/// Over TCP (where the reply header is sent with MSG_MORE, to leave with
/// the data), socket activation (nbdcopy's `[ CMD ]`) and `nbdkit -s` on
/// a socket pair (libnbd's connect_command, from Python): the copy is the
/// file every time.
#[test]
fn copies_over_tcp_socket_activation_and_stdin() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("sendfile-tcp");
    let (path, data) = disk(dir.path());
    let out = dir.path().join("copy.img");
    let (_, o) = on_free_port(|port| {
        Command::new(BIN)
            .args(["-p", port, "-i", "127.0.0.1", "--run"])
            .arg(format!(
                "nbdcopy --request-size=1048576 \"$uri\" {}",
                out.display()
            ))
            .args(["file", path.to_str().unwrap()])
            .output()
            .unwrap()
    });
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&out).unwrap() == data, "over TCP");
    std::fs::remove_file(&out).unwrap();

    let st = Command::new(&nbdcopy)
        .args(["--request-size=65536", "--", "[", BIN, "file"])
        .arg(&path)
        .arg("]")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "nbdcopy [ nbdkit file ]");
    assert!(std::fs::read(&out).unwrap() == data, "socket activation");
    std::fs::remove_file(&out).unwrap();

    let script = format!(
        "import nbd\n\
         h = nbd.NBD()\n\
         h.connect_command([{BIN:?}, '-s', 'file', {:?}])\n\
         size = h.get_size()\n\
         with open({:?}, 'wb') as f:\n\
         \x20   for off in range(0, size, 1 << 20):\n\
         \x20       f.write(h.pread(min(1 << 20, size - off), off))\n",
        path.to_str().unwrap(),
        out.to_str().unwrap()
    );
    let o = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "python3-libnbd: {o:?}");
    assert!(std::fs::read(&out).unwrap() == data, "over nbdkit -s");
}

/// Our nbdkit under `strace -f -e trace=sendfile,preadv2`, on a Unix socket; its
/// pid from -P so that it can be stopped (strace then exits too).
struct Traced {
    strace: Child,
    dir: TempDir,
    sock: PathBuf,
}

impl Traced {
    fn start(env: &[(&str, &str)], args: &[&str]) -> Traced {
        let strace = require("strace", "strace");
        let dir = TempDir::new("sendfile-strace");
        let sock = dir.path().join("sock");
        let child = Command::new(strace)
            .args(["-f", "-qq", "-e", "trace=sendfile,preadv2", "-o"])
            .arg(dir.path().join("trace"))
            .arg(BIN)
            .args(["-f", "-U"])
            .arg(&sock)
            .arg("-P")
            .arg(dir.path().join("pid"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("start strace");
        let t = Instant::now();
        while !dir.path().join("pid").exists() || !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "nbdkit did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The pid file is written whole a moment after it appears.
        std::thread::sleep(Duration::from_millis(50));
        Traced {
            strace: child,
            dir,
            sock,
        }
    }

    /// Stops the server and returns how many sendfile calls it made.
    fn sendfile_calls(self) -> usize {
        let trace = self.stop();
        trace.lines().filter(|l| l.contains("sendfile(")).count()
    }

    /// Stops the server and returns the trace.
    fn stop(mut self) -> String {
        let pid: i32 = std::fs::read_to_string(self.dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: a signal to the server this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        // strace ends with its tracee; the pid is not ours to signal again.
        let _ = self.strace.wait();
        let _ = std::fs::remove_file(self.dir.path().join("pid"));
        std::fs::read_to_string(self.dir.path().join("trace")).unwrap()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Ok(p) = std::fs::read_to_string(self.dir.path().join("pid")) {
            if let Ok(pid) = p.trim().parse::<i32>() {
                // SAFETY: a signal to the server this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

/// Three reads of 1 MiB, one of them unaligned and ending at EOF.
fn large_reads() -> Vec<(u64, usize)> {
    vec![(0, MIB), (777, MIB), ((DISK - MIB) as u64, MIB)]
}

#[test]
fn strace_shows_sendfile_for_large_reads_only() {
    let dir = TempDir::new("sendfile-used");
    let (path, data) = disk(dir.path());
    let file = path.to_str().unwrap();

    // Small reads: copied.
    let srv = Traced::start(&[], &["file", file]);
    let mut c = Reads::connect(&srv.sock, Form::Structured);
    c.check(
        &data,
        &[(0, 4 * KIB), (5, SENDFILE_MIN - 1), (70_000, 512)],
        8,
    );
    drop(c);
    assert_eq!(
        srv.sendfile_calls(),
        0,
        "reads under SENDFILE_MIN are copied"
    );

    // NBDKIT_SENDFILE_MIN moves the threshold (for bench/file-reads.sh).
    let srv = Traced::start(&[("NBDKIT_SENDFILE_MIN", "4096")], &["file", file]);
    let mut c = Reads::connect(&srv.sock, Form::Structured);
    c.check(&data, &[(3, 4 * KIB), (5, 4095)], 8);
    drop(c);
    assert_eq!(srv.sendfile_calls(), 1, "NBDKIT_SENDFILE_MIN=4096");

    // Large reads: sent from the file, at least one call each.
    let srv = Traced::start(&[], &["file", file]);
    let mut c = Reads::connect(&srv.sock, Form::Simple);
    c.check(&data, &large_reads(), 8);
    drop(c);
    let n = srv.sendfile_calls();
    assert!(n >= 3, "{n} sendfile calls for 3 large reads");

    // Through the offset filter, which only moves reads: still the file.
    let srv = Traced::start(&[], &["--filter=offset", "file", file, "offset=4096"]);
    let mut c = Reads::connect(&srv.sock, Form::Extended);
    c.check(&data[4096..], &[(0, MIB), (12_345, 64 * KIB)], 8);
    drop(c);
    let n = srv.sendfile_calls();
    assert!(n >= 2, "{n} sendfile calls through the offset filter");

    // NBDKIT_NO_SENDFILE=1: copied, the same bytes.
    let srv = Traced::start(&[("NBDKIT_NO_SENDFILE", "1")], &["file", file]);
    let mut c = Reads::connect(&srv.sock, Form::Structured);
    c.check(&data, &large_reads(), 8);
    drop(c);
    assert_eq!(srv.sendfile_calls(), 0, "NBDKIT_NO_SENDFILE=1");
}

/// TLS must encrypt every byte in user space: no sendfile, and the data
/// (copied out by nbdcopy over PSK) is still the file's.
#[test]
fn no_sendfile_over_tls() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("sendfile-tls");
    let keys = psk::make_keys(dir.path());
    let (path, data) = disk(dir.path());
    let srv = Traced::start(
        &[],
        &[
            "--tls=require",
            &format!("--tls-psk={}", keys.display()),
            "file",
            path.to_str().unwrap(),
        ],
    );
    let out = dir.path().join("copy.img");
    let uri = psk::tls_uri(srv.sock.to_str().unwrap(), "", &keys);
    let st = Command::new(nbdcopy)
        .args(["--request-size=1048576", &uri])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "nbdcopy over TLS");
    assert!(std::fs::read(&out).unwrap() == data);
    assert_eq!(srv.sendfile_calls(), 0, "sendfile over TLS");
}

/// The file shrinks while a client is connected (the connection's size
/// is still the old one): reads past the new end fail with the same error
/// as in Debian's nbdkit, reads inside it still work, and the connection
/// lives on.
#[test]
fn a_file_truncated_under_the_connection_fails_as_nbdkit_does() {
    let answers = |bin: &Path| {
        let dir = TempDir::new("sendfile-trunc");
        let (path, data) = disk(dir.path());
        let srv = Server::start_bin(bin, &["file", path.to_str().unwrap()]);
        let mut c = Reads::connect(&srv.sock, Form::Structured);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(MIB as u64).unwrap();
        let mut got = Vec::new();
        for (offset, len) in [
            (2 * MIB as u64, 64 * KIB),
            (MIB as u64 - 4096, 64 * KIB),
            (0, 64 * KIB),
            (MIB as u64 - 64 * KIB as u64, 64 * KIB),
        ] {
            c.send(offset, len);
            let (_, _, r) = c.recv();
            got.push(r.map(|d| d == data[offset as usize..offset as usize + len]));
        }
        got
    };
    let ours = answers(Path::new(BIN));
    assert_eq!(ours, answers(Path::new("/usr/bin/nbdkit")));
    assert_eq!(ours, [Err(libc::EIO as u32), Err(5), Ok(true), Ok(true)]);
}

/// Whether `path` is on a file system that keeps files in memory.
fn in_memory(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs fills the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut st) }, 0);
    // ramfs's magic number, which libc does not name.
    matches!(st.f_type, libc::TMPFS_MAGIC | 0x8584_58f6)
}

/// Small reads (below SENDFILE_MIN) of a file on disk are first tried
/// without waiting for the device, preadv2(RWF_NOWAIT), on the thread
/// that read the request; large ones (sendfile) and reads through a
/// filter are not. Reads of pages evicted from the page cache are not
/// answered that way (EAGAIN): a worker reads them, and every byte is
/// the file's.
#[test]
fn small_reads_are_tried_without_waiting() {
    let dir = TempDir::new("sendfile-nowait");
    if in_memory(dir.path()) {
        // tmpfs: read in memory, no preadv2 (the unit tests cover it).
        eprintln!("skipped: the temporary directory is in memory");
        return;
    }
    let (path, data) = disk(dir.path());
    let file = path.to_str().unwrap();
    let tried = |trace: &str| trace.lines().filter(|l| l.contains("preadv2(")).count();

    // Cached (just written), small: tried, each one.
    let srv = Traced::start(&[], &["file", file]);
    let mut c = Reads::connect(&srv.sock, Form::Structured);
    let small = [
        (0, 4 * KIB),
        (5, SENDFILE_MIN - 1),
        (70_000, 512),
        (DISK as u64 - 1, 1),
    ];
    c.check(&data, &small, 1);
    c.check(&data, &large_reads(), 1);
    drop(c);
    let trace = srv.stop();
    let n = tried(&trace);
    if trace.contains("EOPNOTSUPP") {
        // This file system cannot say: tried once, then never.
        assert_eq!(n, 1, "{trace}");
    } else {
        assert_eq!(n, small.len(), "one try per small read:\n{trace}");
        assert!(trace.contains("RWF_NOWAIT"), "{trace}");
    }

    // Through a filter: not tried.
    let srv = Traced::start(&[], &["--filter=offset", "file", file, "offset=4096"]);
    let mut c = Reads::connect(&srv.sock, Form::Extended);
    c.check(&data[4096..], &[(0, 4 * KIB), (12_345, 100)], 8);
    drop(c);
    assert_eq!(tried(&srv.stop()), 0, "through the offset filter");
    if n == 1 {
        return;
    }

    // Evicted: synced, then dropped from the page cache, so the first
    // read of a page is not at hand.
    let f = std::fs::File::open(&path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: advice on our descriptor, plain integers.
    let r = unsafe {
        use std::os::fd::AsRawFd;
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
    };
    assert_eq!(r, 0);
    let srv = Traced::start(&[], &["file", file]);
    let mut c = Reads::connect(&srv.sock, Form::Simple);
    let mut ranges = vec![(3 * MIB as u64 + 5, 4 * KIB)];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = [1, 512, 4 * KIB, 9_000, SENDFILE_MIN - 1][(x % 5) as usize];
        ranges.push(((x >> 8) % (DISK - len) as u64, len));
    }
    c.check(&data, &ranges[..1], 1);
    c.check(&data, &ranges[1..], 64);
    drop(c);
    let trace = srv.stop();
    assert!(
        trace
            .lines()
            .any(|l| l.contains("preadv2") && l.contains("EAGAIN")),
        "the first read of an evicted page is not at hand:\n{}",
        trace.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}
