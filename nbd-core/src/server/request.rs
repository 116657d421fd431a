//! Requests of the transmission phase: what to do with a WRITE's payload,
//! whether a request is valid (one function, one errno table, in the manner
//! of nbdkit's `validate_request`), and running a valid request against a
//! backend.
//!
//! Decisions where proto.md leaves room:
//!
//! - A WRITE whose length exceeds `MAX_REQUEST_LEN` (32 MiB) is refused
//!   with EINVAL; its payload is drained (read and discarded in small
//!   pieces) when it is at most `MAX_DRAIN_LEN` (64 MiB, libnbd's largest
//!   request), and the connection is closed when it is larger, because
//!   keeping the stream in sync would cost reading up to 4 GiB.
//! - Zero-length READ, WRITE, TRIM, WRITE_ZEROES and CACHE within the
//!   export succeed without calling the backend; a zero-length
//!   BLOCK_STATUS fails with EINVAL (its reply could not describe anything).
//! - Out-of-range requests fail with ENOSPC for WRITE, TRIM and
//!   WRITE_ZEROES, EINVAL for the others.

use crate::errno::host::{EINVAL, EIO, ENOSPC, EPERM};
use crate::limits::MAX_REQUEST_LEN;
use crate::wire::consts::{cmd, cmd_flags, tx_flags};
use crate::wire::request::RequestHeader;

use super::backend::{Backend, Error, Extents, ZeroFlags};
use super::negotiate::Negotiated;

/// Largest WRITE payload that is drained rather than closing the connection.
pub const MAX_DRAIN_LEN: u32 = 2 * MAX_REQUEST_LEN;

/// What the transmission phase needs to know about the negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxContext {
    pub size: u64,
    pub tx_flags: u16,
    pub structured_replies: bool,
    pub meta_context: Option<u32>,
}

impl TxContext {
    pub fn from_negotiated(n: &Negotiated) -> Self {
        TxContext {
            size: n.details.size,
            tx_flags: n.tx_flags,
            structured_replies: n.structured_replies,
            meta_context: n.meta_context,
        }
    }

    fn has(&self, f: u16) -> bool {
        self.tx_flags & f != 0
    }
}

/// What follows a request header on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Nothing.
    None,
    /// A WRITE payload of this many bytes, to be read into a buffer.
    Receive(u32),
    /// A WRITE payload too large to accept: read and discard it.
    Discard(u32),
    /// A WRITE payload too large even to discard: close the connection.
    Disconnect,
}

/// Decides, from the header alone, how to keep the stream in sync.
pub fn payload(h: &RequestHeader) -> Payload {
    if h.kind != cmd::WRITE {
        Payload::None
    } else if h.length <= MAX_REQUEST_LEN {
        Payload::Receive(h.length)
    } else if h.length <= MAX_DRAIN_LEN {
        Payload::Discard(h.length)
    } else {
        Payload::Disconnect
    }
}

/// A command's name for messages.
pub fn command_name(kind: u16) -> &'static str {
    match kind {
        cmd::READ => "NBD_CMD_READ",
        cmd::WRITE => "NBD_CMD_WRITE",
        cmd::DISC => "NBD_CMD_DISC",
        cmd::FLUSH => "NBD_CMD_FLUSH",
        cmd::TRIM => "NBD_CMD_TRIM",
        cmd::CACHE => "NBD_CMD_CACHE",
        cmd::WRITE_ZEROES => "NBD_CMD_WRITE_ZEROES",
        cmd::BLOCK_STATUS => "NBD_CMD_BLOCK_STATUS",
        _ => "unknown command",
    }
}

fn invalid(errno: i32, msg: &'static str) -> Result<(), Error> {
    Err(Error::new(errno, msg))
}

