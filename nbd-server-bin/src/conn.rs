//! One client connection: negotiation, then requests served by worker
//! threads in leader/follower style.
//!
//! A worker takes the read lock, reads one request (header and WRITE
//! payload, into its own reusable buffer), releases the lock, runs the
//! request against the backend, then takes the write lock and sends the
//! reply with one vectored write. A worker that finds nobody waiting for
//! the read lock after reading starts one more worker (up to `-t`), so an
//! idle connection costs one thread and a busy one grows to its
//! concurrency. Nothing is allocated per request once the buffers have
//! grown. An error on the socket ends this connection only.
//!
//! On a chain that answers from memory ([`Chain::answers_from_memory`]),
//! the worker holding the read lock serves requests of at most
//! `INLINE_MAX` (64 KiB) itself, keeping the lock, and collects their replies in
//! a [`ReplyBatch`]: no thread hand-off and no futex per request, and one
//! write for many replies. The batch is sent before the worker could wait
//! (its read buffer is empty), when it is full, and before a larger
//! request, or one of another chain, is served off the read lock.
//!
//! On a chain that is a plugin alone but may block (the file plugin), a
//! READ below the sendfile threshold is tried the same way with
//! [`Backend::pread_nowait`] (data the page cache holds), and goes off the
//! read lock only when the plugin says the data is not at hand.
//!
//! The backend chain is used in nbdkit's order: `preconnect` before any
//! byte of the handshake (failure: the connection is closed), opened for
//! this connection when the client asks about an export or picks one
//! (failure: an error reply to INFO or GO, or a hang-up for EXPORT_NAME
//! and oldstyle), and closed (each layer once) when the connection ends.
//!
//! Connection threads run on small stacks ([`THREAD_STACK`]): an idle
//! connection costs one thread, so 1,000 idle clients cost 1,000 stacks.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use nbd_core::server::backend::{ConnectionInfo, Peer};

use crate::chain::{Chain, Opened};
use crate::payload_pool::{PayloadPool, Pooled, SMALL_PAYLOAD};
use crate::reply_batch::ReplyBatch;
use nbd_core::limits::MAX_CONN_IN_FLIGHT;
use nbd_core::server::negotiate::{self, Caps, ExportDetails, Exports, Negotiation, Want};
use nbd_core::server::reply::encode_reply;
use nbd_core::server::request::{self, command_name, Payload, TxContext};
use nbd_core::server::{Backend, Extents};
use nbd_core::wire::consts::cmd;
use nbd_core::wire::request::{RequestHeader, EXTENDED_REQUEST_HEADER_LEN, REQUEST_HEADER_LEN};

use crate::sendfile;
use crate::spin::Spinner;
use crate::tls::Stream;

/// What every connection shares.
pub struct Server {
    /// The backend chain, opened once per connection.
    pub chain: Arc<Chain>,
    pub readonly: bool,
    pub export_name: String,
    pub threads: usize,
    pub handshake_flags: u16,
    /// `--no-sr`: refuse structured replies.
    pub no_sr: bool,
    /// Refuse extended headers (nbdkit's `--no-eh`, or
    /// `NBD_NO_EXTENDED_HEADERS=1` for both servers): see
    /// [`extended_headers_disabled_by_env`].
    pub no_eh: bool,
    /// `--oldstyle`: the oldstyle handshake.
    pub oldstyle: bool,
    /// How many requests, and bytes of their data, all connections may
    /// hold at once (xnbd-server's `--max-queue-size`, `--max-buf-size`).
    pub limits: Arc<Limits>,
}

/// Limits on what the server holds at once, shared by every connection
/// (xnbd-server's `--max-queue-size` and `--max-buf-size`; 0: no limit).
///
/// A request is held from when its header has been read until its reply
/// has been sent; its bytes are its READ or WRITE data. A worker that has
/// read a header waits, before reading the payload or anything after it,
/// until the request fits: fewer than `max_queue` requests held, and at
/// most `max_buf` bytes with it (a request alone always fits, even one
/// larger than `max_buf`). While it waits nothing more is read from that
/// connection, so a client that sends faster than the server can serve
/// is slowed down by TCP, never refused.
///
/// `Limits::default()` (our nbdkit) neither limits nor counts: the counters
/// are shared by every connection, and touching them twice per request
/// would bounce one cache line between all the cores serving requests.
#[derive(Debug, Default)]
pub struct Limits {
    pub max_queue: u64,
    pub max_buf: u64,
    /// Whether requests are counted (for `xnbd-bgctl --query`).
    counted: bool,
    queue: AtomicU64,
    buf: AtomicU64,
    lock: Mutex<()>,
    room: Condvar,
}

impl Limits {
    pub fn new(max_queue: u64, max_buf: u64) -> Limits {
        Limits {
            max_queue,
            max_buf,
            counted: true,
            ..Limits::default()
        }
    }

    fn limited(&self) -> bool {
        self.max_queue != 0 || self.max_buf != 0
    }

    /// (requests held, bytes held) now.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.queue.load(Ordering::SeqCst),
            self.buf.load(Ordering::SeqCst),
        )
    }

    /// Waits until a request of `bytes` fits, and holds it until the
    /// returned guard is dropped.
    fn hold(&self, bytes: u64) -> Held<'_> {
        if !self.counted {
            return Held {
                limits: None,
                bytes,
            };
        }
        if self.limited() {
            let mut g = self.lock.lock();
            loop {
                let (q, b) = self.usage();
                let fits = q == 0
                    || ((self.max_queue == 0 || q < self.max_queue)
                        && (self.max_buf == 0 || b.saturating_add(bytes) <= self.max_buf));
                if fits {
                    break;
                }
                self.room.wait(&mut g);
            }
        }
        self.queue.fetch_add(1, Ordering::SeqCst);
        self.buf.fetch_add(bytes, Ordering::SeqCst);
        Held {
            limits: Some(self),
            bytes,
        }
    }
}

/// One request held against [`Limits`] (`None`: not counted).
struct Held<'a> {
    limits: Option<&'a Limits>,
    bytes: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let Some(l) = self.limits else { return };
        l.queue.fetch_sub(1, Ordering::SeqCst);
        l.buf.fetch_sub(self.bytes, Ordering::SeqCst);
        if l.limited() {
            // Under the lock: a waiter is either before its check (and
            // sees the new counts) or asleep (and is woken).
            let _g = l.lock.lock();
            l.room.notify_all();
        }
    }
}

/// Virtual stack size of connection and worker threads. Only the pages a
/// thread touches cost memory; this bounds the address space and leaves
/// room for deep backend stacks (and unoptimised builds).
pub const THREAD_STACK: usize = 512 * 1024;

/// What negotiation tells the client about a chain opened for it.
fn details(opened: &Opened, readonly: bool) -> Result<ExportDetails, String> {
    let size = opened.size().map_err(|e| e.to_string())?;
    let caps = Caps::from_backend(opened, readonly).map_err(|e| e.to_string())?;
    let block_size = opened.block_size().map_err(|e| e.to_string())?;
    // A layer that cannot describe the export (tls-fallback, answering
    // a client without TLS itself) just sends no description.
    let description = opened
        .export_description()
        .ok()
        .flatten()
        .map(String::into_bytes);
    Ok(ExportDetails {
        size,
        caps,
        block_size,
        description,
        ..ExportDetails::default()
    })
}

