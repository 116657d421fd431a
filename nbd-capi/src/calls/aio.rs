//! The asynchronous API: the socket and its direction, notifications,
//! nbd_poll, the AIO commands and their retirement, and the state
//! predicates. Everything runs on the same connection machinery as the
//! sync calls (`driver.rs`); callbacks run with the handle's lock held.

use crate::callbacks::{self, CmdCallbacks, Mid};
use crate::consts::*;
use crate::driver::CmdBuf;
use crate::errors::{err, Error};
use crate::handle::{conn_mut, fatal, nbd_handle, Held, State};
use nbd_core::client::{Command, Phase};
use nbd_core::wire::consts::cmd;
use parking_lot::MutexGuard;
use std::ffi::CStr;
use std::os::raw::{c_int, c_uint};

fn flags16(flags: u32) -> Result<u16, Error> {
    u16::try_from(flags).map_err(|_| err(libc::EINVAL, format!("invalid flag: {flags}")))
}

/// Queues a command with its callbacks (refused: their frees run, the
/// completion is never called) and returns its cookie.
#[allow(clippy::too_many_arguments)]
fn submit(
    h: &nbd_handle,
    g: &mut Held<'_>,
    kind: u16,
    flags: u32,
    offset: u64,
    count: u64,
    buf: CmdBuf,
    mid: Mid,
    completion: callbacks::Completion,
) -> Result<i64, Error> {
    let cbs = CmdCallbacks {
        buf: buf.ptr(),
        len: count as usize,
        offset,
        error: 0,
        saw_chunk: false,
        mid,
        completion,
    };
    let flags = flags16(flags)?;
    let mut c = Command::new(kind, flags, offset, count);
    c.report_chunks = matches!(cbs.mid, Mid::Chunk(_));
    h.aio(g, c, buf, Some(cbs)).map(|c| c as i64)
}

pub fn aio_pread(
    h: &nbd_handle,
    g: &mut Held<'_>,
    buf: &mut [u8],
    offset: u64,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let count = buf.len() as u64;
    // SAFETY: libnbd's contract: buf stays valid until the command
    // completes; a connection dropped with it in flight never touches it.
    let b = unsafe { CmdBuf::read_into(buf) };
    submit(
        h,
        g,
        cmd::READ,
        flags,
        offset,
        count,
        b,
        Mid::None,
        completion_callback,
    )
}

pub fn aio_pread_structured(
    h: &nbd_handle,
    g: &mut Held<'_>,
    buf: &mut [u8],
    offset: u64,
    chunk_callback: callbacks::Chunk,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let count = buf.len() as u64;
    // SAFETY: as in aio_pread.
    let b = unsafe { CmdBuf::read_into(buf) };
    let mid = Mid::Chunk(chunk_callback);
    submit(
        h,
        g,
        cmd::READ,
        flags,
        offset,
        count,
        b,
        mid,
        completion_callback,
    )
}

pub fn aio_pwrite(
    h: &nbd_handle,
    g: &mut Held<'_>,
    buf: &[u8],
    offset: u64,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let count = buf.len() as u64;
    // SAFETY: as in aio_pread.
    let b = unsafe { CmdBuf::write_from(buf) };
    submit(
        h,
        g,
        cmd::WRITE,
        flags,
        offset,
        count,
        b,
        Mid::None,
        completion_callback,
    )
}

pub fn aio_flush(
    h: &nbd_handle,
    g: &mut Held<'_>,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let none = CmdBuf::none();
    submit(
        h,
        g,
        cmd::FLUSH,
        flags,
        0,
        0,
        none,
        Mid::None,
        completion_callback,
    )
}

pub fn aio_trim(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let none = CmdBuf::none();
    submit(
        h,
        g,
        cmd::TRIM,
        flags,
        offset,
        count,
        none,
        Mid::None,
        completion_callback,
    )
}

pub fn aio_cache(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let none = CmdBuf::none();
    submit(
        h,
        g,
        cmd::CACHE,
        flags,
        offset,
        count,
        none,
        Mid::None,
        completion_callback,
    )
}

pub fn aio_zero(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let none = CmdBuf::none();
    let k = cmd::WRITE_ZEROES;
    submit(
        h,
        g,
        k,
        flags,
        offset,
        count,
        none,
        Mid::None,
        completion_callback,
    )
}

pub fn aio_block_status(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    extent_callback: callbacks::Extent,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let none = CmdBuf::none();
    let mid = Mid::Extent(extent_callback);
    submit(
        h,
        g,
        cmd::BLOCK_STATUS,
        flags,
        offset,
        count,
        none,
        mid,
        completion_callback,
    )
}

pub fn aio_block_status_64(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    extent64_callback: callbacks::Extent64,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let none = CmdBuf::none();
    let mid = Mid::Extent64(extent64_callback);
    submit(
        h,
        g,
        cmd::BLOCK_STATUS,
        flags,
        offset,
        count,
        none,
        mid,
        completion_callback,
    )
}

