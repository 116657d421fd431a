//! Commands: read, write, flush, trim, zero, cache, and shutting down.

use crate::callbacks::{self, CmdCallbacks, Mid};
use crate::driver::CmdBuf;
use crate::errors::{err, Error};
use crate::handle::{nbd_handle, Held};
use nbd_core::client::Command;
use nbd_core::wire::consts::cmd;
use std::ffi::CStr;

/// Sends one command and waits for it. The core makes libnbd's checks in
/// libnbd's order (state, command support, flags against what the server
/// advertised as in the default strict mode, zero length, bounds: EINVAL for
/// reads, ENOSPC for writes, then ERANGE over 64 MiB).
/// LIBNBD_CMD_FLAG_* equal the wire's NBD_CMD_FLAG_*.
fn run(
    h: &nbd_handle,
    g: &mut Held<'_>,
    kind: u16,
    flags: u32,
    offset: u64,
    count: u64,
    buf: CmdBuf,
) -> Result<(), Error> {
    let flags =
        u16::try_from(flags).map_err(|_| err(libc::EINVAL, format!("invalid flag: {flags}")))?;
    h.run(g, Command::new(kind, flags, offset, count), buf)
}

pub fn pread(
    h: &nbd_handle,
    g: &mut Held<'_>,
    buf: &mut [u8],
    offset: u64,
    flags: u32,
) -> Result<(), Error> {
    let count = buf.len() as u64;
    // SAFETY: h.run returns only once the command has completed or its
    // connection has been dropped, so buf outlives every use.
    let cb = unsafe { CmdBuf::read_into(buf) };
    run(h, g, cmd::READ, flags, offset, count, cb)
}

pub fn pwrite(
    h: &nbd_handle,
    g: &mut Held<'_>,
    buf: &[u8],
    offset: u64,
    flags: u32,
) -> Result<(), Error> {
    // SAFETY: as in pread.
    let cb = unsafe { CmdBuf::write_from(buf) };
    run(h, g, cmd::WRITE, flags, offset, buf.len() as u64, cb)
}

pub fn flush(h: &nbd_handle, g: &mut Held<'_>, flags: u32) -> Result<(), Error> {
    run(h, g, cmd::FLUSH, flags, 0, 0, CmdBuf::none())
}

pub fn trim(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    flags: u32,
) -> Result<(), Error> {
    run(h, g, cmd::TRIM, flags, offset, count, CmdBuf::none())
}

pub fn cache(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    flags: u32,
) -> Result<(), Error> {
    run(h, g, cmd::CACHE, flags, offset, count, CmdBuf::none())
}

pub fn zero(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    flags: u32,
) -> Result<(), Error> {
    run(
        h,
        g,
        cmd::WRITE_ZEROES,
        flags,
        offset,
        count,
        CmdBuf::none(),
    )
}

/// Disconnects and waits for the server to close. Commands queued before
/// it are sent first, unless LIBNBD_SHUTDOWN_ABANDON_PENDING: then those
/// not yet started on the wire are never sent and complete with ENOTCONN
/// (AIO commands the socket could not take yet).
pub fn shutdown(h: &nbd_handle, g: &mut Held<'_>, flags: u32) -> Result<(), Error> {
    if flags & crate::consts::LIBNBD_SHUTDOWN_ABANDON_PENDING != 0 {
        if let Ok(conn) = crate::handle::conn_mut(g) {
            conn.client.abandon_unsent();
            conn.collect();
        }
    }
    h.shutdown(g)
}

/// A read whose structured chunks go to `chunk_callback` as they arrive
/// (one data chunk for a simple reply).
pub fn pread_structured(
    h: &nbd_handle,
    g: &mut Held<'_>,
    buf: &mut [u8],
    offset: u64,
    chunk_callback: callbacks::Chunk,
    flags: u32,
) -> Result<(), Error> {
    let count = buf.len() as u64;
    // SAFETY: as in pread.
    let cb = unsafe { CmdBuf::read_into(buf) };
    let cbs = CmdCallbacks {
        buf: cb.ptr(),
        len: count as usize,
        offset,
        error: 0,
        saw_chunk: false,
        mid: Mid::Chunk(chunk_callback),
        completion: callbacks::no_completion(),
    };
    let mut c = Command::new(cmd::READ, flags16(flags)?, offset, count);
    c.report_chunks = true;
    h.run_with(g, c, cb, Some(cbs))
}

