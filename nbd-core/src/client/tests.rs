//! The client against a scripted server in memory, driven step by step.
//!
//! `FakeServer` speaks just enough of the protocol to serve a RAM disk, and
//! each test bends one of its behaviours to play a hostile or unusual
//! server. `Link` moves bytes between the two, optionally one at a time,
//! so every parse step is also exercised on split input.

use std::collections::VecDeque;
use std::io::IoSlice;

use super::state::RBUF_SIZE;
use super::*;
use crate::errno::host;
use crate::wire::codec::{PutBe, Reader};
use crate::wire::consts::*;
use crate::wire::handshake;
use crate::wire::option::{encode_option_reply, InfoReply, OptionHeader};
use crate::wire::reply;
use crate::wire::request::RequestHeader;

/// A hostile answer to a READ: (cookie, offset, length) to raw bytes.
type EvilReply = fn(u64, u64, u32) -> Vec<u8>;

/// How the fake server misbehaves.
#[derive(Clone, Default)]
struct Script {
    oldstyle: bool,
    no_go: bool,
    no_structured: bool,
    bad_magic: bool,
    size: u64,
    read_only: bool,
    /// Close the connection after sending this many bytes in total.
    hang_up_after: Option<usize>,
    /// Answer requests in reverse order of arrival, in batches.
    reverse_batch: usize,
    /// Send reads as a data chunk and a hole chunk.
    split_reads: bool,
    /// Replace every read reply with this raw chunk (hostile tests).
    evil_read_reply: Option<EvilReply>,
    /// The reply type to NBD_OPT_STARTTLS (None: ERR_UNSUP).
    starttls: Option<u32>,
    /// Answer STARTTLS with this option's code instead (hostile).
    starttls_wrong_option: bool,
    /// Agree to NBD_OPT_EXTENDED_HEADERS and speak them.
    extended: bool,
    /// Replace every block status reply with this raw reply (hostile).
    evil_block_status: Option<EvilReply>,
}

struct FakeServer {
    s: Script,
    disk: Vec<u8>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    handshake_done: bool,
    greeted: bool,
    got_flags: bool,
    structured: bool,
    extended: bool,
    contexts: Vec<Vec<u8>>,
    pending: Vec<Vec<u8>>,
    closed: bool,
    /// "TLS" is up (the fake's handshake is a no-op).
    tls: bool,
    /// Options received, with whether TLS was up.
    options_seen: Vec<(u32, bool)>,
}

impl FakeServer {
    fn new(s: Script) -> Self {
        let size = if s.size == 0 { 1 << 20 } else { s.size };
        FakeServer {
            disk: vec![0; size.min(1 << 24) as usize],
            s,
            inbuf: Vec::new(),
            out: Vec::new(),
            sent: 0,
            handshake_done: false,
            greeted: false,
            got_flags: false,
            structured: false,
            extended: false,
            contexts: Vec::new(),
            pending: Vec::new(),
            closed: false,
            tls: false,
            options_seen: Vec::new(),
        }
    }

    fn size(&self) -> u64 {
        if self.s.size == 0 {
            1 << 20
        } else {
            self.s.size
        }
    }

    fn flags(&self) -> u16 {
        let mut f = tx_flags::HAS_FLAGS
            | tx_flags::SEND_FLUSH
            | tx_flags::SEND_FUA
            | tx_flags::SEND_TRIM
            | tx_flags::SEND_WRITE_ZEROES
            | tx_flags::SEND_DF;
        if self.s.read_only {
            f |= tx_flags::READ_ONLY;
        }
        f
    }

    fn greet(&mut self) {
        self.greeted = true;
        if self.s.oldstyle {
            let g = handshake::encode_oldstyle_greeting(self.size(), u32::from(self.flags()));
            self.out.extend_from_slice(&g);
            self.handshake_done = true;
            self.got_flags = true;
        } else {
            let mut g = handshake::encode_newstyle_greeting(handshake_flags::ALL).to_vec();
            if self.s.bad_magic {
                g[0] ^= 0xff;
            }
            self.out.extend_from_slice(&g);
        }
    }

    /// Consumes what the client sent and queues the answers.
    fn step(&mut self, input: &[u8]) {
        if !self.greeted {
            self.greet();
        }
        self.inbuf.extend_from_slice(input);
        loop {
            if !self.got_flags {
                if self.inbuf.len() < 4 {
                    return;
                }
                self.inbuf.drain(..4);
                self.got_flags = true;
                continue;
            }
            if !self.handshake_done {
                if self.inbuf.len() < 16 {
                    return;
                }
                let h = OptionHeader::decode(self.inbuf[..16].try_into().unwrap()).unwrap();
                let total = 16 + h.len as usize;
                if self.inbuf.len() < total {
                    return;
                }
                let payload: Vec<u8> = self.inbuf[16..total].to_vec();
                self.inbuf.drain(..total);
                self.option(h.option, &payload);
                continue;
            }
            let hlen = if self.extended { 32 } else { 28 };
            if self.inbuf.len() < hlen {
                break;
            }
            let h = if self.extended {
                RequestHeader::decode_extended(self.inbuf[..32].try_into().unwrap()).unwrap()
            } else {
                RequestHeader::decode(self.inbuf[..28].try_into().unwrap()).unwrap()
            };
            let plen = if h.kind == cmd::WRITE {
                h.length as usize
            } else {
                0
            };
            if self.inbuf.len() < hlen + plen {
                break;
            }
            let payload = self.inbuf[hlen..hlen + plen].to_vec();
            self.inbuf.drain(..hlen + plen);
            self.request(h, &payload);
        }
        if self.s.reverse_batch > 0 && self.pending.len() >= self.s.reverse_batch {
            while let Some(r) = self.pending.pop() {
                self.out.extend_from_slice(&r);
            }
        }
    }

