//! The client's state and its byte plumbing: where received bytes go, what
//! is sent next, and how the phase is derived.
//!
//! Receiving works on two kinds of need. A *header* need is a fixed number
//! of bytes the parser wants to see together (a reply header, an option
//! reply header); they collect in `rbuf`. A *payload* need moves a known
//! number of bytes to a destination: the caller's buffer of a READ, the
//! scratch buffer of a chunk we must parse whole, or nowhere.
//!
//! In the transmission phase `rbuf` is filled as far as it goes, so one
//! `recv` may carry many small replies; a large READ payload is received
//! straight into the caller's buffer instead. During negotiation we read
//! exactly what the step needs, so nothing past the handshake is consumed
//! before the state that should see it: after NBD_OPT_STARTTLS's ACK not
//! one byte of the TLS handshake has been read in plain text.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::{CommandBuffer, Config, Error, Event, ExportInfo, Phase, Protocol};
use crate::errno::host::{ECONNRESET, ENOTCONN, EPROTO};
use crate::wire::reply::ChunkHeader;
use crate::wire::request::{EncodedRequest, EXTENDED_REQUEST_HEADER_LEN};
use crate::wire::ChunkType;
use crate::wire::WireError;

/// Size of the read-ahead buffer once commands are in flight.
pub(super) const RBUF_SIZE: usize = 64 * 1024;
/// Size of the read-ahead buffer until then. Handshake replies are read a
/// header at a time (their payloads go to `scratch`), and a connection that
/// only connects and disconnects never needs more, so it never pays for
/// allocating and zeroing the large buffer.
const RBUF_HANDSHAKE_SIZE: usize = 512;
const _: () = assert!(
    RBUF_HANDSHAKE_SIZE >= MAX_HEADER_NEED && RBUF_HANDSHAKE_SIZE >= EXTENDED_REQUEST_HEADER_LEN
);
/// A READ payload at least this large (with nothing buffered) is received
/// straight into the caller's buffer; below it, batching replies saves more
/// system calls than the copy costs.
const DIRECT_READ_MIN: usize = 16 * 1024;
/// The largest fixed-size piece a parse step needs at once: the rest of an
/// oldstyle greeting.
const MAX_HEADER_NEED: usize = crate::wire::handshake::OLDSTYLE_REST_LEN;

/// The client's stage, holding what is valid in it. Transmission holds the
/// export's facts as negotiated; there is no export outside it but what an
/// option-mode NBD_OPT_INFO reported.
#[derive(Debug)]
pub(super) enum Stage {
    /// Greeting and options.
    Negotiating {
        /// The export's facts gathered so far, for GO or INFO.
        pending: ExportInfo,
        /// Whether the server sent the export's size and flags.
        got_size: bool,
        /// What NBD_OPT_INFO reported (option mode), until GO or the next
        /// INFO replaces it.
        info: Option<ExportInfo>,
    },
    /// Transmission, with the export's facts.
    Transmission(ExportInfo),
}

impl Stage {
    pub(super) fn negotiating() -> Stage {
        Stage::Negotiating {
            pending: ExportInfo::default(),
            got_size: false,
            info: None,
        }
    }

    /// The export's facts: gathered so far, or negotiated.
    pub(super) fn facts(&self) -> &ExportInfo {
        match self {
            Stage::Negotiating { pending, .. } => pending,
            Stage::Transmission(e) => e,
        }
    }

    pub(super) fn facts_mut(&mut self) -> &mut ExportInfo {
        match self {
            Stage::Negotiating { pending, .. } => pending,
            Stage::Transmission(e) => e,
        }
    }

    /// The export, once in transmission.
    pub(super) fn transmission(&self) -> Option<&ExportInfo> {
        match self {
            Stage::Negotiating { .. } => None,
            Stage::Transmission(e) => Some(e),
        }
    }
}

/// What the receive side is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rx {
    /// `need` bytes in `rbuf`, then `step` parses them.
    Header { need: usize, step: Step },
    /// `remaining` bytes to move to `dest`, then `then` runs.
    Payload {
        dest: Dest,
        remaining: usize,
        then: Step,
    },
    /// Nothing to receive (dead, closed, or only writing).
    Idle,
}

/// Where payload bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dest {
    /// The read buffer of command `cookie`, from byte `pos`.
    Caller { cookie: u64, pos: usize },
    /// `scratch`, which was sized for the payload.
    Scratch,
}

