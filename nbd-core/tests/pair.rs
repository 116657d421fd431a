//! The core client wired to the core server in memory, in the manner of
//! quinn-proto's `Pair`: both state machines run in one thread, bytes move
//! between them through two pipes, and the pipes can be told to cut the
//! stream anywhere (whole, one byte at a time, or at split points drawn
//! from a fixed seed). Every schedule must give the same results.
//!
//! The server side is driven as nbd-server-bin drives it (negotiation,
//! then header, payload, validate, execute, encode), against a small
//! in-memory backend. Hostile servers are scripted in
//! `src/client/tests.rs`; this file is for the two cores agreeing.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Mutex;

use nbd_core::client::{self, Client, Event, Phase, Protocol};
use nbd_core::errno::host;
use nbd_core::server::negotiate::{self, Caps, ExportDetails, Exports, Negotiation, Want};
use nbd_core::server::{reply, request, Backend, Error as BackendError, Extents, TxContext};
use nbd_core::server::{Payload, ZeroFlags};
use nbd_core::wire::consts::{allocation, tx_flags, CONTEXT_BASE_ALLOCATION};
use nbd_core::wire::request::{RequestHeader, EXTENDED_REQUEST_HEADER_LEN, REQUEST_HEADER_LEN};
use nbd_core::wire::{CmdFlags, Command};

const SIZE: u64 = 1 << 20;
/// The backend's allocation granularity.
const BLOCK: u64 = 4096;

// ---------------------------------------------------------------- backend

/// A RAM disk that remembers which blocks were trimmed or zeroed (they
/// read as zeroes and report as holes) and what it was asked to do.
struct MemBackend {
    inner: Mutex<Mem>,
    /// Fail fast zero requests with ENOTSUP (a backend that cannot zero
    /// quickly), to exercise FAST_ZERO's error path.
    slow_zero: bool,
}

struct Mem {
    data: Vec<u8>,
    hole: Vec<bool>,
    log: Vec<&'static str>,
}

impl MemBackend {
    fn new(slow_zero: bool) -> Self {
        // Start fully allocated with a recognisable pattern.
        let data = (0..SIZE).map(|i| (i % 251) as u8).collect();
        MemBackend {
            inner: Mutex::new(Mem {
                data,
                hole: vec![false; (SIZE / BLOCK) as usize],
                log: Vec::new(),
            }),
            slow_zero,
        }
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.inner.lock().unwrap()
    }

    /// Zeroes `[off, off+len)`; whole blocks inside it become holes.
    fn punch(&self, len: u32, off: u64) {
        let mut m = self.mem();
        let (s, e) = (off as usize, (off + u64::from(len)) as usize);
        m.data[s..e].fill(0);
        let first = off.div_ceil(BLOCK);
        let last = (off + u64::from(len)) / BLOCK;
        for b in first..last {
            m.hole[b as usize] = true;
        }
    }
}