    fn option(&mut self, option: u32, payload: &[u8]) {
        self.options_seen.push((option, self.tls));
        match option {
            opt::STARTTLS if self.s.starttls_wrong_option => {
                encode_option_reply(&mut self.out, opt::STRUCTURED_REPLY, rep::ACK, &[]);
            }
            opt::STARTTLS if self.s.starttls.is_some() => {
                encode_option_reply(&mut self.out, option, self.s.starttls.unwrap(), &[]);
            }
            opt::EXTENDED_HEADERS if self.s.extended => {
                self.structured = true;
                self.extended = true;
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
            }
            opt::STRUCTURED_REPLY if !self.s.no_structured => {
                self.structured = true;
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
            }
            opt::SET_META_CONTEXT => {
                let m = crate::wire::option::MetaContextRequest::decode(payload).unwrap();
                for (i, q) in m.queries.iter().enumerate() {
                    if *q == b"base:allocation" {
                        self.contexts.push(q.to_vec());
                        let p = crate::wire::option::encode_rep_meta_context(i as u32 + 1, q);
                        encode_option_reply(&mut self.out, option, rep::META_CONTEXT, &p);
                    }
                }
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
            }
            opt::LIST => {
                for (name, desc) in [(&b""[..], &b""[..]), (b"disk2", b"second disk")] {
                    let p = crate::wire::option::encode_rep_server(name, desc);
                    encode_option_reply(&mut self.out, option, rep::SERVER, &p);
                }
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
            }
            opt::LIST_META_CONTEXT => {
                let p = crate::wire::option::encode_rep_meta_context(0, b"base:allocation");
                encode_option_reply(&mut self.out, option, rep::META_CONTEXT, &p);
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
            }
            opt::ABORT => {
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
                self.closed = true;
            }
            opt::GO | opt::INFO
                if crate::wire::option::GoRequest::decode(payload)
                    .unwrap()
                    .export_name
                    == b"nope" =>
            {
                encode_option_reply(&mut self.out, option, rep::ERR_UNKNOWN, b"no such export");
            }
            opt::INFO => {
                let info = InfoReply::Export {
                    size: 12345 * 512,
                    flags: self.flags(),
                }
                .encode();
                encode_option_reply(&mut self.out, option, rep::INFO, &info);
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
            }
            opt::GO if !self.s.no_go => {
                let info = InfoReply::Export {
                    size: self.size(),
                    flags: self.flags(),
                }
                .encode();
                encode_option_reply(&mut self.out, option, rep::INFO, &info);
                encode_option_reply(&mut self.out, option, rep::ACK, &[]);
                self.handshake_done = true;
            }
            opt::EXPORT_NAME => {
                let r = handshake::encode_export_name_reply(self.size(), self.flags(), true);
                self.out.extend_from_slice(&r);
                self.handshake_done = true;
            }
            _ => encode_option_reply(&mut self.out, option, rep::ERR_UNSUP, &[]),
        }
    }

    fn request(&mut self, h: RequestHeader, payload: &[u8]) {
        if self.extended {
            return self.extended_request(h, payload);
        }
        let mut r = Vec::new();
        let (off, len) = (h.offset as usize, h.length as usize);
        match h.kind {
            cmd::READ => {
                if let Some(evil) = self.s.evil_read_reply {
                    r = evil(h.cookie, h.offset, h.length as u32);
                } else if self.structured && self.s.split_reads && len >= 2 {
                    let half = len / 2;
                    r.extend_from_slice(&reply::encode_offset_data_header(
                        0,
                        h.cookie,
                        h.offset,
                        half as u32,
                    ));
                    r.extend_from_slice(&self.disk[off..off + half]);
                    r.extend_from_slice(&reply::encode_offset_hole(
                        reply_done(),
                        h.cookie,
                        h.offset + half as u64,
                        (len - half) as u32,
                    ));
                } else if self.structured {
                    r.extend_from_slice(&reply::encode_offset_data_header(
                        reply_done(),
                        h.cookie,
                        h.offset,
                        len as u32,
                    ));
                    r.extend_from_slice(&self.disk[off..off + len]);
                } else {
                    r.extend_from_slice(&reply::encode_simple_reply(0, h.cookie));
                    r.extend_from_slice(&self.disk[off..off + len]);
                }
            }
            cmd::WRITE => {
                self.disk[off..off + len].copy_from_slice(payload);
                r.extend_from_slice(&reply::encode_simple_reply(0, h.cookie));
            }
            cmd::TRIM | cmd::WRITE_ZEROES => {
                self.disk[off..off + len].fill(0);
                r.extend_from_slice(&reply::encode_simple_reply(0, h.cookie));
            }
            cmd::FLUSH => r.extend_from_slice(&reply::encode_simple_reply(0, h.cookie)),
            cmd::BLOCK_STATUS => {
                reply::encode_block_status_chunk(
                    &mut r,
                    reply_done(),
                    h.cookie,
                    1,
                    &[(h.length as u32, allocation::HOLE | allocation::ZERO)],
                );
            }
            cmd::DISC => {
                self.closed = true;
                return;
            }
            _ => r.extend_from_slice(&reply::encode_simple_reply(22, h.cookie)),
        }
        if self.s.reverse_batch > 0 {
            self.pending.push(r);
        } else {
            self.out.extend_from_slice(&r);
        }
    }

    /// The answer to a request once extended headers are in use: chunks
    /// with 32-byte headers only.
    fn extended_request(&mut self, h: RequestHeader, payload: &[u8]) {
        use reply::{put_chunk_header, ChunkForm};
        let form = ChunkForm::Extended {
            request_offset: h.offset,
        };
        let mut r = Vec::new();
        let end = (h.offset + h.length).min(self.disk.len() as u64) as usize;
        let off = (h.offset as usize).min(end);
        let evil = match h.kind {
            cmd::READ => self.s.evil_read_reply,
            cmd::BLOCK_STATUS => self.s.evil_block_status,
            _ => None,
        };
        match h.kind {
            _ if evil.is_some() => r = evil.unwrap()(h.cookie, h.offset, h.length as u32),
            cmd::READ => {
                put_chunk_header(
                    &mut r,
                    form,
                    reply_done(),
                    chunk::OFFSET_DATA,
                    h.cookie,
                    h.length + 8,
                );
                r.put_u64(h.offset);
                r.extend_from_slice(&self.disk[off..end]);
            }
            cmd::BLOCK_STATUS => reply::encode_block_status_ext_chunk(
                &mut r,
                reply_done(),
                h.cookie,
                h.offset,
                1,
                &[(h.length, u64::from(allocation::HOLE | allocation::ZERO))],
            ),
            cmd::DISC => {
                self.closed = true;
                return;
            }
            k => {
                match k {
                    cmd::WRITE => self.disk[off..end].copy_from_slice(&payload[..end - off]),
                    cmd::TRIM | cmd::WRITE_ZEROES => self.disk[off..end].fill(0),
                    _ => {}
                }
                put_chunk_header(&mut r, form, reply_done(), chunk::NONE, h.cookie, 0);
            }
        }
        self.out.extend_from_slice(&r);
    }

    /// Bytes for the client, honouring a planned hang-up. `None` = EOF.
    fn take_output(&mut self) -> Option<Vec<u8>> {
        let limit = self.s.hang_up_after.unwrap_or(usize::MAX);
        if self.sent >= limit || (self.closed && self.out.is_empty()) {
            return None;
        }
        let n = self.out.len().min(limit - self.sent);
        self.sent += n;
        Some(self.out.drain(..n).collect())
    }
}