/// The parse step that runs once a need is met: a negotiation step
/// (negotiate.rs) or a transmission step (receive.rs). Each module's step
/// function takes only its own kind, so neither can be handed the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Negotiate(NegStep),
    Reply(ReplyStep),
}

/// The steps of the handshake and option haggling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NegStep {
    GreetingPrefix,
    NewstyleFlags,
    OldstyleRest,
    OptionReplyHeader,
    OptionReplyPayload,
    ExportNameReply,
    ExportNameZeroes,
}

/// The steps of receiving replies in the transmission phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplyStep {
    ReplyStart,
    /// A whole 32-byte extended reply header.
    ExtendedReplyStart,
    ChunkLength,
    DataOffset,
    ReadDataDone,
    ChunkPayloadDone,
    SimpleReadDone,
}

impl From<NegStep> for Step {
    fn from(s: NegStep) -> Step {
        Step::Negotiate(s)
    }
}

impl From<ReplyStep> for Step {
    fn from(s: ReplyStep) -> Step {
        Step::Reply(s)
    }
}

/// Which buffer the last `recv_buf` handed out, so `recv_done` knows
/// where the bytes landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvTarget {
    Rbuf,
    Caller,
    Scratch,
    None,
}

/// Hashes cookies for the in-flight table. Cookies are ours (sequential
/// from 1), so SipHash's protection buys nothing; a multiplicative hash
/// spreads them over the table for a few cycles per reply. A server only
/// chooses which key we look up, never what goes in the table.
#[derive(Default)]
pub struct CookieHasher(u64);

impl Hasher for CookieHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type CookieMap<V> = HashMap<u64, V, BuildHasherDefault<CookieHasher>>;

/// A command between submit and completion.
pub(super) struct InFlight<C> {
    pub(super) kind: u16,
    pub(super) offset: u64,
    pub(super) length: u64,
    pub(super) report_chunks: bool,
    pub(super) header: EncodedRequest,
    /// What follows the header besides a WRITE's data: the payload of a
    /// filtered BLOCK_STATUS (empty otherwise).
    pub(super) payload: Vec<u8>,
    pub(super) ctx: C,
    /// Whether the request has gone out whole (a reply before that is a
    /// hostile server's).
    pub(super) sent: bool,
    /// The first error the server reported for it.
    pub(super) error: Option<Error>,
    /// READ: bytes of data and holes received so far. proto.md forbids
    /// overlapping chunks, so more than the request's length is a server
    /// that would otherwise keep us busy for ever.
    pub(super) covered: u64,
    /// BLOCK_STATUS: the context ids already answered; each may answer
    /// once (proto.md: one chunk per negotiated context).
    pub(super) answered: Vec<u32>,
}

/// Where the connection stands with TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsState {
    /// No STARTTLS sent (yet, or ever: TLS disabled, or a server that
    /// cannot negotiate options).
    #[default]
    NotTried,
    /// The server acknowledged STARTTLS: the driver must run the TLS
    /// handshake now, then call [`Client::tls_handshake_done`].
    Handshake,
    /// TLS is up: everything since the handshake went through it.
    Active,
    /// The server refused STARTTLS and TLS was only allowed: plain text.
    Refused,
}

/// The NBD client state machine. See the module documentation of
/// [`crate::client`] for how a driver uses it.
pub struct Client<C> {
    pub(super) config: Config,
    pub(super) fatal: Option<Error>,
    pub(super) closed: bool,
    /// After NBD_CMD_DISC: wait for the server to hang up (true, as libnbd
    /// does on a plain socket) or count the connection closed as soon as
    /// the request and every reply are through (false).
    pub(super) wait_for_server_close: bool,
    pub(super) protocol: Option<Protocol>,
    /// Negotiating or transmitting, with what each stage knows.
    pub(super) stage: Stage,
    pub(super) negotiation: super::negotiate::Negotiation,
    pub(super) tls: TlsState,

    // Receive side.
    pub(super) rx: Rx,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    pub(super) scratch: Vec<u8>,
    recv_target: RecvTarget,

    // Send side.
    /// Negotiation bytes not yet sent, from `out_pos`.
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    /// Cookies of commands not yet wholly sent, in order.
    pub(super) send_queue: VecDeque<u64>,
    /// Bytes of the front command already sent.
    pub(super) send_pos: usize,

    // Commands.
    pub(super) cmds: CookieMap<InFlight<C>>,
    pub(super) next_cookie: u64,
    pub(super) events: VecDeque<Event<C>>,
    /// NBD_CMD_DISC, once asked for.
    pub(super) disc: super::commands::Disc,
    /// The structured chunk being received (for a simple reply to a READ,
    /// only its cookie matters).
    pub(super) chunk: ChunkHeader,
    /// Bytes and chunks each way, for nbd_stats_*.
    pub(super) stats: super::stats::Stats,
}