macro_rules! debug {
    ($srv:expr, $($arg:tt)*) => {{
        let _ = &$srv;
        crate::log::debug!($($arg)*);
    }};
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Reads through a buffer, so that one system call can bring in many small
/// requests; large payloads are read straight into their destination.
struct RequestReader {
    f: Stream,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// A short busy-poll before waiting for the next request (spin.rs).
    spin: Spinner,
}

/// The read buffer's size once a read has filled a smaller one (a client
/// sending many requests at once, or large writes).
const READ_BUF: usize = 64 * 1024;
/// Its size at first: enough for small requests one or a few at a time,
/// so that an idle connection holds 4 KiB here, not 64.
const READ_BUF_START: usize = 4 * 1024;

impl RequestReader {
    fn new(f: Stream) -> Self {
        RequestReader {
            f,
            buf: vec![0u8; READ_BUF_START].into_boxed_slice(),
            pos: 0,
            end: 0,
            spin: Spinner::default(),
        }
    }

    /// After a read of `r` bytes into the buffer: a read that filled it may
    /// have left more behind, so the buffer grows to its full size, keeping
    /// what it holds.
    fn grow_if_filled(&mut self, r: usize) {
        if r == self.buf.len() && self.buf.len() < READ_BUF {
            let mut big = vec![0u8; READ_BUF].into_boxed_slice();
            big[..self.end].copy_from_slice(&self.buf[..self.end]);
            self.buf = big;
        }
    }

    /// Reads a request header; `Ok(false)` when the client closed its end
    /// before the first byte of one (a clean end, unlike a cut header).
    fn read_header(&mut self, dst: &mut [u8]) -> io::Result<bool> {
        if self.pos == self.end {
            self.spin.before_read(self.f.plain_fd());
            let r = retry(|| self.f.read(&mut self.buf))?;
            if r == 0 {
                return Ok(false);
            }
            self.pos = 0;
            self.end = r;
            self.grow_if_filled(r);
        }
        self.read_exact(dst).map(|()| true)
    }

    fn read_exact(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let n = (self.end - self.pos).min(dst.len());
        dst[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        let mut done = n;
        while done < dst.len() {
            let rem = dst.len() - done;
            if rem >= self.buf.len() {
                let r = retry(|| self.f.read(&mut dst[done..]))?;
                if r == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                done += r;
            } else {
                let r = retry(|| self.f.read(&mut self.buf))?;
                if r == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = r.min(rem);
                dst[done..done + n].copy_from_slice(&self.buf[..n]);
                self.pos = n;
                self.end = r;
                self.grow_if_filled(r);
                done += n;
            }
        }
        Ok(())
    }

    /// How many bytes are here already: reading more than this waits
    /// for the client (or at least costs a system call).
    fn buffered(&self) -> usize {
        self.end - self.pos
    }

    fn discard(&mut self, mut n: usize) -> io::Result<()> {
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let k = n.min(scratch.len());
            self.read_exact(&mut scratch[..k])?;
            n -= k;
        }
        Ok(())
    }
}

fn write_all2(f: &mut Stream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let (mut ao, mut bo) = (0, 0);
    while ao < a.len() || bo < b.len() {
        let bufs = [IoSlice::new(&a[ao..]), IoSlice::new(&b[bo..])];
        let n = retry(|| f.write_vectored(&bufs))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let na = n.min(a.len() - ao);
        ao += na;
        bo += n - na;
    }
    Ok(())
}

/// Writes the concatenation of `parts` (at most 32) with vectored writes.
fn write_all_slices(f: &mut Stream, parts: &[&[u8]]) -> io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        let mut iov: [IoSlice<'_>; 32] = [IoSlice::new(&[]); 32];
        let mut n = 0;
        for (k, p) in parts[idx..].iter().enumerate().take(32) {
            iov[k] = IoSlice::new(if k == 0 { &p[off..] } else { p });
            n = k + 1;
        }
        let mut w = retry(|| f.write_vectored(&iov[..n]))?;
        if w == 0 && parts[idx..].iter().any(|p| !p.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while idx < parts.len() && w >= parts[idx].len() - off {
            w -= parts[idx].len() - off;
            idx += 1;
            off = 0;
        }
        off += w;
    }
    Ok(())
}

/// What the thread whose turn it is to read holds: the requests still
/// to read, and the replies to the requests it served inline, not yet
/// sent (see [`ReplyBatch`]).
struct ReadSide {
    requests: RequestReader,
    replies: ReplyBatch,
}

/// The largest request (its data, or the range it names) served inline
/// on a chain that answers from memory: small enough that serving it
/// delays the requests behind it by a few microseconds at most.
const INLINE_MAX: u64 = 64 * 1024;

struct Conn {
    srv: Arc<Server>,
    /// The chain opened for the export this connection negotiated.
    backend: Opened,
    ctx: TxContext,
    reader: Mutex<ReadSide>,
    /// The chain answers from memory and nothing counts requests against
    /// [`Limits`]: small requests are served by the thread that read
    /// them, with no hand-off (see [`worker`]).
    inline: bool,
    /// Not `inline`, but the chain is a plugin alone and nothing counts
    /// requests against [`Limits`]: a small READ is first tried with
    /// [`Backend::pread_nowait`] on the thread that read it (a file whose
    /// data the page cache holds answers at once), and goes to a worker
    /// only when the data is not at hand.
    try_nowait: bool,
    writer: Mutex<Stream>,
    sock: RawFd,
    /// Where the client's bytes come from (the socket, or stdin with -s):
    /// sleeps in a request watch it for a hang-up (see hangup.rs).
    client_fd: RawFd,
    dead: AtomicBool,
    waiting: AtomicUsize,
    threads: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<()>>>,
    id: usize,
    /// The READ and WRITE bytes this connection holds: at most
    /// MAX_CONN_IN_FLIGHT (a worker that would exceed it waits, with the
    /// read lock, so nothing more is read from the client meanwhile).
    in_flight: Limits,
    /// Buffers for payloads larger than SMALL_PAYLOAD.
    pool: PayloadPool,
    /// Whether reads may be sent from the file with sendfile(2): a plain
    /// connection (not TLS), unless NBDKIT_NO_SENDFILE, and until the
    /// kernel refuses it for this socket.
    sendfile: AtomicBool,
    /// The shortest read sent with sendfile(2).
    sendfile_min: usize,
}

impl Conn {
    /// Ends the connection: wakes a worker blocked reading, makes writes fail.
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        // SAFETY: shutdown on a descriptor that lives as long as self;
        // on a pipe (-s) it fails harmlessly with ENOTSOCK.
        unsafe {
            libc::shutdown(self.sock, libc::SHUT_RDWR);
        }
    }
}