fn reply_done() -> u16 {
    chunk::FLAG_DONE
}

/// Moves bytes between a client and a fake server until neither can move.
struct Link {
    client: Client<Vec<u8>>,
    server: FakeServer,
    to_client: VecDeque<u8>,
    eof: bool,
    /// Deliver at most this many bytes per recv.
    trickle: usize,
}

impl Link {
    fn new(config: Config, s: Script) -> Self {
        let mut l = Link {
            client: Client::new(config),
            server: FakeServer::new(s),
            to_client: VecDeque::new(),
            eof: false,
            trickle: usize::MAX,
        };
        l.server.step(&[]);
        l
    }

    fn run(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            if self.client.tls_handshake_wanted() {
                assert!(!self.client.wants_read() && !self.client.wants_write());
                self.server.tls = true;
                self.client.tls_handshake_done();
                moved = true;
            }
            while self.client.wants_write() {
                let mut iov = [IoSlice::new(&[]); 8];
                let n = self.client.send_bufs(&mut iov);
                let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
                let len = bytes.len();
                assert!(len > 0, "wants_write but nothing to send");
                self.client.send_done(len);
                self.server.step(&bytes);
                moved = true;
            }
            match self.server.take_output() {
                Some(b) => self.to_client.extend(b),
                None => self.eof = true,
            }
            if self.client.wants_read() {
                if !self.to_client.is_empty() {
                    let buf = self.client.recv_buf();
                    let n = buf.len().min(self.to_client.len()).min(self.trickle);
                    assert!(n > 0, "wants_read but offers no buffer");
                    for (i, b) in self.to_client.drain(..n).enumerate() {
                        buf[i] = b;
                    }
                    self.client.recv_done(n);
                    moved = true;
                } else if self.eof {
                    self.client.recv_buf();
                    self.client.recv_done(0);
                    moved = true;
                }
            }
            if !moved {
                if self.server.pending.is_empty() {
                    return;
                }
                // Nothing more is coming: answer what was held back.
                while let Some(r) = self.server.pending.pop() {
                    self.server.out.extend_from_slice(&r);
                }
            }
        }
        panic!("link did not settle");
    }

    fn submit(&mut self, c: Command, buf: Vec<u8>) -> u64 {
        self.client.submit(c, buf).map_err(|(e, _)| e).unwrap()
    }

    fn completions(&mut self) -> Vec<(u64, Vec<u8>, Result<(), Error>)> {
        let mut v = Vec::new();
        while let Some(e) = self.client.poll_event() {
            if let Event::Completed {
                cookie,
                ctx,
                result,
            } = e
            {
                v.push((cookie, ctx, result));
            }
        }
        v
    }
}

fn connected(s: Script) -> Link {
    let mut l = Link::new(Config::default(), s);
    l.run();
    assert_eq!(
        l.client.phase(),
        Phase::Ready,
        "{:?}",
        l.client.fatal_error()
    );
    l
}

#[test]
fn falls_back_to_export_name_without_go() {
    let l = connected(Script {
        no_go: true,
        no_structured: true,
        ..Default::default()
    });
    let e = l.client.export().unwrap();
    assert!(!e.structured_replies);
    assert!(
        !e.has_flag(tx_flags::SEND_DF),
        "DF needs structured replies"
    );
}

#[test]
fn oldstyle_server() {
    let l = connected(Script {
        oldstyle: true,
        ..Default::default()
    });
    assert_eq!(l.client.protocol(), Some(Protocol::Oldstyle));
    assert_eq!(l.client.export().unwrap().size, 1 << 20);
}

#[test]
fn read_ahead_buffer_grows_only_when_a_command_is_in_flight() {
    // A connection that only connects and disconnects keeps the small
    // handshake buffer (nothing large is allocated and zeroed for it).
    let mut l = connected(Script::default());
    let small = l.client.buffer_capacity();
    assert!(small < RBUF_SIZE, "{small}");
    // The first reply in transmission is read into the large buffer, and
    // what the small one held is kept (replies still parse).
    round_trip_on(&mut l, usize::MAX);
    assert!(l.client.buffer_capacity() >= RBUF_SIZE);
}

fn round_trip(s: Script, trickle: usize) {
    let mut l = connected(s);
    round_trip_on(&mut l, trickle);
}

/// A 64 KiB write, then 16 reads of it in flight at once, checked.
fn round_trip_on(l: &mut Link, trickle: usize) {
    l.trickle = trickle;
    let pattern: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let w = l.submit(Command::new(cmd::WRITE, 0, 4096, 65536), pattern.clone());
    l.run();
    let done = l.completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, w);
    assert!(done[0].2.is_ok());
    // Many reads in flight at once.
    let mut cookies = Vec::new();
    for i in 0..16u64 {
        cookies.push(l.submit(
            Command::new(cmd::READ, 0, 4096 + i * 4096, 4096),
            vec![0xaa; 4096],
        ));
    }
    assert_eq!(l.client.in_flight(), 16);
    l.run();
    let done = l.completions();
    assert_eq!(done.len(), 16);
    for (cookie, buf, result) in done {
        result.unwrap();
        let i = cookies.iter().position(|c| *c == cookie).unwrap();
        assert_eq!(buf, pattern[i * 4096..(i + 1) * 4096], "read {i}");
    }
    assert_eq!(l.client.phase(), Phase::Ready);
}

#[test]
fn replies_out_of_order() {
    round_trip(
        Script {
            reverse_batch: 16,
            ..Default::default()
        },
        usize::MAX,
    );
}

#[test]
fn one_byte_at_a_time() {
    // The plain case runs against the real server in tests/pair.rs; this
    // one needs the script's out-of-order replies.
    round_trip(
        Script {
            no_structured: true,
            reverse_batch: 16,
            ..Default::default()
        },
        3,
    );
}

#[test]
fn structured_read_with_data_and_hole_chunks() {
    let mut l = connected(Script {
        split_reads: true,
        ..Default::default()
    });
    l.submit(Command::new(cmd::WRITE, 0, 0, 8192), vec![9; 8192]);
    l.run();
    l.completions();
    let mut c = Command::new(cmd::READ, 0, 0, 8192);
    c.report_chunks = true;
    l.submit(c, vec![0xff; 8192]);
    l.run();
    let mut chunks = Vec::new();
    let mut buf = Vec::new();
    while let Some(e) = l.client.poll_event() {
        match e {
            Event::ReadChunk {
                offset, len, hole, ..
            } => chunks.push((offset, len, hole)),
            Event::Completed { ctx, result, .. } => {
                result.unwrap();
                buf = ctx;
            }
            _ => {}
        }
    }
    assert_eq!(chunks, vec![(0, 4096, false), (4096, 4096, true)]);
    assert_eq!(&buf[..4096], &[9; 4096][..]);
    assert_eq!(&buf[4096..], &[0; 4096][..], "a hole reads as zeroes");
}