impl<C: CommandBuffer> Client<C> {
    /// A client about to read the server's greeting.
    pub fn new(config: Config) -> Self {
        Client {
            config,
            fatal: None,
            closed: false,
            wait_for_server_close: false,
            protocol: None,
            stage: Stage::negotiating(),
            negotiation: Default::default(),
            tls: TlsState::NotTried,
            rx: Rx::Header {
                need: crate::wire::handshake::GREETING_PREFIX_LEN,
                step: Step::Negotiate(NegStep::GreetingPrefix),
            },
            rbuf: vec![0u8; RBUF_HANDSHAKE_SIZE].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            scratch: Vec::new(),
            recv_target: RecvTarget::None,
            out: Vec::new(),
            out_pos: 0,
            send_queue: VecDeque::new(),
            send_pos: 0,
            cmds: CookieMap::default(),
            next_cookie: 1,
            events: VecDeque::new(),
            disc: Default::default(),
            chunk: ChunkHeader {
                flags: 0,
                kind: ChunkType::None,
                cookie: 0,
                length: 0,
            },
            stats: Default::default(),
        }
    }

    /// The bytes the client holds in buffers of its own (not the
    /// commands' buffers, which are the driver's).
    pub fn buffer_capacity(&self) -> usize {
        self.rbuf.len() + self.scratch.capacity() + self.out.capacity()
    }

    /// Bytes and chunks sent and received so far.
    pub fn stats(&self) -> super::stats::Stats {
        self.stats
    }

    /// The connection's phase, derived from the state (never stored, so it
    /// cannot disagree with it).
    pub fn phase(&self) -> Phase {
        if self.fatal.is_some() {
            Phase::Dead
        } else if self.closed {
            Phase::Closed
        } else if !self.in_transmission() {
            if self.negotiation.paused {
                Phase::Negotiating
            } else {
                Phase::Connecting
            }
        } else if self.cmds.is_empty() {
            Phase::Ready
        } else {
            Phase::Processing
        }
    }

    /// Whether negotiation is over.
    pub(super) fn in_transmission(&self) -> bool {
        matches!(self.stage, Stage::Transmission(_))
    }

    /// Where the connection stands with TLS.
    pub fn tls_state(&self) -> TlsState {
        self.tls
    }

    /// "Start TLS now": the server acknowledged NBD_OPT_STARTTLS. The
    /// client neither reads nor writes until the driver has run the TLS
    /// handshake on the socket and called [`Client::tls_handshake_done`]
    /// (or [`Client::fail`]). From then on every byte the client hands
    /// out or takes in is plain text inside TLS records.
    pub fn tls_handshake_wanted(&self) -> bool {
        self.is_live() && self.tls == TlsState::Handshake
    }

    /// Whether TLS was negotiated (nbd_get_tls_negotiated).
    pub fn tls_negotiated(&self) -> bool {
        self.tls == TlsState::Active
    }

    /// Bytes received and not yet parsed.
    pub(super) fn buffered(&self) -> usize {
        self.rend - self.rstart
    }

    /// Why the connection died, if it did.
    pub fn fatal_error(&self) -> Option<&Error> {
        self.fatal.as_ref()
    }

    /// The handshake style the server used, once known.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// What negotiation learnt, once it finished.
    pub fn export(&self) -> Option<&ExportInfo> {
        match &self.stage {
            Stage::Negotiating { info, .. } => info.as_ref(),
            Stage::Transmission(e) => Some(e),
        }
    }

    /// Whether the server agreed to structured replies (known once the
    /// STRUCTURED_REPLY option is answered, so also while negotiating).
    pub fn structured_replies(&self) -> bool {
        self.stage.facts().structured_replies
    }

    /// The configuration negotiation uses.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes the configuration. In option mode the export name and meta
    /// contexts may change between options; the driver decides which
    /// settings may change in which phase, as libnbd's API does.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// Commands submitted and not yet completed (including unsent ones).
    pub fn in_flight(&self) -> usize {
        self.cmds.len()
    }

    /// Whether the client has bytes to send.
    pub fn wants_write(&self) -> bool {
        self.is_live()
            && (self.out_pos < self.out.len()
                || !self.send_queue.is_empty()
                || self.disc.is_pending())
    }