// The C call's own arguments: nothing to group.
#[allow(clippy::too_many_arguments)]
pub fn aio_block_status_filter(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    contexts: Vec<&CStr>,
    extent64_callback: callbacks::Extent64,
    completion_callback: callbacks::Completion,
    flags: u32,
) -> Result<i64, Error> {
    let ids = super::data::filter_ids(g, &contexts)?;
    let cbs = CmdCallbacks {
        buf: std::ptr::null(),
        len: 0,
        offset,
        error: 0,
        saw_chunk: false,
        mid: Mid::Extent64(extent64_callback),
        completion: completion_callback,
    };
    let flags = flags16(flags)?;
    let c = Command::new(cmd::BLOCK_STATUS, flags, offset, count);
    h.aio_filtered(g, c, CmdBuf::none(), &ids, Some(cbs))
        .map(|c| c as i64)
}

/// Queues NBD_CMD_DISC after every command already queued; the handle is
/// closed once it is out and every reply is in.
pub fn aio_disconnect(_h: &nbd_handle, g: &mut Held<'_>, flags: u32) -> Result<(), Error> {
    if flags != 0 {
        return Err(err(libc::EINVAL, format!("invalid flag: {flags}")));
    }
    let conn = conn_mut(g)?;
    conn.client.disconnect()?;
    conn.flush_writes();
    Ok(())
}

/// The socket, while there is a live one (libnbd closes it when the
/// connection is closed or dead).
pub fn aio_get_fd(_h: &nbd_handle, g: &mut Held<'_>) -> Result<c_int, Error> {
    g.conn
        .as_ref()
        .filter(|c| g.dead.is_none() && !matches!(c.client.phase(), Phase::Dead | Phase::Closed))
        .map(|c| c.fd())
        .ok_or_else(|| err(libc::EINVAL, "connection is not in a connected state"))
}

/// The live connection an event can move on: EINVAL otherwise, as
/// libnbd's "invalid in state" errors.
fn live<'a>(g: &'a mut Held<'_>, what: &str) -> Result<&'a mut crate::driver::Connection, Error> {
    let state = match (&g.dead, g.conn.as_ref().map(|c| c.client.phase())) {
        (Some(_), _) | (None, Some(Phase::Dead)) => "dead",
        (None, None) => "created",
        (None, Some(Phase::Closed)) => "closed",
        _ => "",
    };
    if !state.is_empty() {
        return Err(err(
            libc::EINVAL,
            format!("{what} is invalid in state {state}"),
        ));
    }
    conn_mut(g)
}

/// LIBNBD_AIO_DIRECTION_* from what the core wants now, so it cannot
/// disagree with what notify_read/write will do.
pub fn aio_get_direction(_h: &nbd_handle, g: &mut Held<'_>) -> Result<c_uint, Error> {
    let Some(c) = g.conn.as_ref() else {
        return Ok(0);
    };
    let ev = c.direction();
    let mut d = 0;
    if ev & libc::POLLIN != 0 {
        d |= LIBNBD_AIO_DIRECTION_READ;
    }
    if ev & libc::POLLOUT != 0 {
        d |= LIBNBD_AIO_DIRECTION_WRITE;
    }
    Ok(d as c_uint)
}

/// Moves the connection on until the socket would block. Fails if that
/// killed the connection.
fn notify(g: &mut Held<'_>) -> Result<(), Error> {
    let conn = live(g, "external event")?;
    let was_dead = conn.client.phase() == Phase::Dead;
    conn.pump();
    if !was_dead && conn.client.phase() == Phase::Dead {
        return Err(fatal(conn));
    }
    Ok(())
}

/// libnbd's state machine accepts a read (write) notification only in a
/// state that waits for the socket to become readable (writable): any
/// other is EINVAL and changes nothing.
fn expect_direction(g: &mut Held<'_>, what: &str, event: libc::c_short) -> Result<(), Error> {
    let conn = live(g, what)?;
    if conn.direction() & event == 0 {
        return Err(err(
            libc::EINVAL,
            format!("{what} is invalid: the connection is not waiting for it"),
        ));
    }
    Ok(())
}

pub fn aio_notify_read(_h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    expect_direction(g, "external event notify_read", libc::POLLIN)?;
    notify(g)
}

pub fn aio_notify_write(_h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    expect_direction(g, "external event notify_write", libc::POLLOUT)?;
    notify(g)
}

/// One poll(2) on the socket, then one notification. The handle lock is
/// released only while blocked in poll(2), as in the sync calls' wait.
/// 1 if the state machine moved, 0 on timeout.
pub fn poll(h: &nbd_handle, g: &mut Held<'_>, timeout: c_int) -> Result<c_int, Error> {
    poll2(h, g, -1, timeout)
}

