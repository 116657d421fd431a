//! Moves bytes between a socket and the core client.
//!
//! A [`Connection`] owns the non-blocking socket and the sans-IO
//! [`Client`]. [`Connection::pump`] does all the I/O that can be done
//! without blocking; the handle's wait loop (see `handle.rs`) calls it, then
//! poll(2)s with the handle's lock released. The AIO calls will be thin
//! wrappers over the same pieces: nbd_aio_get_fd is the socket,
//! nbd_aio_get_direction is [`Connection::direction`], and
//! nbd_aio_notify_read/write are [`Connection::pump`].
//!
//! TLS: when the core says "start TLS now" ([`Client::tls_handshake_wanted`])
//! the connection creates a GnuTLS session (`crate::tls`) and runs its
//! handshake in the same pump; from then on plain text goes through the
//! session and ciphertext through the socket, still without blocking.

use crate::callbacks::{CmdCallbacks, Mid, OptCallbacks};
use crate::consts::{nbd_extent, LIBNBD_READ_DATA, LIBNBD_READ_HOLE};
use crate::errors::{err, Error};
use nbd_core::client::CookieMap;
use nbd_core::client::{Client, CommandBuffer, Config, Event, Phase};
use nbd_core::spin::SpinBackoff;
use std::collections::VecDeque;
use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Where a command's data lives: the C caller's own buffer, so reads land
/// in it and writes go out of it without a copy.
///
/// This is the one place a caller's memory is held beyond a borrow. Sound
/// because a sync call returns only once its command has completed, and a
/// connection that unwinds is dropped with every buffer it holds (see
/// `nbd_handle::wait`): no `CmdBuf` outlives the call that made it.
pub struct CmdBuf {
    ptr: *mut u8,
    len: usize,
    dir: Dir,
    /// The command (wire NBD_CMD_*), for the error of a failed command.
    pub kind: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    None,
    Read,
    Write,
}

// SAFETY: the buffer is only touched by whichever thread holds the handle's
// lock, and the caller who owns it is blocked until the command completes.
unsafe impl Send for CmdBuf {}

impl CmdBuf {
    /// A command without data (flush, trim, zero, cache).
    pub fn none() -> Self {
        CmdBuf {
            ptr: std::ptr::null_mut(),
            len: 0,
            dir: Dir::None,
            kind: 0,
        }
    }

    /// A READ into `buf`.
    ///
    /// # Safety
    /// The command must complete (or its connection be dropped) before
    /// `buf`'s borrow ends.
    pub unsafe fn read_into(buf: &mut [u8]) -> Self {
        CmdBuf {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            dir: Dir::Read,
            kind: 0,
        }
    }

    /// A WRITE from `buf`.
    ///
    /// # Safety
    /// As for [`CmdBuf::read_into`].
    pub unsafe fn write_from(buf: &[u8]) -> Self {
        CmdBuf {
            ptr: buf.as_ptr().cast_mut(),
            len: buf.len(),
            dir: Dir::Write,
            kind: 0,
        }
    }
}

impl CmdBuf {
    /// Where a READ's data goes (null for other commands).
    pub fn ptr(&self) -> *const u8 {
        self.ptr
    }
}