#[test]
fn submit_checks_in_libnbd_order() {
    let mut before = Client::<Vec<u8>>::new(Config::default());
    let e = before
        .submit(Command::new(cmd::READ, 0, 0, 512), vec![0; 512])
        .unwrap_err();
    assert_eq!(e.0.errno, host::ENOTCONN);

    let mut l = connected(Script {
        size: 64 << 20,
        ..Default::default()
    });
    let errno = |l: &mut Link, c: Command, len: usize| {
        l.client.submit(c, vec![0; len]).unwrap_err().0.errno
    };
    // Reads past the end: EINVAL; writes and zeroes: ENOSPC.
    assert_eq!(
        errno(&mut l, Command::new(cmd::READ, 0, 64 << 20, 1), 1),
        host::EINVAL
    );
    assert_eq!(
        errno(&mut l, Command::new(cmd::WRITE, 0, 64 << 20, 1), 1),
        host::ENOSPC
    );
    assert_eq!(
        errno(
            &mut l,
            Command::new(cmd::WRITE_ZEROES, 0, (64 << 20) - 1, 2),
            0
        ),
        host::ENOSPC
    );
    // The bounds check comes before the size check.
    let n = (64 << 20) + 4096;
    assert_eq!(
        errno(&mut l, Command::new(cmd::READ, 0, 0, n as u64), n),
        host::EINVAL
    );
    assert_eq!(
        errno(&mut l, Command::new(cmd::READ, 0, 0, 0), 0),
        host::EINVAL
    );
    // Flags a command does not take, or the server does not offer.
    assert_eq!(
        errno(&mut l, Command::new(cmd::READ, cmd_flags::FUA, 0, 1), 1),
        host::EINVAL
    );
    assert_eq!(
        errno(
            &mut l,
            Command::new(cmd::WRITE_ZEROES, cmd_flags::FAST_ZERO, 0, 1),
            0
        ),
        host::EINVAL
    );
    assert_eq!(
        errno(&mut l, Command::new(cmd::CACHE, 0, 0, 1), 0),
        host::EINVAL
    );
    assert_eq!(
        errno(&mut l, Command::new(cmd::BLOCK_STATUS, 0, 0, 1), 0),
        host::ENOTSUP
    );
}

#[test]
fn request_over_64_mib_is_erange() {
    let mut l = connected(Script {
        size: 1 << 30,
        ..Default::default()
    });
    let n = (64 << 20) + 1;
    let e = l
        .client
        .submit(Command::new(cmd::READ, 0, 0, n as u64), vec![0; n])
        .unwrap_err();
    assert_eq!(e.0.errno, host::ERANGE);
}

#[test]
fn read_only_export_refuses_writes() {
    // The fake server offers trim and zero even when read-only: then all
    // three are EPERM.
    let mut l = connected(Script {
        read_only: true,
        ..Default::default()
    });
    for kind in [cmd::WRITE, cmd::TRIM, cmd::WRITE_ZEROES] {
        let len = if kind == cmd::WRITE { 512 } else { 0 };
        let e = l
            .client
            .submit(Command::new(kind, 0, 0, 512), vec![0; len])
            .unwrap_err();
        assert_eq!(e.0.errno, host::EPERM);
    }
    // A read-only export that does not offer trim or zero (what nbdkit -r
    // sends): those are EINVAL, as in libnbd 1.14, and writes EPERM.
    if let super::state::Stage::Transmission(e) = &mut l.client.stage {
        e.flags &= !(tx_flags::SEND_TRIM | tx_flags::SEND_WRITE_ZEROES);
    }
    for (kind, errno) in [
        (cmd::TRIM, host::EINVAL),
        (cmd::WRITE_ZEROES, host::EINVAL),
        (cmd::WRITE, host::EPERM),
    ] {
        let len = if kind == cmd::WRITE { 512 } else { 0 };
        let e = l
            .client
            .submit(Command::new(kind, 0, 0, 512), vec![0; len])
            .unwrap_err();
        assert_eq!(e.0.errno, errno);
    }
}

// ---- hostile servers ----

fn dies_with(s: Script, errno: i32) -> Link {
    let mut l = Link::new(Config::default(), s);
    l.run();
    assert_eq!(l.client.phase(), Phase::Dead);
    assert_eq!(l.client.fatal_error().unwrap().errno, errno);
    assert!(!l.client.wants_read() && !l.client.wants_write());
    l
}

#[test]
fn wrong_magic_is_a_protocol_error() {
    let l = dies_with(
        Script {
            bad_magic: true,
            ..Default::default()
        },
        host::EPROTO,
    );
    assert!(l.client.fatal_error().unwrap().message.contains("magic"));
}

#[test]
fn truncated_handshake() {
    for cut in [0, 5, 16, 17, 30, 50] {
        dies_with(
            Script {
                hang_up_after: Some(cut),
                ..Default::default()
            },
            host::ECONNRESET,
        );
    }
}

#[test]
fn export_size_over_2_pow_63() {
    let l = dies_with(
        Script {
            size: 1 << 63,
            ..Default::default()
        },
        host::EPROTO,
    );
    assert!(l.client.fatal_error().unwrap().message.contains("2^63"));
}

#[test]
fn hang_up_mid_reply_fails_commands_in_flight() {
    let mut l = connected(Script::default());
    l.server.s.hang_up_after = Some(l.server.sent + 100);
    let c = l.submit(Command::new(cmd::READ, 0, 0, 4096), vec![0; 4096]);
    l.run();
    assert_eq!(l.client.phase(), Phase::Dead);
    let done = l.completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, c);
    // The command: ENOTCONN, as libnbd; the connection: the socket's error.
    assert_eq!(done[0].2.as_ref().unwrap_err().errno, host::ENOTCONN);
    assert_eq!(l.client.fatal_error().unwrap().errno, host::ECONNRESET);
}

fn hostile_read(evil: fn(u64, u64, u32) -> Vec<u8>) -> Link {
    let mut l = connected(Script {
        evil_read_reply: Some(evil),
        ..Default::default()
    });
    let c = l.submit(Command::new(cmd::READ, 0, 4096, 4096), vec![0x55; 4096]);
    l.run();
    assert_eq!(l.client.phase(), Phase::Dead);
    let done = l.completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, c);
    assert!(done[0].2.is_err());
    l
}

#[test]
fn wrong_cookie() {
    hostile_read(|cookie, _, len| {
        let mut r = reply::encode_simple_reply(0, cookie + 1000).to_vec();
        r.resize(r.len() + len as usize, 0);
        r
    });
}