/// nbd_poll, also waiting for `fd` (if not -1) to become readable, as
/// libnbd 1.16 does: an eventfd or a pipe lets another thread end the
/// wait. 1 if either woke it (the state machine moved on if the socket
/// did), 0 on timeout.
pub fn poll2(_h: &nbd_handle, g: &mut Held<'_>, fd: c_int, timeout: c_int) -> Result<c_int, Error> {
    if fd < -1 {
        return Err(err(libc::EBADF, format!("invalid file descriptor: {fd}")));
    }
    let (sock, events) = {
        let conn = live(g, "polling")?;
        (conn.fd(), conn.direction())
    };
    if events == 0 {
        return Err(err(
            libc::EINVAL,
            "nothing to poll for: the connection is not waiting for the server",
        ));
    }
    // poll(2) skips an entry whose fd is negative.
    let mut p = [
        libc::pollfd {
            fd: sock,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let r = MutexGuard::unlocked(&mut g.g, || loop {
        // SAFETY: two valid pollfds. The socket lives as long as the
        // connection; a concurrent nbd_close on this handle, or closing
        // `fd` meanwhile, is the caller's bug, as in libnbd.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, timeout) };
        if r >= 0 {
            return Ok(r);
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if e != libc::EINTR {
            return Err(err(e, "poll"));
        }
    })?;
    if r == 0 {
        return Ok(0);
    }
    let revents = p[0].revents;
    if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLOUT) != 0 {
        notify(g)?;
    } else if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(err(libc::ENOTCONN, "server closed socket unexpectedly"));
    }
    Ok(1)
}

pub fn aio_in_flight(_h: &nbd_handle, g: &mut Held<'_>) -> Result<c_int, Error> {
    Ok(g.conn.as_ref().map_or(0, |c| c.client.in_flight() as c_int))
}

/// 1 and retired if the command succeeded, -1 (and retired) with its error
/// if it failed, 0 if it has not completed. As in libnbd 1.14.2, a cookie
/// that is unknown or already retired is 0 too. The retired command's
/// callbacks are freed here, with the lock held (libnbd's FREE_CALLBACK).
pub fn aio_command_completed(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    cookie: u64,
) -> Result<bool, Error> {
    if cookie == 0 || cookie > i64::MAX as u64 {
        return Err(err(libc::EINVAL, format!("invalid aio cookie {cookie}")));
    }
    let Some(done) = g.conn.as_mut().and_then(|c| c.take_done(cookie)) else {
        return Ok(false);
    };
    done.result.map(|()| true)
}

/// The first completed, unretired command's cookie; 0 if commands are in
/// flight but none has completed; -1 if nothing is in flight at all.
pub fn aio_peek_command_completed(_h: &nbd_handle, g: &mut Held<'_>) -> Result<i64, Error> {
    if let Some(c) = g.conn.as_ref() {
        if let Some(d) = c.done.front() {
            return Ok(d.cookie as i64);
        }
        if c.client.in_flight() > 0 {
            return Ok(0);
        }
    }
    Err(err(libc::EINVAL, "no commands are in flight"))
}

/// The core's phase, None before connecting or when the handle died
/// before it had a connection.
fn phase(g: &Held<'_>) -> Option<Phase> {
    if g.dead.is_some() {
        return Some(Phase::Dead);
    }
    g.conn.as_ref().map(|c| c.client.phase())
}

pub fn aio_is_created(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(g.state() == State::Created)
}

pub fn aio_is_connecting(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(phase(g) == Some(Phase::Connecting))
}

pub fn aio_is_negotiating(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(phase(g) == Some(Phase::Negotiating))
}

pub fn aio_is_ready(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(phase(g) == Some(Phase::Ready))
}

pub fn aio_is_processing(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(phase(g) == Some(Phase::Processing))
}

pub fn aio_is_dead(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(phase(g) == Some(Phase::Dead))
}

pub fn aio_is_closed(_h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    Ok(phase(g) == Some(Phase::Closed))
}

const fn cstr(b: &'static [u8]) -> &'static CStr {
    match CStr::from_bytes_with_nul(b) {
        Ok(s) => s,
        Err(_) => panic!("not NUL-terminated"),
    }
}

/// A static description of the state (libnbd's are of its internal state
/// machine and documented as unstable; ours follow its names).
pub fn connection_state(_h: &nbd_handle, g: &mut Held<'_>) -> Result<&'static CStr, Error> {
    Ok(match phase(g) {
        None => cstr(b"START: Handle after being initially created\0"),
        Some(Phase::Connecting) => cstr(b"CONNECT: Connecting and negotiating with the server\0"),
        Some(Phase::Negotiating) => {
            cstr(b"NEGOTIATING: Connection is ready to negotiate an NBD option\0")
        }
        Some(Phase::Ready) => cstr(b"READY: Connection is ready to process NBD commands\0"),
        Some(Phase::Processing) => cstr(b"REPLY: Commands are in flight\0"),
        Some(Phase::Dead) => {
            cstr(b"DEAD: Connection is in an unrecoverable error state, can only be closed\0")
        }
        Some(Phase::Closed) => cstr(b"CLOSED: Connection is closed\0"),
    })
}