impl CommandBuffer for CmdBuf {
    fn read_buf(&mut self) -> &mut [u8] {
        if self.dir != Dir::Read {
            return &mut [];
        }
        // SAFETY: see the type's comment; Read buffers came from &mut [u8].
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    fn write_buf(&self) -> &[u8] {
        if self.dir != Dir::Write {
            return &[];
        }
        // SAFETY: see the type's comment.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// How many slices one sendmsg carries at most.
const MAX_IOV: usize = 16;

/// A command that completed and has not been retired yet. Its callbacks
/// stay with it until then: libnbd calls the free functions when the
/// command is retired.
pub struct Done {
    pub cookie: u64,
    pub kind: u16,
    pub result: Result<(), Error>,
    /// Boxed: most commands are retired by their completion callback (or
    /// have none), and this keeps the queue's entries small to move.
    pub cbs: Option<Box<CmdCallbacks>>,
}

pub struct Connection {
    sock: OwnedFd,
    /// An eventfd that wakes the thread blocked in poll(2) when another
    /// thread queued something to send. Made only at the first poll in
    /// transmission (see [`Self::wake_fd`]): a short connection never
    /// needs one, and libnbd has none, so it would cost each connection
    /// two system calls more than libnbd's.
    wake: Option<OwnedFd>,
    pub client: Client<CmdBuf>,
    /// Completed commands nobody has retired yet, oldest first
    /// (nbd_aio_peek_command_completed returns the first).
    pub done: VecDeque<Done>,
    /// Callbacks of commands in flight that have any, by cookie. The map
    /// keeps its capacity, so commands do not allocate once it has grown.
    pub cbs: CookieMap<CmdCallbacks>,
    /// Option mode: the callbacks of the option under way, and its
    /// outcome once the core reports it.
    pub opt: Option<OptCallbacks>,
    pub opt_result: Option<Result<u32, Error>>,
    /// Whether some thread is blocked in poll(2) on this connection.
    pub polling: bool,
    /// A non-blocking connect(2) is still under way: wait until the socket
    /// is writable, then look at SO_ERROR.
    pub connect_pending: bool,
    /// Meta context names by id, as C strings for the extent callback.
    ctx_names: Vec<(u32, CString)>,
    /// The extent callback's array, reused.
    entries: Vec<u32>,
    /// How to set up TLS if the server agrees to STARTTLS.
    pub tls_params: crate::tls::Params,
    /// The TLS session, from the server's ACK to STARTTLS on.
    tls: Option<crate::tls::Session>,
    /// Our write side has been shut down (after NBD_CMD_DISC went out).
    writes_shut: bool,
    /// LIBNBD_DEBUG: the state transitions, recorded only while debugging
    /// is on (the handle sets it and prints them).
    pub transitions: Option<crate::transitions::Transitions>,
    /// When the synchronous wait for a reply may spin before it blocks
    /// (spin.rs).
    pub spin: SpinBackoff,
}

/// Bytes as hex, for error messages about what a server sent.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The name libnbd gives a command in messages (the core's one table).
pub fn cmd_name(kind: u16) -> &'static str {
    nbd_core::wire::Command::from_wire(kind).short_name()
}

impl Connection {
    /// Takes over a socket and starts the handshake. The socket may still
    /// be connecting (a non-blocking connect(2) that said EINPROGRESS):
    /// then the handshake starts once it is writable.
    /// `connected`: the caller knows the socket is connected (the sync
    /// connect calls), which saves asking the kernel.
    pub fn new(sock: OwnedFd, config: Config, connected: bool) -> Result<Self, Error> {
        set_nonblocking(sock.as_raw_fd())?;
        let connect_pending = !connected && !is_connected(sock.as_raw_fd());
        let mut client = Client::new(config);
        // As libnbd on a plain socket: after NBD_CMD_DISC, shut down our
        // write side and close only once the server has hung up
        // (`shut_writes_after_disconnect`). Not under TLS, where the server
        // may wait for a close_notify we do not send.
        client.set_wait_for_server_close(true);
        Ok(Connection {
            sock,
            wake: None,
            client,
            writes_shut: false,
            done: VecDeque::with_capacity(16),
            cbs: CookieMap::with_capacity_and_hasher(16, Default::default()),
            opt: None,
            opt_result: None,
            polling: false,
            connect_pending,
            ctx_names: Vec::new(),
            entries: Vec::new(),
            tls_params: Default::default(),
            tls: None,
            transitions: None,
            spin: SpinBackoff::default(),
        })
    }

    /// An estimate of the memory this connection holds: itself and the
    /// core's buffers (nbd_get_handle_size).
    pub fn approximate_size(&self) -> usize {
        std::mem::size_of::<Self>() + self.client.buffer_capacity()
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Retires command `cookie` if it has completed. The caller drops the
    /// result's callbacks (runs their frees), best after unlocking.
    pub fn take_done(&mut self, cookie: u64) -> Option<Done> {
        let i = self.done.iter().position(|d| d.cookie == cookie)?;
        self.done.remove(i)
    }

    /// poll(2) events the client wants now.
    pub fn direction(&self) -> libc::c_short {
        if self.connect_pending {
            return if self.client.fatal_error().is_none() {
                libc::POLLOUT
            } else {
                0
            };
        }
        let mut ev = 0;
        if let Some(t) = &self.tls {
            if !t.pending_out().is_empty() {
                ev |= libc::POLLOUT;
            }
            if self.client.tls_handshake_wanted() {
                if ev == 0 {
                    ev |= libc::POLLIN;
                }
                return ev;
            }
        } else if self.client.tls_handshake_wanted() {
            // The session is created by the next pump.
            return libc::POLLOUT;
        }
        if self.client.wants_read() {
            ev |= libc::POLLIN;
        }
        if self.client.wants_write() {
            ev |= libc::POLLOUT;
        }
        ev
    }

    /// Whether TLS negotiation succeeded on this connection.
    pub fn tls_negotiated(&self) -> bool {
        self.client.tls_negotiated()
    }

    /// A description of the TLS session for debug messages.
    pub fn tls_description(&self) -> Option<String> {
        self.tls
            .as_ref()
            .filter(|_| self.client.tls_negotiated())
            .map(|t| t.describe())
    }

    /// Whether input is waiting inside the TLS session, where poll(2)
    /// cannot see it.
    fn tls_input_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.input_pending())
    }

    /// Runs the TLS handshake as far as the socket allows. Returns whether
    /// anything moved.
    fn tls_handshake(&mut self) -> bool {
        if !self.client.tls_handshake_wanted() {
            return false;
        }
        if self.tls.is_none() {
            // In TLS the client speaks first, so nothing may arrive between
            // the server's ACK to NBD_OPT_STARTTLS and our ClientHello. Bytes
            // already waiting were written in plain text after the ACK, by
            // the server or by a man in the middle (CVE-2021-3716's class);
            // they must never reach GnuTLS as if they were TLS, nor be read
            // as NBD. Fail clearly instead of with GnuTLS's "unexpected
            // packet" (Session::handshake catches them if they come later).
            let mut peek = [0u8; 16];
            // SAFETY: peek is writable for its length; MSG_PEEK leaves the
            // bytes in the socket.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    peek.as_mut_ptr().cast(),
                    peek.len(),
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                self.client.fail(err(
                    libc::EPROTO,
                    format!(
                        "handshake: server sent plain text after its ACK to \
                         NBD_OPT_STARTTLS, before the TLS handshake (starting {}); \
                         refusing it",
                        hex(&peek[..n as usize])
                    ),
                ));
                return true;
            }
            match crate::tls::Session::new(&self.tls_params) {
                Ok(t) => {
                    self.tls = Some(t);
                    self.client.set_wait_for_server_close(false);
                }
                Err(e) => {
                    self.client.fail(e);
                    return true;
                }
            }
        }
        let mut progress = false;
        loop {
            let Some(t) = self.tls.as_mut() else {
                return progress;
            };
            let r = t.handshake();
            if let Err(e) = self.tls_flush() {
                self.client.fail(e);
                return true;
            }
            match r {
                Ok(true) => {
                    self.client.tls_handshake_done();
                    return true;
                }
                Ok(false) => {}
                Err(e) => {
                    self.client.fail(e);
                    return true;
                }
            }
            let t = self.tls.as_ref().expect("session");
            if !t.pending_out().is_empty() {
                return progress; // wait until the socket takes it
            }
            match self.tls_fill() {
                Ok(true) => progress = true,
                Ok(false) => return progress,
                Err(e) => {
                    self.client.fail(e);
                    return true;
                }
            }
        }
    }