#[test]
fn data_chunk_outside_the_request() {
    let l = hostile_read(|cookie, off, len| {
        let mut r =
            reply::encode_offset_data_header(chunk::FLAG_DONE, cookie, off + 8, len).to_vec();
        r.resize(r.len() + len as usize, 0xee);
        r
    });
    assert!(l.client.fatal_error().unwrap().message.contains("outside"));
}

#[test]
fn hole_chunk_before_the_request() {
    hostile_read(|cookie, off, len| {
        reply::encode_offset_hole(chunk::FLAG_DONE, cookie, off - 1, len).to_vec()
    });
}

#[test]
fn oversize_chunk() {
    hostile_read(|cookie, _, _| {
        reply::encode_chunk_header(chunk::FLAG_DONE, chunk::ERROR, cookie, 1 << 30).to_vec()
    });
}

#[test]
fn block_status_chunk_for_a_read() {
    hostile_read(|cookie, _, len| {
        let mut v = Vec::new();
        reply::encode_block_status_chunk(&mut v, chunk::FLAG_DONE, cookie, 1, &[(len, 0)]);
        v
    });
}

#[test]
fn error_chunk_fails_only_the_command() {
    let mut l = connected(Script {
        evil_read_reply: Some(|cookie, _, _| {
            let mut v = Vec::new();
            reply::encode_error_chunk(&mut v, cookie, 5, b"disk on fire");
            v
        }),
        ..Default::default()
    });
    l.submit(Command::new(cmd::READ, 0, 0, 512), vec![0; 512]);
    l.run();
    let done = l.completions();
    let e = done[0].2.as_ref().unwrap_err();
    assert_eq!(e.errno, host::EIO);
    assert!(e.message.contains("disk on fire"));
    assert_eq!(l.client.phase(), Phase::Ready, "the connection survives");
}

#[test]
fn never_panics_on_garbage() {
    // A deterministic stream of pseudo-random server bytes after a valid
    // handshake: the client must die cleanly or keep going, never panic.
    let mut seed = 0x1234_5678_9abc_def0u64;
    for round in 0..200 {
        let mut l = connected(Script::default());
        l.submit(Command::new(cmd::READ, 0, 0, 4096), vec![0; 4096]);
        let mut iov = [IoSlice::new(&[]); 8];
        let n = l.client.send_bufs(&mut iov);
        let len: usize = iov[..n].iter().map(|s| s.len()).sum();
        l.client.send_done(len);
        let mut junk = Vec::new();
        // Sometimes start with a valid structured header so deeper states
        // are reached.
        if round % 2 == 0 {
            junk.extend_from_slice(&reply::encode_chunk_header(0, (round % 7) as u16, 1, 40));
        }
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.put_u32(seed as u32);
        }
        let mut r = Reader::new(&junk);
        while l.client.wants_read() {
            let buf = l.client.recv_buf();
            let want = buf.len().min(r.remaining()).min(37);
            if want == 0 {
                break;
            }
            buf[..want].copy_from_slice(r.take(want).unwrap());
            l.client.recv_done(want);
        }
    }
}

// ---- option mode ----

fn opt_mode() -> Link {
    let cfg = Config {
        opt_mode: true,
        ..Default::default()
    };
    let mut l = Link::new(cfg, Script::default());
    l.run();
    assert_eq!(l.client.phase(), Phase::Negotiating);
    assert!(!l.client.wants_write() && !l.client.wants_read());
    l
}

fn option_result(l: &mut Link) -> (Result<u32, Error>, Vec<Vec<u8>>) {
    let mut listed = Vec::new();
    let mut result = None;
    while let Some(e) = l.client.poll_event() {
        match e {
            Event::OptionDone { result: r } => result = Some(r),
            Event::ListedExport { name, .. } => listed.push(name),
            Event::ListedMetaContext { name } => listed.push(name),
            _ => {}
        }
    }
    (result.expect("an OptionDone event"), listed)
}

#[test]
fn opt_mode_pauses_after_structured_replies() {
    let l = opt_mode();
    assert!(l.client.export().is_none());
    assert_eq!(l.client.protocol(), Some(Protocol::FixedNewstyle));
}

#[test]
fn opt_list_then_go() {
    let mut l = opt_mode();
    l.client.start_user_option(UserOption::List).unwrap();
    assert_eq!(l.client.phase(), Phase::Connecting);
    l.run();
    let (r, names) = option_result(&mut l);
    assert_eq!(r.unwrap(), 2);
    assert_eq!(names, vec![b"".to_vec(), b"disk2".to_vec()]);
    assert_eq!(l.client.phase(), Phase::Negotiating);
    l.client.start_user_option(UserOption::Go).unwrap();
    l.run();
    assert_eq!(option_result(&mut l).0.unwrap(), 0);
    assert_eq!(l.client.phase(), Phase::Ready);
}

#[test]
fn opt_info_reports_the_export_and_stays_negotiating() {
    let mut l = opt_mode();
    l.client.start_user_option(UserOption::Info).unwrap();
    l.run();
    option_result(&mut l).0.unwrap();
    assert_eq!(l.client.phase(), Phase::Negotiating);
    assert_eq!(l.client.export().unwrap().size, 12345 * 512);
}

#[test]
fn opt_go_failure_returns_to_negotiating() {
    let mut l = opt_mode();
    l.client.config_mut().export_name = b"nope".to_vec();
    l.client.start_user_option(UserOption::Go).unwrap();
    l.run();
    let e = option_result(&mut l).0.unwrap_err();
    assert_eq!(e.errno, host::ENOENT);
    assert!(e.message.contains("no such export"));
    assert_eq!(l.client.phase(), Phase::Negotiating);
    l.client.config_mut().export_name = b"".to_vec();
    l.client.start_user_option(UserOption::Go).unwrap();
    l.run();
    option_result(&mut l).0.unwrap();
    assert_eq!(l.client.phase(), Phase::Ready);
}

#[test]
fn opt_list_meta_context_and_abort() {
    let mut l = opt_mode();
    l.client
        .start_user_option(UserOption::ListMetaContext)
        .unwrap();
    l.run();
    let (r, names) = option_result(&mut l);
    assert_eq!(r.unwrap(), 1);
    assert_eq!(names, vec![b"base:allocation".to_vec()]);
    l.client.start_user_option(UserOption::Abort).unwrap();
    l.run();
    assert_eq!(l.client.phase(), Phase::Closed);
    // Only one option at a time, and only while paused.
    assert!(l.client.start_user_option(UserOption::Go).is_err());
}

