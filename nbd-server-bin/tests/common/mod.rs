//! A raw NBD test client over nbd-core's wire encoders, and a helper that
//! runs our `nbdkit` binary on a Unix socket in a private directory.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nbd_core::wire::codec::{PutBe, Reader};
use nbd_core::wire::consts::{chunk, client_flags, cmd, opt, rep, IHAVEOPT, NBDMAGIC};
use nbd_core::wire::option::{
    encode_option, GoRequest, InfoReply, MetaContextRequest, OptionReplyHeader,
};
use nbd_core::wire::reply::{parse_block_status, parse_error_chunk, parse_reply_start, ReplyStart};
use nbd_core::wire::request::RequestHeader;

pub const BIN: &str = env!("CARGO_BIN_EXE_nbdkit");

/// A fresh private directory under the target dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let base = std::env::temp_dir();
        let p = base.join(format!("nbd-rs-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Our server in the foreground on a Unix socket; killed on drop.
pub struct Server {
    child: Child,
    pub sock: PathBuf,
    _dir: TempDir,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_bin(Path::new(BIN), args)
    }

    /// As `start`, for another nbdkit binary (Debian's, to compare).
    pub fn start_bin(bin: &Path, args: &[&str]) -> Server {
        let dir = TempDir::new("srv");
        let sock = dir.path().join("sock");
        let child = Command::new(bin)
            .arg("-f")
            .arg("-U")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("start nbdkit");
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Server {
            child,
            sock,
            _dir: dir,
        }
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.sock.display())
    }

    pub fn raw(&self) -> UnixStream {
        // The socket file appears at bind(), a moment before listen():
        // a connection in between is refused.
        let t = Instant::now();
        let s = loop {
            match UnixStream::connect(&self.sock) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && t.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("connect {}: {e}", self.sock.display()),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// A full client, to check the server still works.
    pub fn client(&self) -> Client {
        Client::connect(self.raw(), true, true)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn still_alive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "server exited");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_exact(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).expect("read from server");
    v
}

/// Whether the server has closed the connection (reads EOF or reset).
pub fn is_closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Reads the greeting and sends client flags.
pub fn greet(s: &mut UnixStream, flags: u32) {
    let g = read_exact(s, 18);
    assert_eq!(&g[..8], &NBDMAGIC.to_be_bytes());
    assert_eq!(&g[8..16], &IHAVEOPT.to_be_bytes());
    s.write_all(&flags.to_be_bytes()).unwrap();
}

pub fn send_option(s: &mut UnixStream, option: u32, payload: &[u8]) {
    let mut o = Vec::new();
    encode_option(&mut o, option, payload);
    s.write_all(&o).unwrap();
}

/// Reads one option reply: (option, type, payload).
pub fn option_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let h: [u8; 20] = read_exact(s, 20).try_into().unwrap();
    let h = OptionReplyHeader::decode(&h).unwrap();
    let p = read_exact(s, h.len as usize);
    (h.option, h.reply_type, p)
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub error: u32,
    pub data: Vec<u8>,
    pub extents: Vec<(u32, u32)>,
    pub message: Vec<u8>,
}

pub struct Client {
    pub s: UnixStream,
    pub structured: bool,
    pub size: u64,
    pub flags: u16,
    next: u64,
    pending: HashMap<u64, (u16, u32, u64)>,
}

impl Client {
    /// Handshake with GO on the default export.
    pub fn connect(mut s: UnixStream, structured: bool, meta: bool) -> Client {
        greet(&mut s, client_flags::ALL);
        Client::negotiate(s, structured, meta)
    }

    /// GO with structured replies and base:allocation, on a connection
    /// already greeted (and perhaps with options behind it).
    pub fn connect_after_greeting(s: UnixStream) -> Client {
        Client::negotiate(s, true, true)
    }

    fn negotiate(mut s: UnixStream, structured: bool, meta: bool) -> Client {
        if structured {
            send_option(&mut s, opt::STRUCTURED_REPLY, &[]);
            assert_eq!(option_reply(&mut s).1, rep::ACK);
            if meta {
                let m = MetaContextRequest {
                    export_name: b"",
                    queries: vec![b"base:allocation"],
                }
                .encode();
                send_option(&mut s, opt::SET_META_CONTEXT, &m);
                assert_eq!(option_reply(&mut s).1, rep::META_CONTEXT);
                assert_eq!(option_reply(&mut s).1, rep::ACK);
            }
        }
        let g = GoRequest {
            export_name: b"",
            info_requests: vec![],
        }
        .encode();
        send_option(&mut s, opt::GO, &g);
        let (mut size, mut flags) = (0, 0);
        loop {
            let (_, t, p) = option_reply(&mut s);
            match t {
                rep::INFO => {
                    if let InfoReply::Export { size: sz, flags: f } = InfoReply::decode(&p).unwrap()
                    {
                        size = sz;
                        flags = f;
                    }
                }
                rep::ACK => break,
                t => panic!("GO failed: {t:#x} {}", String::from_utf8_lossy(&p)),
            }
        }
        Client {
            s,
            structured,
            size,
            flags,
            next: 1,
            pending: HashMap::new(),
        }
    }

    pub fn send(&mut self, kind: u16, flags: u16, offset: u64, length: u32, payload: &[u8]) -> u64 {
        let cookie = self.next;
        self.next += 1;
        let h = RequestHeader {
            flags,
            kind,
            cookie,
            offset,
            length: length.into(),
        };
        let mut b = h.encode().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
        self.pending.insert(cookie, (kind, length, offset));
        cookie
    }

    /// Reads the complete reply to some request: (cookie, reply).
    pub fn recv(&mut self) -> (u64, Reply) {
        let head: [u8; 16] = read_exact(&mut self.s, 16).try_into().unwrap();
        match parse_reply_start(&head).unwrap() {
            ReplyStart::Simple { error, cookie } => {
                let (kind, len, _) = self.pending.remove(&cookie).expect("unknown cookie");
                let mut r = Reply {
                    error,
                    ..Reply::default()
                };
                if kind == cmd::READ && error == 0 {
                    r.data = read_exact(&mut self.s, len as usize);
                }
                (cookie, r)
            }
            ReplyStart::Structured { .. } => {
                let mut head = head.to_vec();
                let mut r = Reply::default();
                loop {
                    let mut rd = Reader::new(&head);
                    rd.u32();
                    let flags = rd.u16().unwrap();
                    let kind = rd.u16().unwrap();
                    let cookie = rd.u64().unwrap();
                    let len = u32::from_be_bytes(read_exact(&mut self.s, 4).try_into().unwrap());
                    let p = read_exact(&mut self.s, len as usize);
                    let (_, rlen, roff) = self.pending[&cookie];
                    match kind {
                        chunk::OFFSET_DATA => {
                            let off = u64::from_be_bytes(p[..8].try_into().unwrap());
                            if r.data.is_empty() {
                                r.data = vec![0; rlen as usize];
                            }
                            let s = (off - roff) as usize;
                            r.data[s..s + p.len() - 8].copy_from_slice(&p[8..]);
                        }
                        chunk::BLOCK_STATUS => {
                            let (_, it) = parse_block_status(&p).unwrap();
                            r.extents.extend(it);
                        }
                        chunk::NONE => {}
                        k if chunk::is_error(k) => {
                            let e = parse_error_chunk(k, &p).unwrap();
                            r.error = e.error;
                            r.message = e.message.to_vec();
                        }
                        k => panic!("unexpected chunk {k}"),
                    }
                    if flags & chunk::FLAG_DONE != 0 {
                        self.pending.remove(&cookie);
                        return (cookie, r);
                    }
                    head = read_exact(&mut self.s, 16);
                }
            }
        }
    }

    pub fn cmd(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Reply {
        let c = self.send(kind, flags, offset, length, payload);
        let (rc, r) = self.recv();
        assert_eq!(rc, c);
        r
    }

    pub fn read(&mut self, offset: u64, length: u32) -> Vec<u8> {
        let r = self.cmd(cmd::READ, 0, offset, length, &[]);
        assert_eq!(r.error, 0, "read failed");
        r.data
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let r = self.cmd(cmd::WRITE, 0, offset, data.len() as u32, data);
        assert_eq!(r.error, 0, "write failed");
    }

    pub fn disconnect(mut self) {
        let h = RequestHeader {
            flags: 0,
            kind: cmd::DISC,
            cookie: 0,
            offset: 0,
            length: 0,
        };
        let _ = self.s.write_all(&h.encode());
        assert!(is_closed(&mut self.s));
    }
}

/// Encodes a u32 count + strings, for building odd option payloads.
pub fn be32(v: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(v);
    b
}

/// Fails with the Debian package to install when a peer is missing.
pub fn require(bin: &str, package: &str) -> PathBuf {
    for d in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(d).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{bin} is not installed: install the Debian package {package} (apt-get install {package})"
    );
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(s) => !matches!(
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next()),
            Some(Some('Z')) | Some(Some('X'))
        ),
        Err(_) => false,
    }
}

/// Polls for up to 5 s until `cond` holds; false if it never did. Only an
/// upper bound for "it is gone": nothing asserts how fast.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a server that must bind a TCP port chosen here: `run(port)`. The
/// port is free when chosen but another test may take it before the
/// server binds it; then the server fails with EADDRINUSE, and this tries
/// another port (at most 5).
pub fn on_free_port(
    mut run: impl FnMut(&str) -> std::process::Output,
) -> (String, std::process::Output) {
    for _ in 0..5 {
        let port = free_port().to_string();
        let out = run(&port);
        if !String::from_utf8_lossy(&out.stderr).contains("Address already in use") {
            return (port, out);
        }
    }
    panic!("no free TCP port in 5 tries");
}

/// Sends a request with a bad magic, which the server reports as an error
/// and answers by closing the connection.
pub fn send_bad_request(srv_sock: &Path) {
    let mut c = Client::connect(UnixStream::connect(srv_sock).unwrap(), true, false);
    c.s.write_all(&[0xffu8; 28]).unwrap();
    assert!(is_closed(&mut c.s));
}