    /// Whether the client is waiting for bytes from the server. In the
    /// transmission phase this is always true while the connection lives,
    /// so a server's hang-up is noticed even when nothing is in flight.
    pub fn wants_read(&self) -> bool {
        self.is_live() && !matches!(self.rx, Rx::Idle)
    }

    fn is_live(&self) -> bool {
        self.fatal.is_none() && !self.closed
    }

    /// The next completion or chunk, oldest first.
    pub fn poll_event(&mut self) -> Option<Event<C>> {
        self.events.pop_front()
    }

    // ---- receiving ----

    /// Where the driver's next `recv` should put its bytes. Empty only when
    /// the client does not want to read.
    pub fn recv_buf(&mut self) -> &mut [u8] {
        if !self.is_live() {
            self.recv_target = RecvTarget::None;
            return &mut [];
        }
        if self.rbuf.len() < RBUF_SIZE && self.in_transmission() && !self.cmds.is_empty() {
            self.grow_rbuf();
        }
        match self.rx {
            Rx::Idle => {
                self.recv_target = RecvTarget::None;
                &mut []
            }
            Rx::Header { need, .. } => {
                self.make_room(need);
                let limit = if self.in_transmission() {
                    self.rbuf.len()
                } else {
                    self.rstart + need
                };
                self.recv_target = RecvTarget::Rbuf;
                &mut self.rbuf[self.rend..limit]
            }
            Rx::Payload {
                dest, remaining, ..
            } => match dest {
                Dest::Caller { cookie, pos }
                    if !self.in_transmission() || remaining >= DIRECT_READ_MIN =>
                {
                    self.recv_target = RecvTarget::Caller;
                    match self.cmds.get_mut(&cookie) {
                        Some(c) => &mut c.ctx.read_buf()[pos..pos + remaining],
                        None => &mut [],
                    }
                }
                Dest::Scratch if !self.in_transmission() || remaining >= DIRECT_READ_MIN => {
                    let filled = self.scratch.len() - remaining;
                    self.recv_target = RecvTarget::Scratch;
                    &mut self.scratch[filled..]
                }
                _ => {
                    self.make_room(1);
                    let limit = if self.in_transmission() {
                        self.rbuf.len()
                    } else {
                        (self.rend + remaining).min(self.rbuf.len())
                    };
                    self.recv_target = RecvTarget::Rbuf;
                    &mut self.rbuf[self.rend..limit]
                }
            },
        }
    }

    /// Replaces the handshake's small read-ahead buffer with the large one,
    /// keeping what it holds.
    fn grow_rbuf(&mut self) {
        let mut big = vec![0u8; RBUF_SIZE].into_boxed_slice();
        let held = self.rend - self.rstart;
        big[..held].copy_from_slice(&self.rbuf[self.rstart..self.rend]);
        self.rbuf = big;
        self.rstart = 0;
        self.rend = held;
    }