#[test]
fn simple_read_reply_after_structured_negotiation() {
    hostile_read(|cookie, _, len| {
        let mut r = reply::encode_simple_reply(0, cookie).to_vec();
        r.resize(r.len() + len as usize, 0);
        r
    });
}

// ---- STARTTLS ----

fn tls_link(tls: Tls, s: Script) -> Link {
    let cfg = Config {
        tls,
        meta_contexts: vec![b"base:allocation".to_vec()],
        ..Default::default()
    };
    let mut l = Link::new(cfg, s);
    l.run();
    l
}

#[test]
fn starttls_first_then_options_inside_tls() {
    for tls in [Tls::Allow, Tls::Require] {
        let l = tls_link(
            tls,
            Script {
                starttls: Some(rep::ACK),
                ..Default::default()
            },
        );
        assert_eq!(
            l.client.phase(),
            Phase::Ready,
            "{:?}",
            l.client.fatal_error()
        );
        assert!(l.client.tls_negotiated());
        assert_eq!(
            l.server.options_seen,
            vec![
                (opt::STARTTLS, false),
                // Refused by this server: the client falls back.
                (opt::EXTENDED_HEADERS, true),
                (opt::STRUCTURED_REPLY, true),
                (opt::SET_META_CONTEXT, true),
                (opt::GO, true),
            ]
        );
        assert!(l.client.export().unwrap().structured_replies);
    }
}

#[test]
fn starttls_refused_allow_continues_in_plain_text() {
    for refusal in [rep::ERR_UNSUP, rep::ERR_POLICY] {
        let l = tls_link(
            Tls::Allow,
            Script {
                starttls: Some(refusal),
                ..Default::default()
            },
        );
        assert_eq!(l.client.phase(), Phase::Ready);
        assert!(!l.client.tls_negotiated());
        assert_eq!(l.client.tls_state(), TlsState::Refused);
        let starttls = l
            .server
            .options_seen
            .iter()
            .filter(|o| o.0 == opt::STARTTLS);
        assert_eq!(starttls.count(), 1, "STARTTLS is sent once");
    }
}

#[test]
fn starttls_refused_require_fails_having_sent_nothing_else() {
    for refusal in [rep::ERR_UNSUP, rep::ERR_POLICY] {
        let l = tls_link(
            Tls::Require,
            Script {
                starttls: Some(refusal),
                ..Default::default()
            },
        );
        assert_eq!(l.client.phase(), Phase::Dead);
        let e = l.client.fatal_error().unwrap();
        assert_eq!(e.errno, host::ENOTSUP);
        assert!(e.message.contains("refused TLS"), "{}", e.message);
        assert_eq!(l.server.options_seen, vec![(opt::STARTTLS, false)]);
    }
}

#[test]
fn tls_disabled_never_sends_starttls() {
    let l = tls_link(Tls::Disable, Script::default());
    assert_eq!(l.client.phase(), Phase::Ready);
    assert!(l.server.options_seen.iter().all(|o| o.0 != opt::STARTTLS));
}

#[test]
fn tls_required_refuses_servers_without_options() {
    let l = tls_link(
        Tls::Require,
        Script {
            oldstyle: true,
            ..Default::default()
        },
    );
    assert_eq!(l.client.phase(), Phase::Dead);
    assert_eq!(l.client.fatal_error().unwrap().errno, host::ENOTSUP);
    // Allowed, an oldstyle server is used in plain text.
    let l = tls_link(
        Tls::Allow,
        Script {
            oldstyle: true,
            ..Default::default()
        },
    );
    assert_eq!(l.client.phase(), Phase::Ready);
}

#[test]
fn starttls_reply_to_another_option_is_fatal() {
    for tls in [Tls::Allow, Tls::Require] {
        let l = tls_link(
            tls,
            Script {
                starttls_wrong_option: true,
                ..Default::default()
            },
        );
        assert_eq!(l.client.phase(), Phase::Dead);
        assert_eq!(l.client.fatal_error().unwrap().errno, host::EPROTO);
        assert!(!l.client.tls_negotiated());
    }
}

#[test]
fn starttls_non_error_non_ack_is_fatal() {
    let l = tls_link(
        Tls::Allow,
        Script {
            starttls: Some(rep::SERVER),
            ..Default::default()
        },
    );
    assert_eq!(l.client.phase(), Phase::Dead);
    assert_eq!(l.client.fatal_error().unwrap().errno, host::EPROTO);
}

#[test]
fn starttls_in_opt_mode_before_pausing() {
    let cfg = Config {
        tls: Tls::Require,
        opt_mode: true,
        ..Default::default()
    };
    let mut l = Link::new(
        cfg,
        Script {
            starttls: Some(rep::ACK),
            ..Default::default()
        },
    );
    l.run();
    assert_eq!(l.client.phase(), Phase::Negotiating);
    assert!(l.client.tls_negotiated());
    l.client.start_user_option(UserOption::Go).unwrap();
    l.run();
    assert_eq!(l.client.phase(), Phase::Ready);
    assert_eq!(l.server.options_seen[0], (opt::STARTTLS, false));
    assert!(l.server.options_seen[1..].iter().all(|o| o.1));
}

#[test]
fn endless_data_chunks_are_refused() {
    // The same 4 KiB, again and again, never DONE: a server that would keep
    // the client busy for ever. Overlap past the request's length is fatal.
    let l = hostile_read(|cookie, off, len| {
        let mut r = Vec::new();
        for _ in 0..3 {
            r.extend_from_slice(&reply::encode_offset_data_header(0, cookie, off, len));
            r.resize(r.len() + len as usize, 0x11);
        }
        r
    });
    assert!(l
        .client
        .fatal_error()
        .unwrap()
        .message
        .contains("overlapping"));
}

#[test]
fn endless_extent_lists_are_refused() {
    // One context negotiated, so one BLOCK_STATUS chunk per reply: a
    // second one for the same context (never DONE) is fatal.
    let cfg = Config {
        meta_contexts: vec![b"base:allocation".to_vec()],
        ..Default::default()
    };
    let mut l = Link::new(cfg, Script::default());
    l.run();
    let c = l.submit(Command::new(cmd::BLOCK_STATUS, 0, 0, 4096), Vec::new());
    let mut evil = Vec::new();
    for _ in 0..3 {
        reply::encode_block_status_chunk(&mut evil, 0, c, 1, &[(4096, 0)]);
    }
    // Send the request, then feed the hostile reply instead of the server's.
    let mut iov = [IoSlice::new(&[]); 8];
    let n = l.client.send_bufs(&mut iov);
    let len: usize = iov[..n].iter().map(|s| s.len()).sum();
    l.client.send_done(len);
    let mut r = Reader::new(&evil);
    while l.client.wants_read() && !r.is_empty() {
        let buf = l.client.recv_buf();
        let want = buf.len().min(r.remaining());
        buf[..want].copy_from_slice(r.take(want).unwrap());
        l.client.recv_done(want);
    }
    assert_eq!(l.client.phase(), Phase::Dead);
    assert!(l.client.fatal_error().unwrap().message.contains("twice"));
}