/// Checks a request (not DISC, which the driver handles) against the
/// negotiated state. The error carries the host errno to reply with.
pub fn validate(h: &RequestHeader, t: &TxContext) -> Result<(), Error> {
    let k = h.kind;
    let writes = matches!(k, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    match k {
        cmd::READ
        | cmd::WRITE
        | cmd::TRIM
        | cmd::WRITE_ZEROES
        | cmd::CACHE
        | cmd::BLOCK_STATUS
        | cmd::FLUSH => {}
        _ => return invalid(EINVAL, "unknown command"),
    }
    if writes && t.has(tx_flags::READ_ONLY) {
        return invalid(EPERM, "write request on a read-only export");
    }

    // Flags.
    let f = h.flags;
    if f & !cmd_flags::ALL != 0 {
        return invalid(EINVAL, "unknown command flag");
    }
    // proto.md: with SEND_FUA, FUA is valid on every command (and means
    // nothing on those that do not write).
    if f & cmd_flags::FUA != 0 && !t.has(tx_flags::SEND_FUA) {
        return invalid(EINVAL, "FUA flag not supported");
    }
    if f & cmd_flags::NO_HOLE != 0 && k != cmd::WRITE_ZEROES {
        return invalid(EINVAL, "NO_HOLE flag needs WRITE_ZEROES");
    }
    if f & cmd_flags::FAST_ZERO != 0 {
        if k != cmd::WRITE_ZEROES {
            return invalid(EINVAL, "FAST_ZERO flag needs WRITE_ZEROES");
        }
        if !t.has(tx_flags::SEND_FAST_ZERO) {
            return invalid(EINVAL, "FAST_ZERO flag not supported");
        }
    }
    if f & cmd_flags::DF != 0 {
        if k != cmd::READ {
            return invalid(EINVAL, "DF flag needs READ");
        }
        if !t.structured_replies {
            return invalid(EINVAL, "DF flag without structured replies");
        }
    }
    if f & cmd_flags::REQ_ONE != 0 && k != cmd::BLOCK_STATUS {
        return invalid(EINVAL, "REQ_ONE flag needs BLOCK_STATUS");
    }

    // Support.
    let unsupported = match k {
        cmd::FLUSH => !t.has(tx_flags::SEND_FLUSH),
        cmd::TRIM => !t.has(tx_flags::SEND_TRIM),
        cmd::WRITE_ZEROES => !t.has(tx_flags::SEND_WRITE_ZEROES),
        cmd::CACHE => !t.has(tx_flags::SEND_CACHE),
        cmd::BLOCK_STATUS => !t.structured_replies || t.meta_context.is_none(),
        _ => false,
    };
    if unsupported {
        return invalid(EINVAL, "command not supported on this connection");
    }

    // Lengths and ranges.
    if k == cmd::FLUSH {
        if h.offset != 0 || h.length != 0 {
            return invalid(EINVAL, "FLUSH with nonzero offset or length");
        }
        return Ok(());
    }
    if matches!(k, cmd::READ | cmd::WRITE) && h.length > MAX_REQUEST_LEN {
        return invalid(EINVAL, "request too large");
    }
    let end = h.offset.checked_add(h.length as u64);
    if !matches!(end, Some(e) if e <= t.size) {
        return if writes {
            invalid(ENOSPC, "request beyond the end of the export")
        } else {
            invalid(EINVAL, "request beyond the end of the export")
        };
    }
    if k == cmd::BLOCK_STATUS && h.length == 0 {
        return invalid(EINVAL, "zero-length BLOCK_STATUS");
    }
    Ok(())
}

/// Runs a validated request. `data` is the READ destination or the WRITE
/// payload (exactly `h.length` bytes for those, unused otherwise);
/// `extents` receives a BLOCK_STATUS answer.
pub fn execute(
    backend: &dyn Backend,
    h: &RequestHeader,
    data: &mut [u8],
    extents: &mut Extents,
) -> Result<(), Error> {
    let f = h.flags;
    let fua = f & cmd_flags::FUA != 0;
    if h.length == 0 && h.kind != cmd::FLUSH {
        return Ok(());
    }
    match h.kind {
        cmd::READ => backend.pread(data, h.offset),
        cmd::WRITE => backend.pwrite(data, h.offset, fua),
        cmd::FLUSH => backend.flush(),
        cmd::TRIM => backend.trim(h.length, h.offset, fua),
        cmd::CACHE => backend.cache(h.length, h.offset),
        cmd::WRITE_ZEROES => backend.zero(
            h.length,
            h.offset,
            ZeroFlags {
                may_trim: f & cmd_flags::NO_HOLE == 0,
                fua,
                fast: f & cmd_flags::FAST_ZERO != 0,
            },
        ),
        cmd::BLOCK_STATUS => {
            extents.reset(h.offset, h.length, f & cmd_flags::REQ_ONE != 0);
            backend.extents(h.length, h.offset, extents)?;
            if extents.is_empty() {
                return Err(Error::new(EIO, "extents: backend returned no extents"));
            }
            Ok(())
        }
        _ => Err(Error::new(EINVAL, "unknown command")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::host::ENOTSUP;

    fn hdr(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
        RequestHeader {
            flags,
            kind,
            cookie: 1,
            offset,
            length,
        }
    }

    const ALL_CAPS: u16 = tx_flags::HAS_FLAGS
        | tx_flags::SEND_FLUSH
        | tx_flags::SEND_FUA
        | tx_flags::SEND_TRIM
        | tx_flags::SEND_WRITE_ZEROES
        | tx_flags::SEND_DF
        | tx_flags::SEND_CACHE
        | tx_flags::SEND_FAST_ZERO;

    fn ctx(flags: u16) -> TxContext {
        TxContext {
            size: 1 << 20,
            tx_flags: flags,
            structured_replies: true,
            meta_context: Some(1),
        }
    }

    fn errno(h: RequestHeader, t: &TxContext) -> i32 {
        match validate(&h, t) {
            Ok(()) => 0,
            Err(e) => e.errno,
        }
    }

    #[test]
    fn the_errno_table() {
        let t = ctx(ALL_CAPS);
        let size = t.size;
        assert_eq!(errno(hdr(cmd::READ, 0, 0, 4096), &t), 0);
        assert_eq!(errno(hdr(99, 0, 0, 0), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::READ, 1 << 7, 0, 1), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::READ, cmd_flags::FUA, 0, 1), &t), 0);
        assert_eq!(errno(hdr(cmd::WRITE, cmd_flags::FUA, 0, 1), &t), 0);
        assert_eq!(errno(hdr(cmd::WRITE, cmd_flags::NO_HOLE, 0, 1), &t), EINVAL);
        assert_eq!(
            errno(hdr(cmd::TRIM, cmd_flags::FAST_ZERO, 0, 1), &t),
            EINVAL
        );
        assert_eq!(
            errno(
                hdr(
                    cmd::WRITE_ZEROES,
                    cmd_flags::FAST_ZERO | cmd_flags::NO_HOLE,
                    0,
                    1
                ),
                &t
            ),
            0
        );
        assert_eq!(errno(hdr(cmd::READ, cmd_flags::REQ_ONE, 0, 1), &t), EINVAL);
        assert_eq!(
            errno(hdr(cmd::BLOCK_STATUS, cmd_flags::REQ_ONE, 0, 1), &t),
            0
        );
        assert_eq!(errno(hdr(cmd::READ, cmd_flags::DF, 0, 1), &t), 0);
        assert_eq!(errno(hdr(cmd::WRITE, cmd_flags::DF, 0, 1), &t), EINVAL);
        // Past the end.
        assert_eq!(errno(hdr(cmd::READ, 0, size - 1, 2), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::CACHE, 0, size, 1), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::BLOCK_STATUS, 0, size, 1), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::WRITE, 0, size, 1), &t), ENOSPC);
        assert_eq!(errno(hdr(cmd::TRIM, 0, size - 1, 2), &t), ENOSPC);
        assert_eq!(errno(hdr(cmd::WRITE_ZEROES, 0, u64::MAX, 2), &t), ENOSPC);
        assert_eq!(errno(hdr(cmd::READ, 0, size, 0), &t), 0);
        assert_eq!(errno(hdr(cmd::BLOCK_STATUS, 0, 0, 0), &t), EINVAL);
        // Too large.
        let big = ctx(ALL_CAPS);
        let big = TxContext {
            size: 1 << 40,
            ..big
        };
        assert_eq!(errno(hdr(cmd::READ, 0, 0, MAX_REQUEST_LEN), &big), 0);
        assert_eq!(
            errno(hdr(cmd::READ, 0, 0, MAX_REQUEST_LEN + 1), &big),
            EINVAL
        );
        assert_eq!(
            errno(hdr(cmd::WRITE, 0, 0, MAX_REQUEST_LEN + 1), &big),
            EINVAL
        );
        assert_eq!(errno(hdr(cmd::TRIM, 0, 0, MAX_REQUEST_LEN + 1), &big), 0);
        // Flush.
        assert_eq!(errno(hdr(cmd::FLUSH, 0, 0, 0), &t), 0);
        assert_eq!(errno(hdr(cmd::FLUSH, 0, 1, 0), &t), EINVAL);
    }

    #[test]
    fn unsupported_and_read_only() {
        let t = ctx(tx_flags::HAS_FLAGS | tx_flags::READ_ONLY);
        assert_eq!(errno(hdr(cmd::WRITE, 0, 0, 1), &t), EPERM);
        assert_eq!(errno(hdr(cmd::TRIM, 0, 0, 1), &t), EPERM);
        assert_eq!(errno(hdr(cmd::WRITE_ZEROES, 0, 0, 1), &t), EPERM);
        assert_eq!(errno(hdr(cmd::FLUSH, 0, 0, 0), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::CACHE, 0, 0, 1), &t), EINVAL);
        let t = ctx(tx_flags::HAS_FLAGS | tx_flags::SEND_TRIM);
        assert_eq!(errno(hdr(cmd::TRIM, 0, 0, 1), &t), 0);
        assert_eq!(errno(hdr(cmd::TRIM, cmd_flags::FUA, 0, 1), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::WRITE_ZEROES, 0, 0, 1), &t), EINVAL);
        let t = TxContext {
            meta_context: None,
            ..ctx(ALL_CAPS)
        };
        assert_eq!(errno(hdr(cmd::BLOCK_STATUS, 0, 0, 1), &t), EINVAL);
        let t = TxContext {
            structured_replies: false,
            ..ctx(ALL_CAPS)
        };
        assert_eq!(errno(hdr(cmd::READ, cmd_flags::DF, 0, 1), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::BLOCK_STATUS, 0, 0, 1), &t), EINVAL);
    }

    #[test]
    fn payload_rules() {
        assert_eq!(payload(&hdr(cmd::READ, 0, 0, 1 << 30)), Payload::None);
        assert_eq!(payload(&hdr(cmd::WRITE, 0, 0, 512)), Payload::Receive(512));
        assert_eq!(
            payload(&hdr(cmd::WRITE, 0, 0, MAX_REQUEST_LEN + 1)),
            Payload::Discard(MAX_REQUEST_LEN + 1)
        );
        assert_eq!(
            payload(&hdr(cmd::WRITE, 0, 0, MAX_DRAIN_LEN + 1)),
            Payload::Disconnect
        );
    }

    struct Zeroes;
    impl Backend for Zeroes {
        fn size(&self) -> crate::server::backend::Result<u64> {
            Ok(1 << 20)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> crate::server::backend::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn zero(&self, _: u32, _: u64, f: ZeroFlags) -> crate::server::backend::Result<()> {
            if f.fast {
                Err(Error::errno(ENOTSUP))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn execute_dispatches() {
        let mut e = Extents::new();
        let mut buf = vec![1u8; 16];
        execute(&Zeroes, &hdr(cmd::READ, 0, 0, 16), &mut buf, &mut e).unwrap();
        assert_eq!(buf, vec![0; 16]);
        let h = hdr(cmd::WRITE_ZEROES, cmd_flags::FAST_ZERO, 0, 16);
        assert_eq!(
            execute(&Zeroes, &h, &mut [], &mut e).unwrap_err().errno,
            ENOTSUP
        );
        execute(
            &Zeroes,
            &hdr(cmd::BLOCK_STATUS, 0, 4096, 100),
            &mut [],
            &mut e,
        )
        .unwrap();
        assert_eq!(e.as_slice(), &[(100, 0)]);
        // Zero length: the backend is not asked (pwrite would fail).
        execute(&Zeroes, &hdr(cmd::WRITE, 0, 0, 0), &mut [], &mut e).unwrap();
        assert!(execute(&Zeroes, &hdr(cmd::WRITE, 0, 0, 1), &mut [0], &mut e).is_err());
    }
}