/// Block status: `extent_callback` once per meta context the server
/// answers for.
pub fn block_status(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    extent_callback: callbacks::Extent,
    flags: u32,
) -> Result<(), Error> {
    let cbs = CmdCallbacks {
        buf: std::ptr::null(),
        len: 0,
        offset,
        error: 0,
        saw_chunk: false,
        mid: Mid::Extent(extent_callback),
        completion: callbacks::no_completion(),
    };
    let c = Command::new(cmd::BLOCK_STATUS, flags16(flags)?, offset, count);
    h.run_with(g, c, CmdBuf::none(), Some(cbs))
}

/// Block status with 64-bit extents (libnbd 1.18): `extent64_callback`
/// once per meta context, with the lengths and flags as the server sent
/// them.
pub fn block_status_64(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    extent64_callback: callbacks::Extent64,
    flags: u32,
) -> Result<(), Error> {
    let cbs = CmdCallbacks {
        buf: std::ptr::null(),
        len: 0,
        offset,
        error: 0,
        saw_chunk: false,
        mid: Mid::Extent64(extent64_callback),
        completion: callbacks::no_completion(),
    };
    let c = Command::new(cmd::BLOCK_STATUS, flags16(flags)?, offset, count);
    h.run_with(g, c, CmdBuf::none(), Some(cbs))
}

/// The ids of the negotiated meta contexts named in `contexts`, for
/// nbd_block_status_filter: a name not negotiated is EINVAL, as is an
/// empty list.
pub fn filter_ids(g: &mut Held<'_>, contexts: &[&CStr]) -> Result<Vec<u32>, Error> {
    let conn = crate::handle::conn_mut(g)?;
    let Some(e) = conn.client.export() else {
        return Err(err(libc::ENOTCONN, "not connected"));
    };
    if contexts.is_empty() {
        return Err(err(libc::EINVAL, "filter must name at least one context"));
    }
    contexts
        .iter()
        .map(|name| {
            e.meta_contexts
                .iter()
                .find(|(_, n)| n[..] == *name.to_bytes())
                .map(|(id, _)| *id)
                .ok_or_else(|| {
                    err(
                        libc::EINVAL,
                        format!("meta context {} was not negotiated", name.to_string_lossy()),
                    )
                })
        })
        .collect()
}

/// Block status for the contexts in `contexts` only (libnbd 1.18), with
/// the 64-bit callback. The core sets PAYLOAD_LEN on the wire whatever
/// `flags` says unless LIBNBD_STRICT_AUTO_FLAG was cleared.
pub fn block_status_filter(
    h: &nbd_handle,
    g: &mut Held<'_>,
    count: u64,
    offset: u64,
    contexts: Vec<&CStr>,
    extent64_callback: callbacks::Extent64,
    flags: u32,
) -> Result<(), Error> {
    let ids = filter_ids(g, &contexts)?;
    let cbs = CmdCallbacks {
        buf: std::ptr::null(),
        len: 0,
        offset,
        error: 0,
        saw_chunk: false,
        mid: Mid::Extent64(extent64_callback),
        completion: callbacks::no_completion(),
    };
    let flags = flags16(flags)?;
    let c = Command::new(cmd::BLOCK_STATUS, flags, offset, count);
    h.run_filtered(g, c, CmdBuf::none(), &ids, Some(cbs))
}

fn flags16(flags: u32) -> Result<u16, Error> {
    u16::try_from(flags).map_err(|_| err(libc::EINVAL, format!("invalid flag: {flags}")))
}