/// A client connected to a fake server that speaks extended headers, with
/// base:allocation.
fn extended(s: Script) -> Link {
    let config = Config {
        meta_contexts: vec![b"base:allocation".to_vec()],
        ..Config::default()
    };
    let mut l = Link::new(
        config,
        Script {
            extended: true,
            size: 8 << 30,
            ..s
        },
    );
    l.run();
    assert_eq!(
        l.client.phase(),
        Phase::Ready,
        "{:?}",
        l.client.fatal_error()
    );
    l
}

#[test]
fn extended_headers_asked_first_and_structured_replies_skipped() {
    let mut l = extended(Script::default());
    let e = l.client.export().unwrap();
    assert!(e.extended_headers && e.structured_replies);
    let opts: Vec<u32> = l.server.options_seen.iter().map(|o| o.0).collect();
    assert_eq!(
        opts,
        vec![opt::EXTENDED_HEADERS, opt::SET_META_CONTEXT, opt::GO]
    );
    // Every byte split of the replies, and 64-bit lengths both ways.
    l.trickle = 1;
    let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    l.submit(Command::new(cmd::WRITE, 0, 512, 4096), data.clone());
    let r = l.submit(Command::new(cmd::READ, 0, 512, 4096), vec![0; 4096]);
    let z = l.submit(Command::new(cmd::WRITE_ZEROES, 0, 0, 5 << 30), Vec::new());
    let b = l.submit(Command::new(cmd::BLOCK_STATUS, 0, 0, 6 << 30), Vec::new());
    l.run();
    let mut extents = Vec::new();
    let mut done = Vec::new();
    while let Some(e) = l.client.poll_event() {
        match e {
            Event::BlockStatus { extents: x, .. } => extents.extend(x),
            Event::Completed {
                cookie,
                ctx,
                result,
            } => done.push((cookie, ctx, result)),
            _ => {}
        }
    }
    assert_eq!(done.len(), 4);
    assert!(done.iter().all(|d| d.2.is_ok()), "{done:?}");
    assert_eq!(done.iter().find(|d| d.0 == r).unwrap().1, data);
    assert!(done.iter().any(|d| d.0 == z));
    assert!(done.iter().any(|d| d.0 == b));
    let hz = u64::from(allocation::HOLE | allocation::ZERO);
    assert_eq!(extents, vec![(6 << 30, hz)]);
    assert_eq!(l.client.phase(), Phase::Ready);
}

#[test]
fn without_extended_headers_over_4_gib_is_erange() {
    let mut l = connected(Script {
        size: 8 << 30,
        ..Default::default()
    });
    let e = l
        .client
        .submit(Command::new(cmd::WRITE_ZEROES, 0, 0, 5 << 30), Vec::new())
        .unwrap_err()
        .0;
    assert_eq!(e.errno, host::ERANGE);
}

fn hostile_extended(read: Option<EvilReply>, bs: Option<EvilReply>) -> Link {
    let mut l = extended(Script {
        evil_read_reply: read,
        evil_block_status: bs,
        ..Default::default()
    });
    let kind = if read.is_some() {
        cmd::READ
    } else {
        cmd::BLOCK_STATUS
    };
    let buf = if read.is_some() {
        vec![0; 4096]
    } else {
        Vec::new()
    };
    l.submit(Command::new(kind, 0, 4096, 4096), buf);
    l.run();
    assert_eq!(l.client.phase(), Phase::Dead);
    assert_eq!(l.client.fatal_error().unwrap().errno, host::EPROTO);
    let done = l.completions();
    assert_eq!(done.len(), 1);
    assert!(done[0].2.is_err());
    l
}

#[test]
fn compact_replies_after_extended_headers_are_fatal() {
    hostile_extended(
        Some(|cookie, _, len| {
            let mut r = reply::encode_simple_reply(0, cookie).to_vec();
            r.resize(r.len() + len as usize + 16, 0);
            r
        }),
        None,
    );
    hostile_extended(
        Some(|cookie, off, len| {
            let mut r =
                reply::encode_offset_data_header(chunk::FLAG_DONE, cookie, off, len).to_vec();
            r.resize(r.len() + len as usize + 16, 0);
            r
        }),
        None,
    );
}

#[test]
fn extended_chunk_longer_than_4_gib_is_fatal() {
    let l = hostile_extended(
        Some(|cookie, off, _| {
            reply::encode_extended_chunk_header(
                chunk::FLAG_DONE,
                chunk::ERROR,
                cookie,
                off,
                1 << 33,
            )
            .to_vec()
        }),
        None,
    );
    assert!(l
        .client
        .fatal_error()
        .unwrap()
        .message
        .contains("more than we accept"));
}

#[test]
fn narrow_block_status_after_extended_headers_is_fatal() {
    hostile_extended(
        None,
        Some(|cookie, off, len| {
            // A 32-bit BLOCK_STATUS chunk behind an extended header.
            let mut v = reply::encode_extended_chunk_header(
                chunk::FLAG_DONE,
                chunk::BLOCK_STATUS,
                cookie,
                off,
                12,
            )
            .to_vec();
            v.put_u32(1);
            v.put_u32(len);
            v.put_u32(0);
            v
        }),
    );
}

#[test]
fn block_status_ext_with_a_wrong_count_is_fatal() {
    hostile_extended(
        None,
        Some(|cookie, off, len| {
            let mut v = Vec::new();
            reply::encode_block_status_ext_chunk(
                &mut v,
                chunk::FLAG_DONE,
                cookie,
                off,
                1,
                &[(u64::from(len), 0)],
            );
            // Claim two extents where one is sent.
            v[32 + 7] = 2;
            v
        }),
    );
}

#[test]
fn no_export_name_fallback_after_extended_headers() {
    let mut l = Link::new(
        Config::default(),
        Script {
            extended: true,
            no_go: true,
            ..Default::default()
        },
    );
    l.run();
    assert_eq!(l.client.phase(), Phase::Dead);
    let opts: Vec<u32> = l.server.options_seen.iter().map(|o| o.0).collect();
    assert_eq!(opts, vec![opt::EXTENDED_HEADERS, opt::GO]);
}

// ---- option mode: the caller's single steps (libnbd 1.16) ----

fn opt_mode_without_structured_replies() -> Link {
    let cfg = Config {
        opt_mode: true,
        request_structured_replies: false,
        ..Default::default()
    };
    let mut l = Link::new(cfg, Script::default());
    l.run();
    assert_eq!(l.client.phase(), Phase::Negotiating);
    assert!(!l.client.structured_replies());
    l
}