impl Backend for MemBackend {
    fn size(&self) -> Result<u64, BackendError> {
        Ok(SIZE)
    }
    fn can_write(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn can_flush(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn can_fua(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn can_trim(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn can_zero(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn can_fast_zero(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn can_cache(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn can_extents(&self) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        let m = self.mem();
        let s = offset as usize;
        buf.copy_from_slice(&m.data[s..s + buf.len()]);
        Ok(())
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<(), BackendError> {
        let mut m = self.mem();
        let s = offset as usize;
        m.data[s..s + buf.len()].copy_from_slice(buf);
        for b in offset / BLOCK..(offset + buf.len() as u64).div_ceil(BLOCK) {
            m.hole[b as usize] = false;
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), BackendError> {
        self.mem().log.push("flush");
        Ok(())
    }
    fn trim(&self, count: u32, offset: u64, _fua: bool) -> Result<(), BackendError> {
        self.punch(count, offset);
        Ok(())
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<(), BackendError> {
        if flags.fast && self.slow_zero {
            return Err(BackendError::new(host::ENOTSUP, "no fast zero here"));
        }
        if flags.may_trim {
            self.punch(count, offset);
        } else {
            let mut m = self.mem();
            m.data[offset as usize..(offset + u64::from(count)) as usize].fill(0);
        }
        Ok(())
    }
    fn cache(&self, _count: u32, _offset: u64) -> Result<(), BackendError> {
        self.mem().log.push("cache");
        Ok(())
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<(), BackendError> {
        let m = self.mem();
        let end = offset + u64::from(count);
        let mut b = offset / BLOCK;
        while b * BLOCK < end {
            let flags = if m.hole[b as usize] {
                allocation::HOLE | allocation::ZERO
            } else {
                0
            };
            if !sink.add(b * BLOCK, BLOCK, flags)? {
                break;
            }
            b += 1;
        }
        Ok(())
    }
}

impl Exports for MemBackend {
    fn list(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(Vec::new(), b"in memory".to_vec())]
    }
    fn lookup(&self, _name: &[u8]) -> Result<ExportDetails, String> {
        Ok(ExportDetails {
            size: SIZE,
            caps: Caps::from_backend(self, false).map_err(|e| e.to_string())?,
            ..ExportDetails::default()
        })
    }
}

// ------------------------------------------------------------------ pipes

/// Where the pipes cut the stream.
#[derive(Clone, Copy, Debug)]
enum Split {
    Whole,
    OneByte,
    /// Pieces of 1..=max bytes, drawn from a xorshift generator.
    Random {
        seed: u64,
        max: usize,
    },
}

struct Cutter {
    split: Split,
    state: u64,
}

impl Cutter {
    fn new(split: Split) -> Self {
        let state = match split {
            Split::Random { seed, .. } => seed | 1,
            _ => 1,
        };
        Cutter { split, state }
    }

    /// How many of `avail` bytes move in one go.
    fn take(&mut self, avail: usize) -> usize {
        match self.split {
            Split::Whole => avail,
            Split::OneByte => avail.min(1),
            Split::Random { max, .. } => {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                avail.min(1 + (self.state % max as u64) as usize)
            }
        }
    }
}

// ------------------------------------------------------------------ server

/// The server's side of the connection, driven the way nbd-server-bin
/// drives it, but over byte queues.
struct Server {
    backend: MemBackend,
    neg: Negotiation,
    tx: Option<TxContext>,
    input: Vec<u8>,
    output: Vec<u8>,
    reply: Vec<u8>,
    extents: Extents,
    closed: bool,
}

impl Server {
    fn new(backend: MemBackend, config: negotiate::Config) -> Self {
        Server {
            backend,
            neg: Negotiation::new(config),
            tx: None,
            input: Vec::new(),
            output: Vec::new(),
            reply: Vec::new(),
            extents: Extents::new(),
            closed: false,
        }
    }

    /// Takes bytes from the client; returns how many it used (all of them,
    /// unless the connection closed).
    fn receive(&mut self, mut data: &[u8]) -> usize {
        let total = data.len();
        if self.tx.is_none() {
            let n = self.neg.feed(data, &self.backend);
            data = &data[n..];
            self.pump_negotiation();
        }
        if self.tx.is_some() && !self.closed {
            self.input.extend_from_slice(data);
            self.requests();
            data = &[];
        }
        total - data.len()
    }

    /// Bytes to send; call after `receive`, and once at the start.
    fn pump_negotiation(&mut self) {
        loop {
            let out = self.neg.output();
            if !out.is_empty() {
                let n = out.len();
                self.output.extend_from_slice(out);
                self.neg.output_done(n);
                continue;
            }
            match self.neg.want() {
                Want::Done => {
                    let n = self.neg.take_result().expect("negotiated");
                    self.tx = Some(TxContext::from_negotiated(&n));
                }
                Want::Closed => self.closed = true,
                Want::StartTls => panic!("no TLS in the pair harness"),
                Want::Read | Want::Write => {}
            }
            return;
        }
    }

    /// Runs every complete request in `input`.
    fn requests(&mut self) {
        let Some(t) = self.tx else { return };
        // The header's form is the negotiated one.
        let hlen = if t.extended_headers {
            EXTENDED_REQUEST_HEADER_LEN
        } else {
            REQUEST_HEADER_LEN
        };
        loop {
            if self.closed || self.input.len() < hlen {
                return;
            }
            let h = if t.extended_headers {
                RequestHeader::decode_extended(self.input[..hlen].try_into().unwrap())
            } else {
                RequestHeader::decode(self.input[..hlen].try_into().unwrap())
            };
            // A header of the wrong form or magic: hang up, as conn.rs does.
            let Ok(h) = h else {
                self.closed = true;
                return;
            };
            let plen = match request::payload(&h, &t) {
                Payload::None => 0,
                Payload::Receive(n) => n as usize,
                Payload::Discard(_) | Payload::Disconnect => {
                    panic!("client sent an oversized write")
                }
            };
            if self.input.len() < hlen + plen {
                return;
            }
            let mut data: Vec<u8> = self.input.drain(..hlen + plen).skip(hlen).collect();
            if h.command() == Command::Disc {
                self.closed = true;
                return;
            }
            // As conn.rs: a filtered BLOCK_STATUS runs as what its payload
            // stands for.
            let (h, valid) = match request::validate(&h, &t) {
                Ok(()) if h.command() == Command::BlockStatus && plen > 0 => {
                    match request::with_payload(&h, &data, &t) {
                        Ok(h2) => (h2, request::validate(&h2, &t)),
                        Err(e) => (h, Err(e)),
                    }
                }
                v => (h, v),
            };
            let result = valid.and_then(|()| {
                if h.command() == Command::Read {
                    data = vec![0; h.length as usize];
                }
                request::execute(&self.backend, &h, &mut data, &mut self.extents)
            });
            let with_data = reply::encode_reply(&mut self.reply, &h, &t, &result, &self.extents);
            self.output.extend_from_slice(&self.reply);
            if with_data {
                self.output.extend_from_slice(&data);
            }
        }
    }
}

// ------------------------------------------------------------------- pair

struct Pair {
    client: Client<Vec<u8>>,
    server: Server,
    /// Client to server, not yet taken by the server.
    c2s: VecDeque<u8>,
    /// Server to client, not yet taken by the client.
    s2c: VecDeque<u8>,
    cut: Cutter,
    events: Vec<Event<Vec<u8>>>,
}

impl Pair {
    fn new(split: Split, slow_zero: bool) -> Self {
        Pair::with(split, slow_zero, negotiate::Config::default())
    }

    fn with(split: Split, slow_zero: bool, server: negotiate::Config) -> Self {
        let config = client::Config {
            meta_contexts: vec![CONTEXT_BASE_ALLOCATION.as_bytes().to_vec()],
            ..client::Config::default()
        };
        let mut server = Server::new(MemBackend::new(slow_zero), server);
        server.pump_negotiation();
        Pair {
            client: Client::new(config),
            server,
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            cut: Cutter::new(split),
            events: Vec::new(),
        }
    }

    /// Moves bytes both ways, one cut at a time, until neither side has
    /// anything to say.
    fn drive(&mut self) {
        for _ in 0..10_000_000 {
            let mut moved = false;
            // Client writes (a short write when the cutter says so).
            if self.client.wants_write() {
                let mut slices = [IoSlice::new(&[]); 8];
                let n = self.client.send_bufs(&mut slices);
                let total = slices[..n].iter().map(|s| s.len()).sum();
                let k = self.cut.take(total);
                let bytes = slices[..n].iter().flat_map(|s| s.iter().copied()).take(k);
                self.c2s.extend(bytes);
                if k > 0 {
                    self.client.send_done(k);
                    moved = true;
                }
            }
            // Server reads.
            if !self.c2s.is_empty() && !self.server.closed {
                let k = self.cut.take(self.c2s.len());
                let piece: Vec<u8> = self.c2s.drain(..k).collect();
                let used = self.server.receive(&piece);
                assert_eq!(used, k, "server stopped reading mid-stream");
                moved = true;
            }
            self.s2c.extend(self.server.output.drain(..));
            // Client reads.
            if !self.s2c.is_empty() && self.client.wants_read() {
                let buf = self.client.recv_buf();
                let k = self.cut.take(self.s2c.len().min(buf.len()));
                for (dst, src) in buf[..k].iter_mut().zip(self.s2c.drain(..k)) {
                    *dst = src;
                }
                self.client.recv_done(k);
                moved = true;
            } else if self.s2c.is_empty() && self.server.closed && self.client.wants_read() {
                self.client.recv_done(0);
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("the pair never went quiet");
    }

    fn connect(&mut self) {
        self.drive();
        assert_eq!(
            self.client.phase(),
            Phase::Ready,
            "{:?}",
            self.client.fatal_error()
        );
    }

    /// Queues a command without driving.
    fn submit(&mut self, kind: Command, offset: u64, length: u64, buf: Vec<u8>) -> u64 {
        let c = client::Command::new(kind.to_wire(), 0, offset, length);
        self.client.submit(c, buf).map_err(|(e, _)| e).unwrap()
    }

    /// The commands completed so far, as (cookie, buffer, result).
    fn completions(&mut self) -> Vec<(u64, Vec<u8>, Result<(), client::Error>)> {
        let mut v = Vec::new();
        for e in self.events.drain(..) {
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

    /// Sends one command and drives until it completes.
    fn run(
        &mut self,
        kind: Command,
        flags: CmdFlags,
        offset: u64,
        length: u64,
        buf: Vec<u8>,
    ) -> Outcome {
        let c = client::Command::new(kind.to_wire(), flags.bits(), offset, length);
        let cookie = match self.client.submit(c, buf) {
            Ok(cookie) => cookie,
            Err((e, _)) => return Outcome::Refused(e.errno),
        };
        self.drive();
        let mut extents = Vec::new();
        let mut done = None;
        for e in self.events.drain(..) {
            match e {
                Event::BlockStatus {
                    cookie: c,
                    extents: x,
                    ..
                } if c == cookie => extents.extend(x),
                Event::Completed {
                    cookie: c,
                    ctx,
                    result,
                } if c == cookie => done = Some((ctx, result)),
                _ => {}
            }
        }
        let (ctx, result) = done.unwrap_or_else(|| panic!("{kind} did not complete"));
        match result {
            Err(e) => Outcome::Failed(e.errno),
            Ok(()) if kind == Command::Read => Outcome::Data(ctx),
            Ok(()) if kind == Command::BlockStatus => Outcome::Extents(extents),
            Ok(()) => Outcome::Ok,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Data(Vec<u8>),
    Extents(Vec<(u64, u64)>),
    /// The server answered with this errno.
    Failed(i32),
    /// The client refused to send it.
    Refused(i32),
}

/// Every command through both machines; returns what the client saw and
/// the backend's final state.
/// With `extended` the two speak extended headers, else structured replies:
/// the outcomes must be the same.
fn session(
    split: Split,
    slow_zero: bool,
    extended: bool,
) -> (Vec<Outcome>, Vec<u8>, Vec<&'static str>) {
    let server = negotiate::Config {
        no_extended_headers: !extended,
        ..negotiate::Config::default()
    };
    let mut p = Pair::with(split, slow_zero, server);
    p.connect();
    assert_eq!(p.client.protocol(), Some(Protocol::FixedNewstyle));
    let e = p.client.export().unwrap().clone();
    assert_eq!(e.size, SIZE);
    assert!(e.structured_replies);
    assert_eq!(e.extended_headers, extended);
    assert_eq!(e.meta_contexts, vec![(1, b"base:allocation".to_vec())]);
    for f in [
        tx_flags::SEND_FLUSH,
        tx_flags::SEND_FUA,
        tx_flags::SEND_TRIM,
        tx_flags::SEND_WRITE_ZEROES,
        tx_flags::SEND_FAST_ZERO,
        tx_flags::SEND_CACHE,
        tx_flags::SEND_DF,
    ] {
        assert!(e.has_flag(f), "flag {f:#x} missing");
    }
    let none = CmdFlags::empty();
    let pattern: Vec<u8> = (0..3 * BLOCK).map(|i| (i * 7 % 256) as u8).collect();
    let mut out = vec![
        p.run(Command::Read, none, 0, 512, vec![0; 512]),
        p.run(
            Command::Write,
            CmdFlags::FUA,
            BLOCK,
            pattern.len() as u64,
            pattern.clone(),
        ),
        p.run(
            Command::Read,
            CmdFlags::DF,
            BLOCK,
            pattern.len() as u64,
            vec![0; pattern.len()],
        ),
        p.run(Command::Flush, none, 0, 0, Vec::new()),
        p.run(Command::Trim, none, 8 * BLOCK, 2 * BLOCK, Vec::new()),
        p.run(Command::WriteZeroes, none, 16 * BLOCK, BLOCK, Vec::new()),
        p.run(
            Command::WriteZeroes,
            CmdFlags::NO_HOLE,
            20 * BLOCK,
            100,
            Vec::new(),
        ),
        p.run(
            Command::WriteZeroes,
            CmdFlags::FAST_ZERO,
            24 * BLOCK,
            BLOCK,
            Vec::new(),
        ),
        p.run(Command::Cache, none, 0, 4 * BLOCK, Vec::new()),
        p.run(
            Command::BlockStatus,
            none,
            6 * BLOCK,
            12 * BLOCK,
            Vec::new(),
        ),
        p.run(
            Command::BlockStatus,
            CmdFlags::REQ_ONE,
            8 * BLOCK,
            4 * BLOCK,
            Vec::new(),
        ),
        p.run(Command::Read, none, 8 * BLOCK - 4, 8, vec![0; 8]),
        // Refused by the client (strict mode) and never sent.
        p.run(Command::Read, none, SIZE - 4, 8, vec![0; 8]),
        // A large read, received straight into the caller's buffer.
        p.run(Command::Read, none, 0, 64 * 1024, vec![0; 64 * 1024]),
    ];
    // Requests the client would refuse, sent with strict mode off so the
    // server's validation answers them.
    p.client.config_mut().strict = 0;
    out.push(p.run(Command::Write, none, SIZE - 4, 8, vec![1; 8]));
    out.push(p.run(Command::Read, CmdFlags::FAST_ZERO, 0, 8, vec![0; 8]));
    out.push(p.run(Command::Unknown(42), none, 0, 0, Vec::new()));
    // More than 4 GiB: only extended headers carry it to the server, which
    // finds it past the end; without them the client cannot send it.
    out.push(p.run(Command::Trim, none, 0, 5 << 30, Vec::new()));
    p.client.disconnect().unwrap();
    p.drive();
    assert_eq!(p.client.phase(), Phase::Closed);
    assert!(p.server.closed);
    let m = p.server.backend.mem();
    (out, m.data.clone(), m.log.clone())
}

fn splits() -> Vec<Split> {
    let mut v = vec![Split::Whole, Split::OneByte];
    for seed in [1, 0x5eed, 0xdead_beef, 42] {
        for max in [3, 17, 700] {
            v.push(Split::Random { seed, max });
        }
    }
    v
}

#[test]
fn every_command_through_both_machines() {
    let (out, data, log) = session(Split::Whole, false, false);
    let pattern: Vec<u8> = (0..3 * BLOCK).map(|i| (i * 7 % 256) as u8).collect();
    let initial = |i: u64| (i % 251) as u8;
    assert_eq!(out[0], Outcome::Data((0..512).map(initial).collect()));
    assert_eq!(out[1], Outcome::Ok);
    assert_eq!(out[2], Outcome::Data(pattern.clone()));
    assert_eq!(out[3], Outcome::Ok);
    assert_eq!(out[4], Outcome::Ok);
    assert_eq!(out[5], Outcome::Ok);
    assert_eq!(out[6], Outcome::Ok);
    assert_eq!(out[7], Outcome::Ok);
    assert_eq!(out[8], Outcome::Ok);
    let hz = allocation::HOLE | allocation::ZERO;
    let hz = u64::from(hz);
    let b = BLOCK;
    assert_eq!(
        out[9],
        Outcome::Extents(vec![(2 * b, 0), (2 * b, hz), (6 * b, 0), (b, hz), (b, 0)])
    );
    assert_eq!(out[10], Outcome::Extents(vec![(2 * b, hz)]));
    assert_eq!(
        out[11],
        Outcome::Data(vec![
            initial(8 * BLOCK - 4),
            initial(8 * BLOCK - 3),
            initial(8 * BLOCK - 2),
            initial(8 * BLOCK - 1),
            0,
            0,
            0,
            0
        ])
    );
    assert_eq!(out[12], Outcome::Refused(host::EINVAL));
    let Outcome::Data(big) = &out[13] else {
        panic!("{:?}", out[13])
    };
    assert_eq!(&big[BLOCK as usize..4 * BLOCK as usize], &pattern[..]);
    assert_eq!(big[8 * BLOCK as usize], 0);
    assert_eq!(out[14], Outcome::Failed(host::ENOSPC));
    assert_eq!(out[15], Outcome::Failed(host::EINVAL));
    // The client never sends an unknown command (see
    // server_answers_unknown_commands_with_einval for the server's side).
    assert_eq!(out[16], Outcome::Refused(host::EINVAL));
    assert_eq!(out[17], Outcome::Refused(host::ERANGE));

    assert_eq!(&data[BLOCK as usize..4 * BLOCK as usize], &pattern[..]);
    assert!(data[16 * BLOCK as usize..17 * BLOCK as usize]
        .iter()
        .all(|&x| x == 0));
    assert!(data[20 * BLOCK as usize..20 * BLOCK as usize + 100]
        .iter()
        .all(|&x| x == 0));
    assert_eq!(data[20 * BLOCK as usize + 100], initial(20 * BLOCK + 100));
    assert!(data[24 * BLOCK as usize..25 * BLOCK as usize]
        .iter()
        .all(|&x| x == 0));
    assert_eq!(log, vec!["flush", "cache"]);
}

#[test]
fn fast_zero_failure_is_enotsup() {
    let (out, data, _) = session(Split::Whole, true, true);
    assert_eq!(out[7], Outcome::Failed(host::ENOTSUP));
    assert_eq!(data[24 * BLOCK as usize], (24 * BLOCK % 251) as u8);
}

#[test]
fn byte_splits_give_the_same_results() {
    let reference = session(Split::Whole, false, false);
    for split in splits() {
        let got = session(split, false, false);
        assert!(got.0 == reference.0, "outcomes differ with {split:?}");
        assert!(
            got.1 == reference.1,
            "backend contents differ with {split:?}"
        );
        assert_eq!(got.2, reference.2, "backend calls differ with {split:?}");
    }
}

/// An outcome for a message: data is shown by its length only.
fn short(o: &Outcome) -> String {
    match o {
        Outcome::Data(d) => format!("Data({} bytes)", d.len()),
        o => format!("{o:?}"),
    }
}

#[test]
fn extended_headers_give_the_same_results_at_every_split() {
    let (mut reference, data, log) = session(Split::Whole, false, false);
    // The one difference: a trim over 4 GiB reaches the server, which
    // refuses it as past the end (EINVAL, nbdkit's errno for any command
    // but a write or zero out of range), instead of being refused by the
    // client.
    assert_eq!(reference[17], Outcome::Refused(host::ERANGE));
    reference[17] = Outcome::Failed(host::EINVAL);
    let reference = (reference, data, log);
    for split in [Split::Whole, Split::OneByte].into_iter().chain(splits()) {
        let got = session(split, false, true);
        let differ: Vec<String> = got
            .0
            .iter()
            .zip(&reference.0)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("#{i}: {:?} not {:?}", short(a), short(b)))
            .collect();
        assert!(
            got.0 == reference.0,
            "outcomes differ with {split:?}: {differ:?}"
        );
        assert!(
            got.1 == reference.1,
            "backend contents differ with {split:?}"
        );
        assert_eq!(got.2, reference.2, "backend calls differ with {split:?}");
    }
}

#[test]
fn server_answers_unknown_commands_with_einval() {
    let server = negotiate::Config {
        no_extended_headers: true,
        ..negotiate::Config::default()
    };
    let mut p = Pair::with(Split::Whole, false, server);
    p.connect();
    // Straight to the server, behind the client's back.
    let h = RequestHeader {
        flags: 0,
        kind: 42,
        cookie: 0x1234,
        offset: 0,
        length: 0,
    };
    assert_eq!(p.server.receive(&h.encode()), REQUEST_HEADER_LEN);
    let out: Vec<u8> = p.server.output.drain(..).collect();
    let start: &[u8; 16] = out[..16].try_into().unwrap();
    match nbd_core::wire::reply::parse_reply_start(start).unwrap() {
        nbd_core::wire::reply::ReplyStart::Simple { error, cookie } => {
            assert_eq!((error, cookie), (host::EINVAL as u32, 0x1234));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.len(), 16);
}

#[test]
fn extended_server_answers_everything_with_chunks() {
    use nbd_core::wire::consts::chunk;
    use nbd_core::wire::reply::parse_extended_reply_header;
    let mut p = Pair::new(Split::Whole, false);
    p.connect();
    assert!(p.client.extended_headers());
    // An unknown command, then a compact header, behind the client's back.
    let h = RequestHeader {
        flags: 0,
        kind: 42,
        cookie: 0x1234,
        offset: 77,
        length: 0,
    };
    let b = h.encode_extended();
    assert_eq!(p.server.receive(&b), EXTENDED_REQUEST_HEADER_LEN);
    let out: Vec<u8> = p.server.output.drain(..).collect();
    let r = parse_extended_reply_header(out[..32].try_into().unwrap()).unwrap();
    assert_eq!((r.kind, r.cookie, r.offset), (chunk::ERROR, 0x1234, 77));
    let e = nbd_core::wire::reply::parse_error_chunk(r.kind, &out[32..]).unwrap();
    assert_eq!(e.error, host::EINVAL as u32);
    // proto.md: a compact header now is a broken client: the server hangs
    // up rather than guess where the next request starts.
    let mut compact = h.encode().to_vec();
    compact.extend_from_slice(&[0; 4]);
    p.server.receive(&compact);
    assert!(p.server.closed);
    assert!(p.server.output.is_empty());
}

/// A write, then 16 reads in flight at once, with simple or structured
/// replies (moved here from the scripted server's tests).
fn round_trip(split: Split, structured: bool) {
    let server = negotiate::Config {
        no_structured_replies: !structured,
        ..negotiate::Config::default()
    };
    let mut p = Pair::with(split, false, server);
    p.connect();
    assert_eq!(p.client.export().unwrap().structured_replies, structured);
    let pattern: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let w = p.submit(Command::Write, 4096, 65536, pattern.clone());
    p.drive();
    let done = p.completions();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, w);
    assert!(done[0].2.is_ok());
    let mut cookies = Vec::new();
    for i in 0..16u64 {
        cookies.push(p.submit(Command::Read, 4096 + i * 4096, 4096, vec![0xaa; 4096]));
    }
    assert_eq!(p.client.in_flight(), 16);
    p.drive();
    let done = p.completions();
    assert_eq!(done.len(), 16);
    for (cookie, buf, result) in done {
        result.unwrap();
        let i = cookies.iter().position(|c| *c == cookie).unwrap();
        assert_eq!(buf, pattern[i * 4096..(i + 1) * 4096], "read {i}");
    }
    assert_eq!(p.client.phase(), Phase::Ready);
}

#[test]
fn write_then_read_back_with_simple_replies() {
    round_trip(Split::Whole, false);
    round_trip(Split::OneByte, false);
    round_trip(Split::Random { seed: 7, max: 5 }, false);
}

#[test]
fn write_then_read_back_with_structured_replies() {
    round_trip(Split::Whole, true);
    round_trip(Split::OneByte, true);
    round_trip(Split::Random { seed: 7, max: 5 }, true);
}

#[test]
fn large_read_lands_in_callers_buffer() {
    let mut p = Pair::new(Split::Whole, false);
    p.connect();
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();
    p.submit(Command::Write, 0, SIZE, data.clone());
    p.drive();
    p.completions();
    p.submit(Command::Read, 0, SIZE, vec![0; SIZE as usize]);
    p.drive();
    let done = p.completions();
    assert!(done[0].1 == data);
}

#[test]
fn disconnect_closes_cleanly() {
    let mut p = Pair::new(Split::Random { seed: 3, max: 4 }, false);
    p.connect();
    p.submit(Command::Flush, 0, 0, Vec::new());
    p.client.disconnect().unwrap();
    p.drive();
    assert_eq!(p.completions().len(), 1);
    assert!(p.client.disconnect_sent());
    assert_eq!(p.client.phase(), Phase::Closed);
    assert!(p.server.closed);
    let c = client::Command::new(Command::Flush.to_wire(), 0, 0, 0);
    let e = p.client.submit(c, Vec::new()).unwrap_err();
    assert_eq!(e.0.errno, host::EINVAL);
}

#[test]
fn filtered_block_status_with_extended_headers() {
    for split in [
        Split::Whole,
        Split::OneByte,
        Split::Random { seed: 9, max: 5 },
    ] {
        let mut p = Pair::new(split, false);
        p.connect();
        let e = p.client.export().unwrap();
        assert!(e.has_flag(tx_flags::BLOCK_STATUS_PAYLOAD));
        p.run(Command::Trim, CmdFlags::empty(), 0, 2 * BLOCK, Vec::new());
        let c = client::Command::new(Command::BlockStatus.to_wire(), 0, 0, 4 * BLOCK);
        let cookie = p
            .client
            .submit_block_status_filter(c, &[1], Vec::new())
            .map_err(|(e, _)| e)
            .unwrap();
        p.drive();
        let mut extents = Vec::new();
        let mut ok = false;
        for ev in p.events.drain(..) {
            match ev {
                Event::BlockStatus { extents: x, .. } => extents.extend(x),
                Event::Completed {
                    cookie: c, result, ..
                } if c == cookie => ok = result.is_ok(),
                _ => {}
            }
        }
        assert!(ok);
        let hz = u64::from(allocation::HOLE | allocation::ZERO);
        assert_eq!(extents, vec![(2 * BLOCK, hz), (2 * BLOCK, 0)]);
        // An id that was not negotiated is refused before anything is sent.
        let c = client::Command::new(Command::BlockStatus.to_wire(), 0, 0, 4 * BLOCK);
        let e = p
            .client
            .submit_block_status_filter(c, &[7], Vec::new())
            .unwrap_err()
            .0;
        assert_eq!(e.errno, host::EINVAL);
    }
    // Without extended headers there is no payload to filter with.
    let server = negotiate::Config {
        no_extended_headers: true,
        ..negotiate::Config::default()
    };
    let mut p = Pair::with(Split::Whole, false, server);
    p.connect();
    assert!(!p
        .client
        .export()
        .unwrap()
        .has_flag(tx_flags::BLOCK_STATUS_PAYLOAD));
    let c = client::Command::new(Command::BlockStatus.to_wire(), 0, 0, BLOCK);
    let e = p
        .client
        .submit_block_status_filter(c, &[1], Vec::new())
        .unwrap_err()
        .0;
    assert_eq!(e.errno, host::ENOTSUP);
}