/// The exports as one connection sees them. As in nbdkit, the chain is
/// opened for the connection when the client asks about an export (INFO)
/// or picks one (GO, EXPORT_NAME, oldstyle): the size and capabilities
/// come from the opened layers. A chain opened for INFO is closed again
/// when the client asks about another export, picks one, or leaves.
struct ConnExports<'a> {
    srv: &'a Server,
    /// The connection's facts; `tls` is set when the TLS handshake ends.
    info: RefCell<ConnectionInfo>,
    /// The chain opened by the last INFO or GO, with the name the client
    /// asked for.
    looked_up: RefCell<Option<(Vec<u8>, Opened)>>,
    /// The chain of the export the client picked.
    opened: RefCell<Option<Opened>>,
}

impl ConnExports<'_> {
    /// The facts every layer gets, for export `name` ("" before one).
    fn info_for(&self, name: &[u8]) -> ConnectionInfo {
        ConnectionInfo {
            export_name: name.to_vec(),
            ..self.info.borrow().clone()
        }
    }

    /// The export the client means by `name`: the empty name is the
    /// chain's default export when it has one (the file plugin's `dir=`),
    /// as nbdkit resolves it before opening.
    fn resolve(&self, name: &[u8]) -> Result<Vec<u8>, String> {
        if !name.is_empty() {
            return Ok(name.to_vec());
        }
        let info = self.info_for(b"");
        match self.srv.chain.default_export(&info) {
            Ok(Some(d)) => Ok(d.into_bytes()),
            Ok(None) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Exports for ConnExports<'_> {
    /// The chain's own list when it has one (`dir=`), else the `-e` name.
    fn list(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.try_list().unwrap_or_default()
    }

    /// As `list`; a chain that refuses to list (the exportname filter's
    /// `exportname-list=error`) makes the client's LIST fail.
    fn try_list(&self) -> Result<nbd_core::server::negotiate::ExportList, String> {
        match self.srv.chain.list_exports(&self.info_for(b"")) {
            Ok(Some(list)) => Ok(list
                .into_iter()
                .map(|(n, d)| (n.into_bytes(), d.into_bytes()))
                .collect()),
            Ok(None) => Ok(vec![(self.srv.export_name.as_bytes().to_vec(), Vec::new())]),
            Err(e) => {
                crate::log::error!("listing exports: {e}");
                Err(e.to_string())
            }
        }
    }

    fn lookup(&self, name: &[u8]) -> Result<ExportDetails, String> {
        // Close what an earlier INFO opened before opening again.
        self.looked_up.borrow_mut().take();
        let id = self.info.borrow().id;
        let resolved = self.resolve(name).inspect_err(|e| {
            crate::log::error!("connection {id}: {e}");
        })?;
        let opened = self.srv.chain.open(self.info_for(&resolved)).map_err(|e| {
            crate::log::error!("connection {id}: open: {e}");
            e.to_string()
        })?;
        let mut d = details(&opened, self.srv.readonly)?;
        // NBD_INFO_NAME: the name the chain was opened on, as nbdkit
        // sends it (the default export's, for the empty name).
        d.canonical_name = Some(resolved);
        *self.looked_up.borrow_mut() = Some((name.to_vec(), opened));
        Ok(d)
    }

    fn open(&self, name: &[u8]) -> Result<(), String> {
        if self.opened.borrow().is_some() {
            return Ok(());
        }
        let looked = self.looked_up.borrow_mut().take();
        let opened = match looked {
            Some((n, o)) if n == name => o,
            _ => {
                self.lookup(name)?;
                match self.looked_up.borrow_mut().take() {
                    Some((_, o)) => o,
                    None => return Err("export not opened".into()),
                }
            }
        };
        *self.opened.borrow_mut() = Some(opened);
        Ok(())
    }
}

/// Serves one client on `rd`/`wr` (a socket twice, or stdin/stdout) that
/// is `peer`. Returns when the client is gone and every worker has
/// finished.
pub fn serve(srv: Arc<Server>, rd: File, wr: File, id: usize, peer: Peer) {
    serve_as(srv, rd, wr, id, peer, false)
}

/// As [`serve`], for a client whose handshake was done by someone else
/// (xnbd-server's `--connected-fd`, after xnbd-wrapper negotiated): the
/// transmission phase starts at once, on the default export, with simple
/// replies (see `Negotiation::pre_negotiated`).
pub fn serve_pre_negotiated(srv: Arc<Server>, rd: File, wr: File, id: usize, peer: Peer) {
    serve_as(srv, rd, wr, id, peer, true)
}

fn serve_as(srv: Arc<Server>, rd: File, wr: File, id: usize, peer: Peer, pre_negotiated: bool) {
    // Held until the chain is closed, below.
    let turn = srv.chain.connection_turn();
    // From its turn until the chain is closed (at the end of this
    // function): the server's exit waits for it (process::live).
    let _live = crate::process::live::Live::enter();
    let info = ConnectionInfo {
        id: id as u64,
        peer,
        export_name: Vec::new(),
        readonly: srv.readonly,
        tls: false,
    };
    if let Err(e) = srv.chain.preconnect(&info) {
        crate::log::error!("connection {id}: client {:?} refused: {e}", info.peer);
        return;
    }
    let exports = ConnExports {
        srv: &srv,
        info: RefCell::new(info),
        looked_up: RefCell::new(None),
        opened: RefCell::new(None),
    };
    serve_opened(&srv, rd, wr, id, &exports, pre_negotiated);
    // Closes the chain (each layer once) after every worker has finished.
    drop(exports);
    drop(turn);
    debug!(srv, "connection {id}: closed");
}

fn serve_opened(
    srv: &Arc<Server>,
    rd: File,
    wr: File,
    id: usize,
    exports: &ConnExports,
    pre_negotiated: bool,
) {
    let sock = wr.as_raw_fd();
    let client_fd = rd.as_raw_fd();
    // A delay-open, or a sleep in a request, ends if the client hangs up.
    // Not while closing (after this function): delay-close runs in full.
    let _watching = crate::hangup::watch_client(client_fd);
    // Plain text until the client's STARTTLS, if it sends one.
    let (mut rd, mut wr) = (Stream::Plain(rd), Stream::Plain(wr));
    let neg = match negotiate(srv, exports, &mut rd, &mut wr, pre_negotiated) {
        Some(n) => n,
        None => return,
    };
    let plain = matches!(wr, Stream::Plain(_));
    debug!(
        srv,
        "connection {id}: negotiated export \"{}\" size {} flags {:#x} structured replies {} extended headers {} meta context {:?}",
        String::from_utf8_lossy(&neg.export_name),
        neg.details.size,
        neg.tx_flags,
        neg.structured_replies,
        neg.extended_headers,
        neg.meta_context
    );
    let conn = Arc::new(Conn {
        ctx: TxContext::from_negotiated(&neg),
        srv: Arc::clone(srv),
        backend: match exports.opened.borrow_mut().take() {
            Some(o) => o,
            None => return,
        },
        reader: Mutex::new(ReadSide {
            requests: RequestReader::new(rd),
            replies: ReplyBatch::new(),
        }),
        inline: srv.chain.answers_from_memory() && !srv.limits.counted,
        try_nowait: !srv.chain.answers_from_memory()
            && srv.chain.plugin_alone()
            && !srv.limits.counted,
        writer: Mutex::new(wr),
        sock,
        client_fd,
        dead: AtomicBool::new(false),
        waiting: AtomicUsize::new(0),
        threads: AtomicUsize::new(1),
        handles: Mutex::new(Vec::new()),
        id,
        in_flight: Limits::new(0, MAX_CONN_IN_FLIGHT),
        pool: PayloadPool::new(MAX_CONN_IN_FLIGHT as usize),
        sendfile: AtomicBool::new(plain && !sendfile::disabled_by_env()),
        sendfile_min: sendfile::threshold(),
    });
    // Dropped before `conn`, which closes the socket (process::live).
    let _registered = crate::process::live::register(id, sock);
    worker(&conn);
    loop {
        let h = conn.handles.lock().pop();
        match h {
            Some(h) => {
                let _ = h.join();
            }
            None => break,
        }
    }
}

/// Whether `NBD_NO_EXTENDED_HEADERS` asks both servers (nbdkit and
/// xnbd-server) to refuse NBD_OPT_EXTENDED_HEADERS, so that clients fall
/// back to structured replies: for tests, and for clients whose extended
/// headers misbehave. Any value but empty or "0" turns them off.
pub fn extended_headers_disabled_by_env() -> bool {
    std::env::var_os("NBD_NO_EXTENDED_HEADERS").is_some_and(|v| !v.is_empty() && v != "0")
}

fn negotiate(
    srv: &Server,
    exports: &ConnExports,
    rd: &mut Stream,
    wr: &mut Stream,
    pre_negotiated: bool,
) -> Option<negotiate::Negotiated> {
    let mut n = if pre_negotiated {
        Negotiation::pre_negotiated(exports)
    } else if srv.oldstyle {
        Negotiation::oldstyle(exports)
    } else {
        Negotiation::new(negotiate::Config {
            handshake_flags: srv.handshake_flags,
            no_structured_replies: srv.no_sr,
            no_extended_headers: srv.no_eh,
            tls: crate::tls::policy(),
        })
    };
    loop {
        match n.want() {
            Want::Write => {
                let out = n.output();
                let len = out.len();
                if retry(|| wr.write_all(out).map(|_| 0)).is_err() {
                    return None;
                }
                n.output_done(len);
            }
            Want::Read => {
                let r = retry(|| rd.read(n.recv_buf())).unwrap_or(0);
                n.received(r, exports);
            }
            Want::StartTls => {
                if let Err(e) = Stream::start_tls(rd, wr) {
                    crate::log::error!("TLS handshake: {e}");
                    return None;
                }
                debug!(srv, "TLS handshake complete");
                exports.info.borrow_mut().tls = true;
                n.tls_done();
            }
            Want::Done => return n.take_result(),
            Want::Closed => {
                debug!(srv, "negotiation ended: {}", n.close_reason().unwrap_or(""));
                return None;
            }
        }
    }
}

fn spawn_worker(conn: &Arc<Conn>) {
    let c = Arc::clone(conn);
    let r = std::thread::Builder::new()
        .name(format!("nbdkit-c{}", conn.id))
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let _watching = crate::hangup::watch_client(c.client_fd);
            worker(&c)
        });
    match r {
        Ok(h) => conn.handles.lock().push(h),
        Err(_) => {
            conn.threads.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Sends the replies collected in `batch`; false (and the connection is
/// ended) when the client is gone.
fn send_batch(conn: &Conn, batch: &mut ReplyBatch) -> bool {
    if batch.is_empty() {
        return true;
    }
    let mut w = conn.writer.lock();
    match batch.flush_to(&mut *w) {
        Ok(()) => true,
        Err(e) => {
            drop(w);
            debug!(conn.srv, "connection {}: write reply: {e}", conn.id);
            conn.kill();
            false
        }
    }
}

/// Logs a failed request: a layer that explains its failure has it
/// logged as an error, as nbdkit_error does in nbdkit (the error
/// filter's "injecting EIO error into pread", a plugin's failed read);
/// the request itself is a debug message.
fn log_failure(conn: &Conn, h: &RequestHeader, result: &nbd_core::server::backend::Result<()>) {
    let Err(e) = result else { return };
    if !e.message.is_empty() {
        crate::log::error!("{e}");
    }
    if crate::log::verbose() {
        debug!(
            conn.srv,
            "connection {}: {} offset {} length {}: {}",
            conn.id,
            command_name(h.kind),
            h.offset,
            h.length,
            e
        );
    }
}

/// One request read, and what reading it found.
struct ReadRequest {
    h: RequestHeader,
    valid: nbd_core::server::backend::Result<()>,
    payload: Payload,
    /// The bytes of data it moves: a WRITE's payload (or one to
    /// discard), a valid READ's reply.
    len: usize,
}

/// What the thread holding the read side does next.
enum Next {
    /// Serve this request off the read side (it may block, or is large).
    Serve(ReadRequest),
    /// The connection is over for this thread.
    Stop,
}

/// Reads requests while it is this thread's turn, serving inline those
/// that the chain answers at once (see [`Conn::inline`]), until one must
/// be served off the read side or the connection ends. Replies to the
/// inline requests are batched, and the batch is sent before anything
/// could wait: before a read the buffer cannot satisfy, and before
/// returning.
fn read_requests(
    conn: &Conn,
    side: &mut ReadSide,
    data: &mut Vec<u8>,
    extents: &mut Extents,
    out: &mut Vec<u8>,
) -> Next {
    let srv = &*conn.srv;
    let backend = &conn.backend;
    // Big enough for either form; the negotiated one is read.
    let mut hb = [0u8; EXTENDED_REQUEST_HEADER_LEN];
    let hlen = if conn.ctx.extended_headers {
        EXTENDED_REQUEST_HEADER_LEN
    } else {
        REQUEST_HEADER_LEN
    };
    loop {
        if conn.dead.load(Ordering::SeqCst) {
            send_batch(conn, &mut side.replies);
            return Next::Stop;
        }
        if side.requests.buffered() < hlen && !send_batch(conn, &mut side.replies) {
            return Next::Stop;
        }
        match side.requests.read_header(&mut hb[..hlen]) {
            Ok(true) => {}
            Ok(false) => {
                // The client closed its end between requests: as after
                // NBD_CMD_DISC (and as in nbdkit), the requests in flight
                // finish and their replies are sent.
                conn.dead.store(true, Ordering::SeqCst);
                debug!(srv, "connection {}: client closed its end", conn.id);
                return Next::Stop;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    debug!(srv, "connection {}: read request: {e}", conn.id);
                }
                // The requests already accepted get their replies (each
                // was answered at once before replies were batched).
                send_batch(conn, &mut side.replies);
                conn.kill();
                return Next::Stop;
            }
        }
        let h = if conn.ctx.extended_headers {
            RequestHeader::decode_extended(&hb)
        } else {
            let compact: &[u8; REQUEST_HEADER_LEN] = hb[..hlen].try_into().unwrap_or(&[0; 28]);
            RequestHeader::decode(compact)
        };
        // A header of the wrong form or magic: nothing after it can be
        // trusted to start a request, so the connection ends (a hard
        // disconnect, as proto.md allows).
        let h = match h {
            Ok(h) => h,
            Err(e) => {
                crate::log::error!("connection {}: {e}", conn.id);
                send_batch(conn, &mut side.replies);
                conn.kill();
                return Next::Stop;
            }
        };
        if h.kind == cmd::DISC {
            // Let requests in flight finish; read nothing more.
            conn.dead.store(true, Ordering::SeqCst);
            debug!(srv, "connection {}: client sent NBD_CMD_DISC", conn.id);
            send_batch(conn, &mut side.replies);
            return Next::Stop;
        }
        let valid = request::validate(&h, &conn.ctx);
        // Only READ and WRITE lengths are ever used as buffer sizes, and
        // validation (or payload()) bounds those; the others may be 64-bit.
        let payload = request::payload(&h, &conn.ctx);
        let len = match payload {
            Payload::Receive(n) | Payload::Discard(n) => n as usize,
            _ if h.kind == cmd::READ && valid.is_ok() => h.length as usize,
            _ => 0,
        };
        // Served inline: a small request of a chain that answers at once,
        // with no payload but a WRITE's (a BLOCK_STATUS payload, or one
        // to discard, is rare and takes the general path).
        let inline = conn.inline
            && h.length <= INLINE_MAX
            && match payload {
                Payload::None => true,
                Payload::Receive(_) => h.kind == cmd::WRITE,
                _ => false,
            };
        if !inline
            && conn.try_nowait
            && h.kind == cmd::READ
            && len > 0
            && valid.is_ok()
            && h.length <= INLINE_MAX
            && !(len >= conn.sendfile_min && conn.sendfile.load(Ordering::Relaxed))
        {
            // Tried here, as an inline READ would be, but given up (and
            // its header taken back) when the data is not at hand. Reads
            // that sendfile(2) would send stay with the workers: that
            // path saves the copy, this one the hand-off.
            let mark = side.replies.len();
            encode_reply(out, &h, &conn.ctx, &Ok(()), extents);
            side.replies.push(out);
            if let Some(Ok(())) = backend.pread_nowait(side.replies.grow(len), h.offset) {
                if side.replies.is_full() && !send_batch(conn, &mut side.replies) {
                    return Next::Stop;
                }
                continue;
            }
            side.replies.truncate(mark);
        }
        if !inline {
            // Whoever reads next may take long to come back: the replies
            // collected so far go now.
            if !send_batch(conn, &mut side.replies) {
                return Next::Stop;
            }
            return Next::Serve(ReadRequest {
                h,
                valid,
                payload,
                len,
            });
        }
        if let Payload::Receive(n) = payload {
            let n = n as usize;
            if side.requests.buffered() < n && !send_batch(conn, &mut side.replies) {
                return Next::Stop;
            }
            if data.len() < n {
                data.resize(n, 0);
            }
            if let Err(e) = side.requests.read_exact(&mut data[..n]) {
                debug!(srv, "connection {}: reading payload: {e}", conn.id);
                send_batch(conn, &mut side.replies);
                conn.kill();
                return Next::Stop;
            }
        }
        let mark = side.replies.len();
        let result = if h.kind == cmd::READ && len > 0 && valid.is_ok() {
            // The success header, then the data read straight into the
            // batch; taken back if the read fails.
            encode_reply(out, &h, &conn.ctx, &Ok(()), extents);
            side.replies.push(out);
            let r = backend.pread(side.replies.grow(len), h.offset);
            if r.is_err() {
                side.replies.truncate(mark);
            }
            r
        } else {
            let n = if h.kind == cmd::WRITE { len } else { 0 };
            valid.and_then(|()| request::execute(backend, &h, &mut data[..n], extents))
        };
        log_failure(conn, &h, &result);
        if side.replies.len() == mark {
            // Not a READ's data: its reply carries no data.
            encode_reply(out, &h, &conn.ctx, &result, extents);
            side.replies.push(out);
        }
        if side.replies.is_full() && !send_batch(conn, &mut side.replies) {
            return Next::Stop;
        }
    }
}

fn worker(conn: &Arc<Conn>) {
    let srv = &*conn.srv;
    // nbdkit runs parallel requests on numbered worker threads, and a
    // plugin's messages from them say which (`file.0: error: ...`). Set
    // for the thread's whole life, so it covers requests served inline
    // (read_requests) and in the pool alike.
    let _name = srv.chain.parallel_requests().then(|| {
        crate::log::WorkerName::set(conn.threads.load(Ordering::SeqCst).saturating_sub(1))
    });
    let backend = &conn.backend;
    let mut data: Vec<u8> = Vec::new();
    let mut extents = Extents::new();
    let mut out: Vec<u8> = Vec::with_capacity(256);
    loop {
        conn.waiting.fetch_add(1, Ordering::SeqCst);
        let mut rd = conn.reader.lock();
        conn.waiting.fetch_sub(1, Ordering::SeqCst);
        let ReadRequest {
            h,
            valid,
            payload,
            len,
        } = match read_requests(conn, &mut rd, &mut data, &mut extents, &mut out) {
            Next::Serve(r) => r,
            Next::Stop => break,
        };
        // The data this request will make us hold: a WRITE's payload, a
        // valid READ's reply. Waits (reading nothing more) until it fits.
        let bytes = match (h.kind, payload) {
            (cmd::WRITE, Payload::Receive(n)) => n as u64,
            (cmd::READ, _) if valid.is_ok() => len as u64,
            _ => 0,
        };
        let _conn_held = conn.in_flight.hold(bytes);
        let _held = srv.limits.hold(bytes);
        // The request's data: small payloads in this worker's own
        // buffer, large ones in a buffer of the connection's pool (given
        // back when this iteration ends).
        let mut pooled = Pooled::new(&conn.pool);
        let buf: io::Result<&mut [u8]> = if matches!(payload, Payload::Discard(_)) {
            Ok(&mut [])
        } else if len > SMALL_PAYLOAD {
            pooled.take(len)
        } else {
            if data.len() < len {
                data.resize(len, 0);
            }
            Ok(&mut data[..len])
        };
        let buf = match buf {
            Ok(b) => b,
            Err(e) => {
                crate::log::error!("connection {}: payload buffer: {e}", conn.id);
                drop(rd);
                conn.kill();
                break;
            }
        };
        let io_ok = match payload {
            Payload::None => Ok(()),
            Payload::Receive(_) => rd.requests.read_exact(buf),
            Payload::Discard(_) => rd.requests.discard(len),
            Payload::Disconnect => Err(io::Error::other("write request too large")),
        };
        drop(rd);
        if let Err(e) = io_ok {
            debug!(srv, "connection {}: reading payload: {e}", conn.id);
            conn.kill();
            break;
        }
        // A BLOCK_STATUS whose payload names its length and contexts runs
        // as the request it stands for.
        let (h, valid) = match (valid, payload) {
            (Ok(()), Payload::Receive(_)) if h.kind == cmd::BLOCK_STATUS => {
                match request::with_payload(&h, buf, &conn.ctx) {
                    Ok(h2) => (h2, request::validate(&h2, &conn.ctx)),
                    Err(e) => (h, Err(e)),
                }
            }
            (valid, _) => (h, valid),
        };
        if conn.waiting.load(Ordering::SeqCst) == 0
            && conn.threads.load(Ordering::SeqCst) < srv.threads
        {
            conn.threads.fetch_add(1, Ordering::SeqCst);
            spawn_worker(conn);
        }

        let buf_len = if h.kind == cmd::READ || h.kind == cmd::WRITE {
            buf.len()
        } else {
            0
        };
        let result = if h.kind == cmd::READ && len > 0 && valid.is_ok() {
            match read_in_place(conn, &h, buf, &mut out, &extents) {
                InPlace::Sent => continue,
                InPlace::Broken(e) => {
                    if let Some(e) = e {
                        debug!(srv, "connection {}: write reply: {e}", conn.id);
                    }
                    conn.kill();
                    break;
                }
                InPlace::NotSent(res) => res,
            }
        } else {
            valid.and_then(|()| request::execute(backend, &h, &mut buf[..buf_len], &mut extents))
        };
        log_failure(conn, &h, &result);
        let with_data = encode_reply(&mut out, &h, &conn.ctx, &result, &extents);
        let payload: &[u8] = if with_data { buf } else { &[] };
        let mut w = conn.writer.lock();
        if let Err(e) = write_all2(&mut w, &out, payload) {
            drop(w);
            debug!(srv, "connection {}: write reply: {e}", conn.id);
            conn.kill();
            break;
        }
    }
}

/// How a READ that the backend could answer in place went.
enum InPlace {
    /// The whole reply was sent: lent pages, or a range of a file.
    Sent,
    /// Nothing was sent: the data is in the buffer, or the read failed.
    NotSent(nbd_core::server::backend::Result<()>),
    /// The reply was begun and cut short (the error, when writing
    /// failed): the client's stream can only end here.
    Broken(Option<io::Error>),
}

/// A reply being sent while the backend serves the read: the header goes
/// out with the first data, and the write lock is held from then until
/// the reply is complete, so no other reply comes between.
struct Sending<'a> {
    out: &'a mut Vec<u8>,
    writer: Option<parking_lot::MutexGuard<'a, Stream>>,
    /// The header is still to be written.
    first: bool,
    failed: Option<io::Error>,
}

/// Runs a valid READ so that the plugin may send its data without it
/// passing through `buf`: from a file range with sendfile(2) (plain
/// connections, reads of at least `sendfile_min`), or from pages it lends;
/// otherwise the data lands in `buf` and the caller sends the reply.
fn read_in_place<'a>(
    conn: &'a Conn,
    h: &RequestHeader,
    buf: &mut [u8],
    out: &'a mut Vec<u8>,
    extents: &Extents,
) -> InPlace {
    let count = buf.len();
    let state = RefCell::new(Sending {
        out,
        writer: None,
        first: true,
        failed: None,
    });
    // Writes the header, once, under the write lock taken here.
    let begin = |st: &mut Sending<'a>| {
        if st.writer.is_none() {
            encode_reply(st.out, h, &conn.ctx, &Ok(()), extents);
            st.writer = Some(conn.writer.lock());
        }
    };
    let mut lend = |parts: &[&[u8]]| -> bool {
        let st = &mut *state.borrow_mut();
        begin(st);
        let Sending {
            out,
            writer: Some(w),
            first,
            failed,
        } = st
        else {
            return false;
        };
        let r = if std::mem::take(first) {
            // The header and the first slices in one vectored write.
            let mut all: [&[u8]; 17] = [&[]; 17];
            all[0] = out;
            let n = parts.len().min(16);
            all[1..=n].copy_from_slice(&parts[..n]);
            write_all_slices(w, &all[..=n]).and_then(|()| write_all_slices(w, &parts[n..]))
        } else {
            write_all_slices(w, parts)
        };
        r.map_err(|e| *failed = Some(e)).is_ok()
    };
    let mut from_file = |fd: BorrowedFd<'_>, at: u64| -> bool {
        let st = &mut *state.borrow_mut();
        begin(st);
        st.first = false;
        // Under the write lock (held in `st.writer`), straight to the
        // socket: a plain connection's writer is nothing but its
        // descriptor.
        let r = sendfile::send_reply(conn.sock, st.out, fd, at, count, &conn.sendfile);
        r.map_err(|e| st.failed = Some(e)).is_ok()
    };
    let mut r = nbd_core::server::Read::lending(buf, h.offset, &mut lend);
    if count >= conn.sendfile_min && conn.sendfile.load(Ordering::Relaxed) {
        r = r.sending_files(&mut from_file);
    }
    let res = conn.backend.read(&mut r);
    let sent = r.was_lent();
    let st = state.into_inner();
    let started = st.writer.is_some();
    drop(st.writer);
    match (sent, started, st.failed) {
        (_, _, Some(e)) => InPlace::Broken(Some(e)),
        (true, _, None) => InPlace::Sent,
        // A lending plugin stopped half way through.
        (false, true, None) => InPlace::Broken(None),
        (false, false, None) => InPlace::NotSent(res),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbd_core::server::backend::Error as BackendError;
    use nbd_core::wire::consts::{opt, rep, NBDMAGIC};
    use nbd_core::wire::option::{encode_option, GoRequest, OptionReplyHeader};
    use std::os::unix::net::UnixStream;

    #[test]
    fn request_reader_starts_small_and_grows_when_filled_keeping_its_bytes() {
        use std::io::Write;
        let (mut client, server) = UnixStream::pair().unwrap();
        let mut r = RequestReader::new(Stream::Plain(File::from(std::os::fd::OwnedFd::from(
            server,
        ))));
        assert_eq!(r.buf.len(), READ_BUF_START);
        // One small request at a time: the buffer stays small.
        client.write_all(&[1u8; 28]).unwrap();
        let mut h = [0u8; 28];
        assert!(r.read_header(&mut h).unwrap());
        assert_eq!(h, [1u8; 28]);
        assert_eq!(r.buf.len(), READ_BUF_START);
        // More than it holds arrives at once: it grows, and every byte
        // still comes out in order.
        let burst: Vec<u8> = (0..3 * READ_BUF_START).map(|i| (i % 251) as u8).collect();
        client.write_all(&burst).unwrap();
        let mut got = vec![0u8; burst.len()];
        assert!(r.read_header(&mut got[..28]).unwrap());
        r.read_exact(&mut got[28..]).unwrap();
        assert_eq!(got, burst);
        assert_eq!(r.buf.len(), READ_BUF);
    }

    /// A plugin that records the hooks it sees (the handle's drop is its
    /// close); refuses preconnect or open on demand.
    #[derive(Default)]
    struct Hooks {
        refuse_preconnect: bool,
        refuse_open: bool,
        /// How long each read takes.
        read_delay: std::time::Duration,
        /// Says it never blocks (its small requests are served inline).
        inline: bool,
        /// Answers some reads without waiting (see HooksHandle's
        /// pread_nowait).
        nowait: bool,
        log: Arc<parking_lot::Mutex<Vec<String>>>,
    }

    /// The handle of one connection: logs its close when dropped.
    struct HooksHandle {
        id: u64,
        read_delay: std::time::Duration,
        nowait: bool,
        log: Arc<parking_lot::Mutex<Vec<String>>>,
    }

    impl Backend for HooksHandle {
        /// At offset 0, 0xaa bytes (pread would give zeroes, so the
        /// reply says which answered); at 2048, a failure (pread then
        /// succeeds); elsewhere, not at hand.
        fn pread_nowait(
            &self,
            buf: &mut [u8],
            offset: u64,
        ) -> Option<nbd_core::server::backend::Result<()>> {
            if !self.nowait {
                return None;
            }
            match offset {
                0 => {
                    buf.fill(0xaa);
                    Some(Ok(()))
                }
                2048 => Some(Err(BackendError::new(
                    nbd_core::errno::host::EIO,
                    "not now",
                ))),
                _ => None,
            }
        }
        fn size(&self) -> nbd_core::server::backend::Result<u64> {
            Ok(4096)
        }
        /// Zeroes, but a read at offset 1024 fails with EIO.
        fn pread(&self, buf: &mut [u8], offset: u64) -> nbd_core::server::backend::Result<()> {
            std::thread::sleep(self.read_delay);
            if offset == 1024 {
                return Err(BackendError::new(nbd_core::errno::host::EIO, "bad sector"));
            }
            buf.fill(0);
            Ok(())
        }
    }

    impl Drop for HooksHandle {
        fn drop(&mut self) {
            self.log.lock().push(format!("close {}", self.id));
        }
    }

    impl crate::chain::Plugin for Hooks {
        fn never_blocks(&self) -> bool {
            self.inline
        }
        fn preconnect(&self, info: &ConnectionInfo) -> nbd_core::server::backend::Result<()> {
            self.log.lock().push(format!("pre {:?}", info.peer));
            if self.refuse_preconnect {
                return Err(BackendError::new(1, "not you"));
            }
            Ok(())
        }
        fn open(
            self: Arc<Self>,
            info: &ConnectionInfo,
        ) -> nbd_core::server::backend::Result<Box<dyn Backend>> {
            self.log.lock().push(format!(
                "open {} {}",
                info.id,
                String::from_utf8_lossy(&info.export_name)
            ));
            if self.refuse_open {
                return Err(BackendError::new(1, "closed for lunch"));
            }
            Ok(Box::new(HooksHandle {
                id: info.id,
                read_delay: self.read_delay,
                nowait: self.nowait,
                log: Arc::clone(&self.log),
            }))
        }
    }

    /// Serves one connection of `b` on a socketpair in a thread; returns
    /// our end and the thread.
    fn start(b: Arc<Hooks>) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let srv = Arc::new(Server {
            chain: Arc::new(Chain::plugin(b)),
            readonly: false,
            export_name: String::new(),
            threads: 2,
            handshake_flags: nbd_core::wire::consts::handshake_flags::ALL,
            no_sr: false,
            no_eh: false,
            oldstyle: false,
            limits: Default::default(),
        });
        let h = std::thread::spawn(move || {
            let peer = crate::listen::peer_of(theirs.as_raw_fd());
            let wr = File::from(std::os::unix::io::OwnedFd::from(theirs));
            let rd = wr.try_clone().unwrap();
            serve(srv, rd, wr, 7, peer);
        });
        (ours, h)
    }

    fn go(s: &mut UnixStream, name: &[u8]) -> (u32, Vec<u8>) {
        option(s, opt::GO, name)
    }

    /// Sends GO or INFO for `name`; returns the final reply.
    fn option(s: &mut UnixStream, code: u32, name: &[u8]) -> (u32, Vec<u8>) {
        let mut o = Vec::new();
        let g = GoRequest {
            export_name: name,
            info_requests: vec![],
        }
        .encode();
        encode_option(&mut o, code, &g);
        s.write_all(&o).unwrap();
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).unwrap();
            let h = OptionReplyHeader::decode(&h).unwrap();
            let mut p = vec![0u8; h.len as usize];
            s.read_exact(&mut p).unwrap();
            if h.reply_type != rep::INFO {
                return (h.reply_type, p);
            }
        }
    }

    fn greet(s: &mut UnixStream) {
        let mut g = [0u8; 18];
        s.read_exact(&mut g).unwrap();
        assert_eq!(&g[..8], &NBDMAGIC.to_be_bytes());
        s.write_all(&3u32.to_be_bytes()).unwrap();
    }

    #[test]
    fn limits_hold_back_until_there_is_room() {
        let l = Arc::new(Limits::new(2, 100));
        let a = l.hold(60);
        let b = l.hold(0);
        assert_eq!(l.usage(), (2, 60));
        // A third request waits for room in the queue, then for bytes.
        let l2 = Arc::clone(&l);
        let t = std::thread::spawn(move || {
            let _c = l2.hold(50);
            l2.usage()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!t.is_finished());
        drop(b);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!t.is_finished(), "60 + 50 bytes is over 100");
        drop(a);
        assert_eq!(t.join().unwrap(), (1, 50));
        assert_eq!(l.usage(), (0, 0));
        // Alone, a request larger than the limit goes through.
        let big = l.hold(1000);
        assert_eq!(l.usage(), (1, 1000));
        drop(big);
        // No limits (xnbd-server without the options): counted, never waits.
        let free = Limits::new(0, 0);
        let held: Vec<_> = (0..100).map(|_| free.hold(1 << 20)).collect();
        assert_eq!(free.usage(), (100, 100 << 20));
        drop(held);
        assert_eq!(free.usage(), (0, 0));
        // The default (nbdkit): neither counted nor waiting.
        let off = Limits::default();
        let held: Vec<_> = (0..100).map(|_| off.hold(1 << 20)).collect();
        assert_eq!(off.usage(), (0, 0));
        drop(held);
    }

    #[test]
    fn hooks_in_order_once_each() {
        let b = Arc::new(Hooks::default());
        let (mut s, h) = start(Arc::clone(&b));
        greet(&mut s);
        assert_eq!(go(&mut s, b"disk").0, rep::ACK);
        drop(s);
        h.join().unwrap();
        let log = b.log.lock().clone();
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(log[0].starts_with("pre Unix { pid: Some("), "{log:?}");
        assert_eq!(&log[1..], ["open 7 disk", "close 7"]);
    }

    /// As in nbdkit, each INFO opens the chain to describe the export and
    /// closes it again; GO opens it and keeps it.
    #[test]
    fn info_opens_and_closes_go_keeps() {
        let b = Arc::new(Hooks::default());
        let (mut s, h) = start(Arc::clone(&b));
        greet(&mut s);
        assert_eq!(option(&mut s, opt::INFO, b"a").0, rep::ACK);
        assert_eq!(option(&mut s, opt::INFO, b"b").0, rep::ACK);
        assert_eq!(go(&mut s, b"b").0, rep::ACK);
        drop(s);
        h.join().unwrap();
        let log = b.log.lock().clone();
        assert_eq!(
            &log[1..],
            ["open 7 a", "close 7", "open 7 b", "close 7", "open 7 b", "close 7"]
        );
    }

    /// Found writing fuzz/'s server_stream checker: a client that sends its requests
    /// and then closes its end (shutdown SHUT_WR) still gets every reply,
    /// as after NBD_CMD_DISC and as nbdkit does. A second worker that read
    /// the end of the stream used to shut the socket down while the first
    /// was still serving, and that reply was lost.
    #[test]
    fn replies_are_sent_after_the_client_closes_its_end() {
        use nbd_core::wire::consts::{cmd, SIMPLE_REPLY_MAGIC};
        let b = Arc::new(Hooks {
            read_delay: std::time::Duration::from_millis(300),
            ..Hooks::default()
        });
        let (mut s, h) = start(Arc::clone(&b));
        greet(&mut s);
        assert_eq!(go(&mut s, b"").0, rep::ACK);
        let req = RequestHeader {
            flags: 0,
            kind: cmd::READ,
            cookie: 9,
            offset: 0,
            length: 512,
        };
        s.write_all(&req.encode()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 16 + 512, "the reply to the READ");
        assert_eq!(
            u32::from_be_bytes(got[..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        assert_eq!(&got[4..16], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        h.join().unwrap();
    }

    /// Resident memory of this process, in bytes.
    fn resident() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// Found by fuzz/ (server_stream): an invalid READ (here 1.5 GiB,
    /// over the maximum) is answered with an error without the worker
    /// growing its data buffer to the request's length, which it kept for
    /// the connection's life (up to 4 GiB per worker).
    #[test]
    fn invalid_read_allocates_nothing() {
        use nbd_core::wire::consts::{cmd, SIMPLE_REPLY_MAGIC};
        let b = Arc::new(Hooks::default());
        let (mut s, h) = start(Arc::clone(&b));
        greet(&mut s);
        assert_eq!(go(&mut s, b"").0, rep::ACK);
        let before = resident();
        let len: u32 = 0x6000_0000;
        let req = RequestHeader {
            flags: 0,
            kind: cmd::READ,
            cookie: 1,
            offset: 0,
            length: u64::from(len),
        };
        s.write_all(&req.encode()).unwrap();
        let mut r = [0u8; 16];
        s.read_exact(&mut r).unwrap();
        assert_eq!(
            u32::from_be_bytes(r[..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        assert_ne!(
            u32::from_be_bytes(r[4..8].try_into().unwrap()),
            0,
            "an error"
        );
        // The connection (and its worker's buffer) is still alive here.
        let grown = resident().saturating_sub(before);
        assert!(
            grown < u64::from(len) / 4,
            "resident memory grew by {grown} bytes"
        );
        drop(s);
        h.join().unwrap();
    }

    #[test]
    fn preconnect_refusal_closes_before_the_greeting() {
        let b = Arc::new(Hooks {
            refuse_preconnect: true,
            ..Hooks::default()
        });
        let (mut s, h) = start(Arc::clone(&b));
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty(), "sent {} bytes", buf.len());
        h.join().unwrap();
        assert_eq!(b.log.lock().len(), 1);
    }

    #[test]
    fn open_refusal_is_an_error_reply_and_no_close() {
        let b = Arc::new(Hooks {
            refuse_open: true,
            ..Hooks::default()
        });
        let (mut s, h) = start(Arc::clone(&b));
        greet(&mut s);
        let (t, msg) = go(&mut s, b"");
        assert_eq!(t, rep::ERR_UNKNOWN);
        assert_eq!(msg, b"closed for lunch");
        drop(s);
        h.join().unwrap();
        let log = b.log.lock().clone();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[1], "open 7 ");
    }

    /// Serves one connection of `b`, sends it READs of 512 bytes (cookie,
    /// offset) all at once, then ends its input; returns every byte the
    /// server sent back once it has finished.
    fn reads_of_512(b: Hooks, reads: &[(u64, u64)]) -> Vec<u8> {
        use nbd_core::wire::consts::cmd;
        let (mut s, h) = start(Arc::new(b));
        greet(&mut s);
        assert_eq!(go(&mut s, b"").0, rep::ACK);
        let mut reqs = Vec::new();
        for &(cookie, offset) in reads {
            let req = RequestHeader {
                flags: 0,
                kind: cmd::READ,
                cookie,
                offset,
                length: 512,
            };
            reqs.extend_from_slice(&req.encode());
        }
        s.write_all(&reqs).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        h.join().unwrap();
        got
    }

    /// The error and cookie of the simple reply `r` starts with.
    fn simple_reply(r: &[u8]) -> (u32, u64) {
        use nbd_core::wire::consts::SIMPLE_REPLY_MAGIC;
        let magic = u32::from_be_bytes(r[..4].try_into().unwrap());
        assert_eq!(magic, SIMPLE_REPLY_MAGIC);
        (
            u32::from_be_bytes(r[4..8].try_into().unwrap()),
            u64::from_be_bytes(r[8..16].try_into().unwrap()),
        )
    }

    /// Requests sent together on a chain served inline are answered in
    /// one batch, in order; a READ that fails after its reply was begun
    /// in the batch is taken back and answered with the error alone.
    #[test]
    fn inline_batch_takes_back_a_failed_read() {
        let got = reads_of_512(
            Hooks {
                inline: true,
                ..Hooks::default()
            },
            &[(1, 0), (2, 1024), (3, 2048)],
        );
        assert_eq!(got.len(), (16 + 512) + 16 + (16 + 512));
        let reply = |at: usize| simple_reply(&got[at..]);
        assert_eq!(reply(0), (0, 1));
        assert_eq!(reply(16 + 512), (nbd_core::errno::host::EIO as u32, 2));
        assert_eq!(reply(16 + 512 + 16), (0, 3));
    }

    /// On a chain that may block, a small READ is first tried without
    /// waiting on the thread that read it: answered there when the data
    /// is at hand, else (not at hand, or failed) served by a worker with
    /// pread, whose answer, error included, is the one sent.
    #[test]
    fn nowait_reads_fall_back_to_a_worker() {
        let got = reads_of_512(
            Hooks {
                nowait: true,
                ..Hooks::default()
            },
            &[(1, 0), (2, 1024), (3, 2048), (4, 512), (5, 0)],
        );
        // Cookie → (error, data); workers may answer in any order.
        let mut replies = std::collections::HashMap::new();
        let mut at = 0;
        while at < got.len() {
            let (error, cookie) = simple_reply(&got[at..]);
            at += 16;
            let data = if error == 0 {
                at += 512;
                got[at - 512..at].to_vec()
            } else {
                Vec::new()
            };
            assert!(replies.insert(cookie, (error, data)).is_none());
        }
        let eio = nbd_core::errno::host::EIO as u32;
        assert_eq!(replies.len(), 5, "{replies:?}");
        assert_eq!(
            replies[&1],
            (0, vec![0xaa; 512]),
            "answered without waiting"
        );
        assert_eq!(replies[&2], (eio, vec![]), "pread's error");
        assert_eq!(replies[&3], (0, vec![0; 512]), "pread after a failure");
        assert_eq!(replies[&4], (0, vec![0; 512]), "pread");
        assert_eq!(replies[&5], (0, vec![0xaa; 512]));
    }
}
