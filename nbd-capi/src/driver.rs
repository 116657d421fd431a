//! Moves bytes between a socket and the core client.
//!
//! A [`Connection`] owns the non-blocking socket and the sans-IO
//! [`Client`]. [`Connection::pump`] does all the I/O that can be done
//! without blocking; the handle's wait loop (see `handle.rs`) calls it, then
//! poll(2)s with the handle's lock released. The AIO calls will be thin
//! wrappers over the same pieces: nbd_aio_get_fd is the socket,
//! nbd_aio_get_direction is [`Connection::direction`], and
//! nbd_aio_notify_read/write are [`Connection::pump`].

use crate::errors::{err, Error};
use nbd_core::client::{Client, CommandBuffer, Config, Event};
use std::collections::HashMap;
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
        }
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

pub struct Connection {
    sock: OwnedFd,
    /// An eventfd that wakes the thread blocked in poll(2) when another
    /// thread queued something to send.
    wake: OwnedFd,
    pub client: Client<CmdBuf>,
    /// Results of completed commands nobody has collected yet, by cookie.
    done: HashMap<u64, Result<(), Error>>,
    /// Whether some thread is blocked in poll(2) on this connection.
    pub polling: bool,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Connection {
    /// Takes over a connected socket and starts the handshake.
    pub fn new(sock: OwnedFd, config: Config) -> Result<Self, Error> {
        set_nonblocking(sock.as_raw_fd())?;
        // SAFETY: plain syscall; the result is checked.
        let w = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if w < 0 {
            return Err(err(last_errno(), "eventfd"));
        }
        // SAFETY: w is a new fd we own.
        let wake = unsafe { OwnedFd::from_raw_fd(w) };
        Ok(Connection {
            sock,
            wake,
            client: Client::new(config),
            done: HashMap::with_capacity(16),
            polling: false,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Collects the result of command `cookie` if it has completed.
    pub fn take_done(&mut self, cookie: u64) -> Option<Result<(), Error>> {
        self.done.remove(&cookie)
    }

    /// poll(2) events the client wants now.
    pub fn direction(&self) -> libc::c_short {
        let mut ev = 0;
        if self.client.wants_read() {
            ev |= libc::POLLIN;
        }
        if self.client.wants_write() {
            ev |= libc::POLLOUT;
        }
        ev
    }

    /// Does every read and write possible without blocking, then collects
    /// completions. I/O errors kill the connection through the client.
    pub fn pump(&mut self) {
        loop {
            let mut progress = false;
            while self.client.wants_write() {
                match self.send() {
                    Ok((n, all)) => {
                        self.client.send_done(n);
                        progress = true;
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
            while self.client.wants_read() {
                let buf = self.client.recv_buf();
                let want = buf.len();
                // SAFETY: buf is writable for its length.
                let n =
                    unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), want, 0) };
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
            }
            self.collect();
            if !progress {
                break;
            }
        }
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

    fn collect(&mut self) {
        while let Some(ev) = self.client.poll_event() {
            // The buffer (ctx) is released here: the caller's memory is
            // no longer referred to once its command has completed.
            if let Event::Completed { cookie, result, .. } = ev {
                self.done.insert(cookie, result);
            }
        }
    }

    /// Blocks in poll(2) until the socket is ready for `events` or another
    /// thread wakes us. Called with the handle's lock released: it touches
    /// only the two fds, which live as long as the connection.
    pub fn poll(sock: RawFd, wake: RawFd, events: libc::c_short) -> Result<(), Error> {
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
        loop {
            // SAFETY: fds is a valid array of 2 pollfd.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r >= 0 {
                if fds[1].revents & libc::POLLIN != 0 {
                    let mut v = 0u64;
                    // SAFETY: reads 8 bytes into v.
                    let _ = unsafe { libc::read(wake, (&mut v as *mut u64).cast(), 8) };
                }
                return Ok(());
            }
            match last_errno() {
                libc::EINTR => continue,
                e => return Err(err(e, "poll")),
            }
        }
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Wakes the thread blocked in poll(2), if any.
    pub fn wake_poller(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from one; an eventfd that would overflow
        // fails with EAGAIN, which is fine: it is readable already.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

pub fn set_nonblocking(fd: RawFd) -> Result<(), Error> {
    // SAFETY: plain fcntl calls on an fd we own; results checked.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(err(last_errno(), "fcntl"));
        }
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