    /// Sends queued ciphertext until done or the socket is full.
    fn tls_flush(&mut self) -> Result<(), Error> {
        let sock = self.sock.as_raw_fd();
        let Some(t) = self.tls.as_mut() else {
            return Ok(());
        };
        while !t.pending_out().is_empty() {
            let out = t.pending_out();
            // SAFETY: out is readable for its length.
            let n = unsafe { libc::send(sock, out.as_ptr().cast(), out.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                match last_errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => break,
                    e => return Err(err(e, "send")),
                }
            }
            t.out_sent(n as usize);
        }
        Ok(())
    }

    /// Receives ciphertext into the session. Ok(true) if bytes (or EOF)
    /// came, Ok(false) if the socket had nothing.
    fn tls_fill(&mut self) -> Result<bool, Error> {
        let sock = self.sock.as_raw_fd();
        let Some(t) = self.tls.as_mut() else {
            return Ok(false);
        };
        loop {
            let buf = t.in_buf();
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                t.in_failed();
                match last_errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => return Ok(false),
                    e => return Err(err(e, "recv")),
                }
            }
            t.in_received(n as usize);
            return Ok(true);
        }
    }

    /// TLS: encrypts what the client has queued and sends it.
    fn tls_write_ready(&mut self) {
        loop {
            if let Err(e) = self.tls_flush() {
                self.client.fail(e);
                return;
            }
            let Some(t) = self.tls.as_mut() else { return };
            if t.out_full() || !self.client.wants_write() {
                return;
            }
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let count = self.client.send_bufs(&mut iov);
            match t.send(&iov[..count]) {
                Ok(0) => return,
                Ok(n) => self.client.send_done(n),
                Err(e) => {
                    self.client.fail(e);
                    return;
                }
            }
        }
    }

    /// TLS: decrypts into the client until the socket is drained.
    fn tls_read_ready(&mut self) -> bool {
        let mut progress = false;
        while self.client.wants_read() {
            let Some(t) = self.tls.as_mut() else { break };
            let buf = self.client.recv_buf();
            if buf.is_empty() {
                break;
            }
            match t.recv(buf) {
                Ok(crate::tls::Recv::Data(n)) => {
                    self.client.recv_done(n);
                    progress = true;
                }
                Ok(crate::tls::Recv::Eof) => {
                    self.client.recv_done(0);
                    progress = true;
                    break;
                }
                Ok(crate::tls::Recv::Again) => match self.tls_fill() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        self.client.fail(e);
                        break;
                    }
                },
                Err(e) => {
                    self.client.fail(e);
                    break;
                }
            }
        }
        progress
    }

    /// A pending non-blocking connect: finished yet? Fails the client if
    /// it failed; returns whether the socket is connected now.
    fn finish_connect(&mut self) -> bool {
        if !self.connect_pending {
            return true;
        }
        if self.client.fatal_error().is_some() {
            return false;
        }
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r <= 0 {
            return false;
        }
        let mut e: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: e and len are valid for SO_ERROR.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut e as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            e = last_errno();
        }
        if e != 0 {
            self.client.fail(err(e, "connect"));
            return false;
        }
        self.connect_pending = false;
        true
    }

    /// Sends what can be sent without blocking (after queueing commands:
    /// like libnbd, an AIO call starts sending at once).
    pub fn flush_writes(&mut self) {
        if !self.finish_connect() {
            return;
        }
        if self.tls_input_pending() {
            return self.pump();
        }
        self.write_ready();
        self.collect();
    }

    /// Does every read and write possible without blocking, then hands
    /// completions to their callbacks. I/O errors kill the connection
    /// through the client.
    pub fn pump(&mut self) {
        if !self.finish_connect() {
            self.collect();
            return;
        }
        loop {
            let handshake = self.tls_handshake();
            if self.client.tls_handshake_wanted() {
                break; // waiting for the socket
            }
            let sent = self.client.stats().bytes_sent;
            self.write_ready();
            if self.awaits_answer_to(sent) {
                break;
            }
            let read = self.read_ready();
            self.collect();
            // Reading may have queued more to send (the next option of
            // the handshake) or asked for TLS; writing cannot have made a
            // reply arrive, so only the first is worth another round.
            if !((read || handshake)
                && (self.client.wants_write() || self.client.tls_handshake_wanted()))
            {
                break;
            }
        }
        self.collect();
    }

    /// Sends what the client has queued, without reading: for a caller
    /// that has just queued a request and will poll(2) for its reply next,
    /// a recv(2) now would almost always be a wasted EAGAIN.
    pub fn pump_write(&mut self) {
        if !self.finish_connect() {
            self.collect();
            return;
        }
        if self.tls.is_some() && (self.tls_input_pending() || self.client.tls_handshake_wanted()) {
            return self.pump();
        }
        self.write_ready();
        self.collect();
    }

    /// Writes until the client has nothing more or the socket is full.
    fn write_ready(&mut self) {
        if self.tls.is_some() {
            return self.tls_write_ready();
        }
        while self.client.wants_write() {
            match self.send() {
                Ok((n, all)) => {
                    self.client.send_done(n);
                    if !all {
                        break; // socket buffer full
                    }
                }
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN) => break,
                Err(e) => {
                    self.client.fail(err(e, "send"));
                    break;
                }
            }
        }
        self.shut_writes_after_disconnect();
    }

    /// Once NBD_CMD_DISC is out we send nothing more: shutdown(SHUT_WR)
    /// tells the server at once (as libnbd does), so that it sees EOF and
    /// closes; the client then reads the server's EOF and is closed.
    fn shut_writes_after_disconnect(&mut self) {
        if self.writes_shut || !self.client.disconnect_sent() {
            return;
        }
        self.writes_shut = true;
        // SAFETY: plain syscall on our socket. A failure (the server has
        // gone already) shows up as EOF or an error on the next recv.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_WR) };
    }

    /// Whether we are in the handshake on a plain socket, and have just
    /// sent something (more than `sent_before` bytes out in total) that
    /// the server has to answer. The server speaks only when spoken to
    /// there, so a recv(2) now would be a wasted EAGAIN: poll(2) for the
    /// answer instead (every caller of `pump` polls, or lets its user
    /// poll, for what the client wants next).
    fn awaits_answer_to(&self, sent_before: u64) -> bool {
        self.tls.is_none()
            && self.handshaking()
            && self.client.stats().bytes_sent > sent_before
            && !self.client.wants_write()
    }

    fn handshaking(&self) -> bool {
        matches!(self.client.phase(), Phase::Connecting | Phase::Negotiating)
    }

    /// Reads until the socket is drained; returns whether anything came.
    /// In the handshake the client asks for each message's exact size, so
    /// a full read does not mean more is waiting: once a message has come
    /// that we must answer, or that ends the handshake, the server has
    /// nothing more to say until we speak, and we stop reading.
    fn read_ready(&mut self) -> bool {
        if self.tls.is_some() {
            return self.tls_read_ready();
        }
        let handshaking = self.handshaking();
        let mut progress = false;
        while self.client.wants_read() {
            let buf = self.client.recv_buf();
            let want = buf.len();
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), want, 0) };
            if n < 0 {
                match last_errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => break,
                    e => {
                        self.client.fail(err(e, "recv"));
                        break;
                    }
                }
            }
            let n = n as usize;
            self.client.recv_done(n);
            progress = true;
            if n == 0 || n < want {
                break; // EOF, or the socket is drained
            }
            if handshaking && (self.client.wants_write() || !self.handshaking()) {
                break; // our turn to speak, or the handshake is over
            }
        }
        progress
    }

    /// One sendmsg of what the client has queued. Returns the bytes sent
    /// and whether that was all of them, or the errno.
    fn send(&mut self) -> Result<(usize, bool), i32> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let count = self.client.send_bufs(&mut iov);
        let total: usize = iov[..count].iter().map(|s| s.len()).sum();
        // SAFETY: an all-zero msghdr is valid; IoSlice is ABI-compatible
        // with struct iovec on Unix (documented by std).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = count as _;
        // MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
        // SAFETY: msg points at live slices for the duration of the call.
        let n = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(last_errno());
        }
        Ok((n as usize, n as usize == total))
    }

    /// Hands the core's events to the callbacks they belong to, in order.
    /// Runs with the handle's lock held, as libnbd runs callbacks.
    pub(crate) fn collect(&mut self) {
        self.collect_events();
        if self.transitions.is_some() {
            let now = self.state_name();
            if let Some(t) = self.transitions.as_mut() {
                t.saw(now);
            }
        }
    }

    /// The state for the debug trace: the core's, or libnbd's name while
    /// connect(2) is still under way.
    pub fn state_name(&self) -> String {
        if self.connect_pending && self.client.fatal_error().is_none() {
            "CONNECT.CONNECTING".into()
        } else {
            self.client.state_name()
        }
    }

    fn collect_events(&mut self) {
        while let Some(ev) = self.client.poll_event() {
            match ev {
                // The buffer (ctx) is released here: the caller's memory is
                // no longer referred to once its command has completed.
                Event::Completed {
                    cookie,
                    ctx,
                    result,
                } => self.completed(cookie, ctx.kind, result),
                Event::ReadChunk {
                    cookie,
                    offset,
                    len,
                    hole,
                } => {
                    if let Some(cb) = self.cbs.get_mut(&cookie) {
                        cb.saw_chunk = true;
                        let status = if hole {
                            LIBNBD_READ_HOLE
                        } else {
                            LIBNBD_READ_DATA
                        };
                        let at = offset.wrapping_sub(cb.offset) as usize;
                        // SAFETY: the core checked the chunk lies within
                        // the command's buffer.
                        let data = unsafe { cb.buf.add(at) };
                        call_chunk(cb, data, len as usize, offset, status);
                    }
                }
                Event::BlockStatus {
                    cookie,
                    context_id,
                    extents,
                } => self.block_status(cookie, context_id, &extents),
                Event::OptionDone { result } => {
                    let mut opt = self.opt.take();
                    if let Some(o) = opt.as_mut() {
                        let mut error = result.as_ref().err().map_or(0, |e| e.errno);
                        o.completion.call(&mut error);
                    }
                    // Frees: list or context callback, then completion.
                    drop(opt);
                    self.opt_result = Some(result);
                }
                Event::ListedExport { name, description } => {
                    if let Some(l) = self.opt.as_mut().and_then(|o| o.list.as_mut()) {
                        let n = cstring_lossy(name);
                        let d = cstring_lossy(description);
                        l.call(&n, &d);
                    }
                }
                Event::ListedMetaContext { name } => {
                    if let Some(c) = self.opt.as_mut().and_then(|o| o.context.as_mut()) {
                        c.call(&cstring_lossy(name));
                    }
                }
            }
        }
        // An option whose connection ended before its answer: its
        // completion is still reached once, with the connection's error.
        if self.opt.is_some() && matches!(self.client.phase(), Phase::Dead | Phase::Closed) {
            let e = self
                .client
                .fatal_error()
                .cloned()
                .unwrap_or_else(|| err(libc::ENOTCONN, "connection closed during the option"));
            let mut opt = self.opt.take();
            if let Some(o) = opt.as_mut() {
                let mut error = e.errno;
                o.completion.call(&mut error);
            }
            drop(opt);
            self.opt_result = Some(Err(e));
        }
    }

    fn completed(&mut self, cookie: u64, kind: u16, mut result: Result<(), Error>) {
        // Sync calls have no callbacks: the map is empty, skip the lookup.
        let cb = if self.cbs.is_empty() {
            None
        } else {
            self.cbs.remove(&cookie)
        };
        let Some(mut cb) = cb else {
            self.done.push_back(Done {
                cookie,
                kind,
                result,
                cbs: None,
            });
            return;
        };
        // A simple reply to a structured read is one data chunk.
        let structured = self.client.export().is_some_and(|e| e.structured_replies);
        if result.is_ok() && !structured && !cb.saw_chunk && !cb.buf.is_null() {
            if let Mid::Chunk(_) = cb.mid {
                let (buf, len, offset) = (cb.buf, cb.len, cb.offset);
                call_chunk(&mut cb, buf, len, offset, LIBNBD_READ_DATA);
            }
        }
        if result.is_ok() && cb.error != 0 {
            result = Err(err(cb.error, format!("{}: command failed", cmd_name(kind))));
        }
        let mut error = result.as_ref().err().map_or(0, |e| e.errno);
        let r = cb.completion.call(&mut error);
        let retire = r == 1;
        if r == -1 && error != 0 && result.as_ref().err().map(|e| e.errno) != Some(error) {
            result = Err(err(error, format!("{}: command failed", cmd_name(kind))));
        }
        if retire {
            // Frees: the mid-command callback's, then the completion's.
            drop(cb);
        } else {
            self.done.push_back(Done {
                cookie,
                kind,
                result,
                cbs: Some(Box::new(cb)),
            });
        }
    }

    fn block_status(&mut self, cookie: u64, id: u32, extents: &[(u64, u64)]) {
        let Some(cb) = self.cbs.get_mut(&cookie) else {
            return;
        };
        if !matches!(cb.mid, Mid::Extent(_) | Mid::Extent64(_)) {
            return;
        }
        if !self.ctx_names.iter().any(|(i, _)| *i == id) {
            if let Some(e) = self.client.export() {
                self.ctx_names = e
                    .meta_contexts
                    .iter()
                    .map(|(i, n)| (*i, cstring_lossy(n.clone())))
                    .collect();
            }
        }
        let Some((_, name)) = self.ctx_names.iter().find(|(i, _)| *i == id) else {
            return;
        };
        if let Mid::Extent64(x) = &mut cb.mid {
            // The 64-bit callback (nbd_block_status_64) sees the extents
            // as the server sent them.
            let mut wide: Vec<nbd_extent> = extents
                .iter()
                .map(|&(length, flags)| nbd_extent { length, flags })
                .collect();
            let mut error = cb.error;
            if x.call(name, cb.offset, &mut wide, &mut error) == -1 && cb.error == 0 {
                cb.error = if error != 0 { error } else { libc::EPROTO };
            }
            return;
        }
        // The 32-bit callback, as libnbd narrows 64-bit extents for it: a
        // length over 32 bits is cut to the largest length below 4 GiB
        // aligned to 512 bytes (or the server's larger minimum block size)
        // and ends the list (later extents are dropped); flags
        // over 32 bits cannot be told and give the callback EOVERFLOW.
        let align = self
            .client
            .export()
            .and_then(|e| e.block_size)
            .map_or(512, |(min, _, _)| min.max(512));
        let mut overflow = false;
        self.entries.clear();
        for &(len, flags) in extents {
            let flags = u32::try_from(flags).unwrap_or_else(|_| {
                overflow = true;
                u32::MAX
            });
            if let Ok(len) = u32::try_from(len) {
                self.entries.push(len);
                self.entries.push(flags);
            } else {
                self.entries.push(u32::MAX - u32::MAX % align);
                self.entries.push(flags);
                break;
            }
        }
        let mut error = if overflow && cb.error == 0 {
            libc::EOVERFLOW
        } else {
            cb.error
        };
        if let Mid::Extent(x) = &mut cb.mid {
            if x.call(name, cb.offset, &mut self.entries, &mut error) == -1 && cb.error == 0 {
                cb.error = if error != 0 { error } else { libc::EPROTO };
            }
        }
    }

    /// Blocks in poll(2) until the socket is ready for `events` or another
    /// thread wakes us. With `spin` (a wait for a command's reply), a wait
    /// that reads first spins for a moment under that back-off (spin.rs).
    /// Called with the handle's lock released: it touches only the two
    /// fds, which live as long as the connection, and the back-off the
    /// caller took out.
    pub fn poll(
        sock: RawFd,
        wake: RawFd,
        events: libc::c_short,
        spin: Option<&mut SpinBackoff>,
    ) -> Result<(), Error> {
        let mut fds = [
            libc::pollfd {
                fd: sock,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut r = 0;
        if let Some(backoff) = spin.filter(|_| events & libc::POLLIN != 0) {
            r = crate::spin::spin(backoff, &mut fds, crate::spin::limit());
        }
        loop {
            if r == 0 {
                // SAFETY: fds is a valid array of 2 pollfd.
                r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            }
            if r >= 0 {
                if fds[1].revents & libc::POLLIN != 0 {
                    let mut v = 0u64;
                    // SAFETY: reads 8 bytes into v.
                    let _ = unsafe { libc::read(wake, (&mut v as *mut u64).cast(), 8) };
                }
                return Ok(());
            }
            match last_errno() {
                libc::EINTR => r = 0,
                e => return Err(err(e, "poll")),
            }
        }
    }

    /// The fd a thread about to poll(2) watches for wake-ups, or -1
    /// (which poll ignores) when no other thread can need to wake it.
    /// That is so until the handshake is over and while NBD_CMD_DISC has
    /// not gone out: in the handshake the poller always waits for an
    /// answer the server owes (or for room to send what is queued), and
    /// after NBD_CMD_DISC nothing more can be queued. Only in between
    /// can another thread queue a command while this one waits for a
    /// reply, and need to wake it to send the command.
    pub fn wake_fd(&mut self) -> Result<RawFd, Error> {
        let transmission = matches!(self.client.phase(), Phase::Ready | Phase::Processing);
        if self.wake.is_none() && (!transmission || self.client.disconnect_sent()) {
            return Ok(-1);
        }
        if self.wake.is_none() {
            // SAFETY: plain syscall; the result is checked.
            let w = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if w < 0 {
                return Err(err(last_errno(), "eventfd"));
            }
            // SAFETY: w is a new fd we own.
            self.wake = Some(unsafe { OwnedFd::from_raw_fd(w) });
        }
        Ok(self.wake.as_ref().map_or(-1, |w| w.as_raw_fd()))
    }

    /// Wakes the thread blocked in poll(2), if any.
    pub fn wake_poller(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from one; an eventfd that would overflow
        // fails with EAGAIN, which is fine: it is readable already.
        // No eventfd: the poller does not watch one, and will wake by
        // itself (see wake_fd).
        if let Some(w) = &self.wake {
            let _ = unsafe { libc::write(w.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

fn call_chunk(cb: &mut CmdCallbacks, data: *const u8, len: usize, offset: u64, status: i32) {
    let mut error = cb.error;
    if let Mid::Chunk(c) = &mut cb.mid {
        if c.call(data, len, offset, status, &mut error) == -1 && cb.error == 0 {
            cb.error = if error != 0 { error } else { libc::EPROTO };
        }
    }
}

/// A C string from bytes the server sent; an interior NUL ends it.
fn cstring_lossy(mut v: Vec<u8>) -> CString {
    if let Some(i) = v.iter().position(|b| *b == 0) {
        v.truncate(i);
    }
    CString::new(v).unwrap_or_default()
}

/// Whether a socket's connection is established (a non-blocking connect
/// may still be under way).
fn is_connected(fd: RawFd) -> bool {
    // SAFETY: an all-zero sockaddr_storage is valid; getpeername fills it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and len are valid for getpeername.
    let r = unsafe {
        libc::getpeername(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    r == 0 || last_errno() != libc::ENOTCONN
}

/// Sets O_NONBLOCK with one ioctl(FIONBIO) rather than fcntl's
/// F_GETFL + F_SETFL: it changes that one flag and nothing else.
pub fn set_nonblocking(fd: RawFd) -> Result<(), Error> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one int; fd is ours; the result is checked.
    if unsafe { libc::ioctl(fd, libc::FIONBIO, &on) } < 0 {
        return Err(err(last_errno(), "ioctl FIONBIO"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdbuf_directions() {
        let mut data = vec![1u8, 2, 3];
        let mut r = unsafe { CmdBuf::read_into(&mut data) };
        assert_eq!(r.read_buf().len(), 3);
        assert!(r.write_buf().is_empty());
        let w = unsafe { CmdBuf::write_from(&data) };
        assert_eq!(w.write_buf(), &[1, 2, 3]);
        let mut n = CmdBuf::none();
        assert!(n.read_buf().is_empty() && n.write_buf().is_empty());
    }
}