#[test]
fn opt_structured_reply_then_set_meta_context_by_hand() {
    let mut l = opt_mode_without_structured_replies();
    // Meta contexts need structured replies: refused before sending.
    assert_eq!(
        l.client
            .start_user_option(UserOption::SetMetaContext)
            .unwrap_err()
            .errno,
        host::ENOTSUP
    );
    l.client
        .start_user_option(UserOption::StructuredReply)
        .unwrap();
    l.run();
    assert_eq!(option_result(&mut l).0.unwrap(), 1);
    assert!(l.client.structured_replies());
    assert_eq!(l.client.phase(), Phase::Negotiating);

    // The caller's own queries replace the configured (empty) list.
    let queries = vec![b"x-other:thing".to_vec(), b"base:allocation".to_vec()];
    l.client
        .start_user_option_with(UserOption::SetMetaContext, Some(queries))
        .unwrap();
    l.run();
    let (r, names) = option_result(&mut l);
    assert_eq!(r.unwrap(), 1);
    assert_eq!(names, vec![b"base:allocation".to_vec()]);

    // Without request_meta_context, GO keeps that selection and sends no
    // SET_META_CONTEXT of its own, although contexts are configured.
    l.client.config_mut().request_meta_context = false;
    l.client.config_mut().meta_contexts = vec![b"base:allocation".to_vec()];
    l.client.start_user_option(UserOption::Go).unwrap();
    l.run();
    option_result(&mut l).0.unwrap();
    assert_eq!(l.client.phase(), Phase::Ready);
    let sets = l
        .server
        .options_seen
        .iter()
        .filter(|o| o.0 == opt::SET_META_CONTEXT)
        .count();
    assert_eq!(sets, 1, "{:?}", l.server.options_seen);
    let contexts = &l.client.export().unwrap().meta_contexts;
    assert_eq!(contexts.len(), 1);
    assert_eq!(contexts[0].1, b"base:allocation");
}

#[test]
fn opt_starttls_by_hand_refused_then_accepted() {
    // Refused (the script's default): the option fails, the handle goes
    // on negotiating in plain text, even though the caller wanted TLS.
    let mut l = opt_mode_without_structured_replies();
    l.client.start_user_option(UserOption::StartTls).unwrap();
    l.run();
    assert!(option_result(&mut l).0.is_err());
    assert_eq!(l.client.phase(), Phase::Negotiating);
    assert!(!l.client.tls_negotiated());

    // Accepted: the TLS handshake runs, then it is the caller's turn
    // again, inside TLS, with nothing of the plain text kept.
    let cfg = Config {
        opt_mode: true,
        request_extended_headers: false,
        ..Default::default()
    };
    let mut l = Link::new(
        cfg,
        Script {
            starttls: Some(rep::ACK),
            ..Default::default()
        },
    );
    l.run();
    assert!(l.client.structured_replies());
    l.client.start_user_option(UserOption::StartTls).unwrap();
    l.run();
    assert_eq!(option_result(&mut l).0.unwrap(), 1);
    assert_eq!(l.client.phase(), Phase::Negotiating);
    assert!(l.client.tls_negotiated());
    assert!(!l.client.structured_replies());
    l.client.start_user_option(UserOption::Go).unwrap();
    l.run();
    assert_eq!(l.client.phase(), Phase::Ready);
    // STRUCTURED_REPLY in plain text, STARTTLS, then GO inside TLS only.
    assert_eq!(
        l.server.options_seen,
        vec![
            (opt::STRUCTURED_REPLY, false),
            (opt::STARTTLS, false),
            (opt::GO, true)
        ]
    );
}

#[test]
fn stats_count_bytes_and_chunks_as_libnbd() {
    // Without extended headers, so that the request is 28 bytes.
    let cfg = Config {
        request_extended_headers: false,
        ..Default::default()
    };
    let mut l = Link::new(cfg, Script::default());
    l.run();
    let s = l.client.stats();
    // Greeting received; STRUCTURED_REPLY and GO sent.
    assert_eq!((s.chunks_sent, s.chunks_received), (2, 1));
    let c = l.submit(Command::new(cmd::WRITE, 0, 0, 1024), vec![7; 1024]);
    l.run();
    assert!(l.completions().iter().any(|d| d.0 == c));
    let t = l.client.stats();
    assert_eq!(t.chunks_sent, 3);
    assert_eq!(t.chunks_received, 2);
    assert_eq!(t.bytes_sent, s.bytes_sent + 28 + 1024);
    assert_eq!(t.bytes_received, s.bytes_received + 16);
    l.client.disconnect().unwrap();
    l.run();
    assert_eq!(l.client.stats().chunks_sent, 4);
}

/// A client that waits for the server to hang up after NBD_CMD_DISC (as
/// our libnbd does on plain sockets) is not closed when DISC has merely
/// gone out, only once the server's EOF arrives; without the wait it is
/// closed as soon as DISC is out.
#[test]
fn disconnect_waits_for_server_close_when_asked() {
    for wait in [true, false] {
        let mut l = connected(Script::default());
        l.client.set_wait_for_server_close(wait);
        l.client.disconnect().unwrap();
        // Send DISC by hand, without letting the server answer yet.
        let mut iov = [IoSlice::new(&[]); 8];
        let n = l.client.send_bufs(&mut iov);
        let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
        l.client.send_done(bytes.len());
        assert!(l.client.disconnect_sent());
        if wait {
            assert_eq!(l.client.phase(), Phase::Ready);
            assert!(l.client.wants_read(), "must read until the server's EOF");
            l.server.step(&bytes);
            l.run();
        }
        assert_eq!(
            l.client.phase(),
            Phase::Closed,
            "wait={wait}: {:?}",
            l.client.fatal_error()
        );
    }
}

#[test]
fn stats_count_extended_replies_as_chunks() {
    let mut l = Link::new(
        Config::default(),
        Script {
            extended: true,
            ..Default::default()
        },
    );
    l.run();
    assert!(l.client.extended_headers());
    let s = l.client.stats();
    let c = l.submit(Command::new(cmd::WRITE, 0, 0, 1024), vec![7; 1024]);
    l.run();
    assert!(l.completions().iter().any(|d| d.0 == c));
    let t = l.client.stats();
    assert_eq!(t.chunks_sent, s.chunks_sent + 1);
    assert_eq!(t.chunks_received, s.chunks_received + 1);
    assert_eq!(t.bytes_sent, s.bytes_sent + 32 + 1024);
    assert_eq!(t.bytes_received, s.bytes_received + 32);
}