    /// Moves buffered bytes to the front so that `need` more fit.
    fn make_room(&mut self, need: usize) {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rbuf.len() - self.rstart < need.max(EXTENDED_REQUEST_HEADER_LEN)
            || self.rend == self.rbuf.len()
        {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
    }

    /// The driver received `n` bytes into the last [`Client::recv_buf`].
    /// `n == 0` means the server closed the connection.
    pub fn recv_done(&mut self, n: usize) {
        if !self.is_live() {
            return;
        }
        self.stats.bytes_received += n as u64;
        if n == 0 {
            self.on_eof();
            return;
        }
        match std::mem::replace(&mut self.recv_target, RecvTarget::None) {
            RecvTarget::Rbuf => self.rend += n,
            RecvTarget::Caller => {
                if let Rx::Payload {
                    dest: Dest::Caller { cookie, pos },
                    remaining,
                    then,
                } = self.rx
                {
                    self.rx = Rx::Payload {
                        dest: Dest::Caller {
                            cookie,
                            pos: pos + n,
                        },
                        remaining: remaining - n,
                        then,
                    };
                }
            }
            RecvTarget::Scratch => {
                if let Rx::Payload {
                    dest,
                    remaining,
                    then,
                } = self.rx
                {
                    self.rx = Rx::Payload {
                        dest,
                        remaining: remaining - n,
                        then,
                    };
                }
            }
            RecvTarget::None => return,
        }
        self.process();
    }

    /// Runs parse steps for as long as their needs are met.
    fn process(&mut self) {
        while self.is_live() {
            match self.rx {
                Rx::Idle => break,
                Rx::Header { need, step } => {
                    if self.rend - self.rstart < need {
                        break;
                    }
                    let mut hdr = [0u8; MAX_HEADER_NEED];
                    hdr[..need].copy_from_slice(&self.rbuf[self.rstart..self.rstart + need]);
                    self.rstart += need;
                    self.run_step(step, &hdr[..need]);
                }
                Rx::Payload {
                    dest,
                    remaining,
                    then,
                } => {
                    if remaining > 0 {
                        let avail = self.rend - self.rstart;
                        if avail == 0 {
                            break;
                        }
                        let n = avail.min(remaining);
                        let src = self.rstart..self.rstart + n;
                        let dest = match dest {
                            Dest::Caller { cookie, pos } => {
                                if let Some(c) = self.cmds.get_mut(&cookie) {
                                    c.ctx.read_buf()[pos..pos + n].copy_from_slice(&self.rbuf[src]);
                                }
                                Dest::Caller {
                                    cookie,
                                    pos: pos + n,
                                }
                            }
                            Dest::Scratch => {
                                let filled = self.scratch.len() - remaining;
                                self.scratch[filled..filled + n].copy_from_slice(&self.rbuf[src]);
                                Dest::Scratch
                            }
                        };
                        self.rstart += n;
                        self.rx = Rx::Payload {
                            dest,
                            remaining: remaining - n,
                            then,
                        };
                        continue;
                    }
                    self.run_step(then, &[]);
                }
            }
        }
    }

    fn run_step(&mut self, step: Step, bytes: &[u8]) {
        let r = match step {
            Step::Negotiate(s) => self.negotiate_step(s, bytes),
            Step::Reply(s) => self.reply_step(s, bytes),
        };
        if let Err(e) = r {
            self.die(e);
        }
    }

    /// Waits for `need` header bytes, then runs `step`.
    pub(super) fn expect(&mut self, need: usize, step: impl Into<Step>) {
        self.rx = Rx::Header {
            need,
            step: step.into(),
        };
    }

    /// Moves `len` bytes to `dest`, then runs `then`.
    pub(super) fn expect_payload(&mut self, dest: Dest, len: usize, then: impl Into<Step>) {
        let then: Step = then.into();
        if matches!(dest, Dest::Scratch) {
            // Sized up front: bytes fill it from `len - remaining` on.
            self.scratch.clear();
            self.scratch.resize(len, 0);
        }
        self.rx = Rx::Payload {
            dest,
            remaining: len,
            then,
        };
    }

    fn on_eof(&mut self) {
        if self.in_transmission() && self.in_flight() == 0 {
            // Whether we asked to disconnect or the server hung up on an
            // idle connection, nothing was lost: the connection is closed.
            self.closed = true;
            self.rx = Rx::Idle;
            self.complete_all(Error::new(ECONNRESET, "connection closed"));
        } else {
            let what = if self.in_transmission() {
                "server closed the connection with commands in flight"
            } else {
                "server closed the connection during the handshake"
            };
            self.die(Error::new(ECONNRESET, what));
        }
    }

    /// The driver's I/O failed: the connection is dead.
    pub fn fail(&mut self, err: Error) {
        if self.is_live() {
            self.die(err);
        }
    }

    /// Kills the connection: every command in flight completes with `err`.
    pub(super) fn die(&mut self, err: Error) {
        if self.fatal.is_some() {
            return;
        }
        self.rx = Rx::Idle;
        self.send_queue.clear();
        self.out.clear();
        self.out_pos = 0;
        self.complete_all(err.clone());
        self.fatal = Some(err);
    }

    /// Every command still queued or in flight completes, once: with the
    /// error it already had (an error chunk), else with ENOTCONN whatever
    /// ended the connection, as libnbd does (the connection's own error,
    /// ECONNRESET or EPIPE from the socket, stays the handle's).
    fn complete_all(&mut self, err: Error) {
        self.send_queue.clear();
        let mut cookies: Vec<u64> = self.cmds.keys().copied().collect();
        cookies.sort_unstable();
        for cookie in cookies {
            if let Some(c) = self.cmds.remove(&cookie) {
                let error = c
                    .error
                    .unwrap_or_else(|| Error::new(ENOTCONN, err.message.clone()));
                self.events.push_back(Event::Completed {
                    cookie,
                    ctx: c.ctx,
                    result: Err(error),
                });
            }
        }
    }

    /// A malformed message from the server.
    pub(super) fn protocol_error(e: WireError) -> Error {
        Error::new(EPROTO, format!("protocol error: {e}"))
    }
}
