//! Requests of the transmission phase: what to do with a WRITE's payload,
//! whether a request is valid (one function, one errno table, in the manner
//! of nbdkit's `validate_request`), and running a valid request against a
//! backend.
//!
//! Decisions where proto.md leaves room:
//!
//! - A WRITE whose length exceeds `MAX_REQUEST_LEN` (64 MiB, libnbd's
//!   largest request) closes the connection: proto.md lets a server
//!   disconnect, and keeping the stream in sync would cost reading (and
//!   throwing away) up to 4 GiB. A READ that long fails with EINVAL.
//! - As in nbdkit, a request must cover at least one byte: zero-length
//!   and out-of-range requests fail with ENOSPC for WRITE and
//!   WRITE_ZEROES, EINVAL for the others (READ, TRIM, CACHE,
//!   BLOCK_STATUS). FLUSH must have offset and length 0.
//! - With extended headers, TRIM, WRITE_ZEROES and CACHE may cover more
//!   than 4 GiB. The [`Backend`] takes 32-bit counts (as nbdkit's plugin
//!   API does), so such a request runs as consecutive pieces of
//!   [`MAX_BACKEND_PIECE`] bytes; the first failure ends it. A
//!   BLOCK_STATUS over more than that asks the backend piece after piece
//!   while each piece is answered whole (adjacent extents of one type
//!   merge, so a hole can be reported longer than 4 GiB), at most
//!   [`MAX_BLOCK_STATUS_PIECES`] times; the reply may then describe less
//!   than was asked, which proto.md allows.
//! - NBD_CMD_FLAG_PAYLOAD_LEN (extended headers only) is accepted on WRITE,
//!   whose length is its payload's anyway, and on BLOCK_STATUS, whose
//!   payload (at most [`MAX_BLOCK_STATUS_PAYLOAD`] bytes) names the effect
//!   length and the contexts wanted: [`with_payload`] turns it into the
//!   request it stands for. On any other command its payload is read and
//!   thrown away (the stream stays in sync) and the command fails with
//!   EINVAL.

use crate::errno::host::{EINVAL, EIO, ENOSPC, EPERM};
use crate::limits::MAX_REQUEST_LEN;
use crate::wire::consts::tx_flags;
use crate::wire::request::RequestHeader;
use crate::wire::{CmdFlags, Command};

use super::backend::{Backend, Error, Extents, ZeroFlags};
use super::negotiate::Negotiated;

/// Largest BLOCK_STATUS payload we read: the effect length and 1022
/// context ids, far more than the one context we serve.
pub const MAX_BLOCK_STATUS_PAYLOAD: u32 = 4096;

/// How many backend calls one BLOCK_STATUS may make (256 GiB's worth).
pub const MAX_BLOCK_STATUS_PIECES: usize = 64;

/// The largest count handed to one backend call: 4 GiB less 1 MiB, so
/// that the pieces of an aligned request stay aligned to any block size
/// up to 1 MiB.
pub const MAX_BACKEND_PIECE: u32 = !((1 << 20) - 1);

/// What the transmission phase needs to know about the negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxContext {
    pub size: u64,
    pub tx_flags: u16,
    pub structured_replies: bool,
    /// 32-byte headers: 64-bit lengths, every reply a chunk.
    pub extended_headers: bool,
    pub meta_context: Option<u32>,
}

impl TxContext {
    pub fn from_negotiated(n: &Negotiated) -> Self {
        TxContext {
            size: n.details.size,
            tx_flags: n.tx_flags,
            structured_replies: n.structured_replies,
            extended_headers: n.extended_headers,
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
    /// A payload the command cannot take (NBD_CMD_FLAG_PAYLOAD_LEN on a
    /// command other than WRITE or BLOCK_STATUS, or too long for
    /// BLOCK_STATUS): read and discard it.
    Discard(u32),
    /// A payload longer than any request may carry: close the connection.
    Disconnect,
}

/// Decides, from the header alone, how to keep the stream in sync: a
/// WRITE carries its length in bytes, and with extended headers so does
/// any request flagged NBD_CMD_FLAG_PAYLOAD_LEN (only WRITE's is kept).
pub fn payload(h: &RequestHeader, t: &TxContext) -> Payload {
    let flagged = t.extended_headers && h.cmd_flags().contains(CmdFlags::PAYLOAD_LEN);
    let is_write = h.command() == Command::Write;
    let is_bs = h.command() == Command::BlockStatus;
    if !is_write && !flagged {
        Payload::None
    } else if (is_write && h.length <= u64::from(MAX_REQUEST_LEN))
        || (is_bs && h.length <= u64::from(MAX_BLOCK_STATUS_PAYLOAD))
    {
        Payload::Receive(h.length as u32)
    } else if !is_write && h.length <= u64::from(MAX_REQUEST_LEN) {
        Payload::Discard(h.length as u32)
    } else {
        Payload::Disconnect
    }
}

/// The request a BLOCK_STATUS with NBD_CMD_FLAG_PAYLOAD_LEN stands for:
/// the payload's effect length, without the flag. Every context id it
/// names must be one the client negotiated (we serve one, so the filter
/// can only keep it). Other requests come back unchanged.
pub fn with_payload(
    h: &RequestHeader,
    payload: &[u8],
    t: &TxContext,
) -> Result<RequestHeader, Error> {
    let filtered = h.command() == Command::BlockStatus
        && t.extended_headers
        && h.cmd_flags().contains(CmdFlags::PAYLOAD_LEN);
    if !filtered {
        return Ok(*h);
    }
    if h.length < 12 || !(h.length - 8).is_multiple_of(4) {
        return Err(Error::new(
            EINVAL,
            "BLOCK_STATUS payload is not 8 + 4n bytes",
        ));
    }
    let (effect, ids) = crate::wire::request::parse_block_status_payload(payload)
        .map_err(|_| Error::new(EINVAL, "BLOCK_STATUS payload is malformed"))?;
    if ids.iter().any(|id| Some(*id) != t.meta_context) {
        return Err(Error::new(
            EINVAL,
            "BLOCK_STATUS payload names an unknown context",
        ));
    }
    Ok(RequestHeader {
        flags: h.flags & !CmdFlags::PAYLOAD_LEN.bits(),
        length: effect,
        ..*h
    })
}

/// A command's name for messages.
pub fn command_name(kind: u16) -> &'static str {
    Command::from_wire(kind).name()
}

fn invalid(errno: i32, msg: &'static str) -> Result<(), Error> {
    Err(Error::new(errno, msg))
}

/// Checks a request (not DISC, which the driver handles) against the
/// negotiated state. The error carries the host errno to reply with.
pub fn validate(h: &RequestHeader, t: &TxContext) -> Result<(), Error> {
    use Command::*;
    let k = h.command();
    let writes = k.writes();
    match k {
        Read | Write | Trim | WriteZeroes | Cache | BlockStatus | Flush => {}
        Disc | Unknown(_) => return invalid(EINVAL, "unknown command"),
    }
    if writes && t.has(tx_flags::READ_ONLY) {
        return invalid(EPERM, "write request on a read-only export");
    }

    // Flags.
    let f = h.cmd_flags();
    if !f.unknown().is_empty() {
        return invalid(EINVAL, "unknown command flag");
    }
    if f.contains(CmdFlags::PAYLOAD_LEN) {
        if !t.extended_headers {
            return invalid(EINVAL, "PAYLOAD_LEN flag without extended headers");
        }
        let filtered = k == BlockStatus && t.has(tx_flags::BLOCK_STATUS_PAYLOAD);
        if k != Write && !filtered {
            return invalid(EINVAL, "PAYLOAD_LEN flag not supported on this command");
        }
        if filtered {
            // The rest is checked on the request the payload stands for
            // (with_payload, then validate again).
            return Ok(());
        }
    }
    // proto.md: with SEND_FUA, FUA is valid on every command (and means
    // nothing on those that do not write).
    if f.contains(CmdFlags::FUA) && !t.has(tx_flags::SEND_FUA) {
        return invalid(EINVAL, "FUA flag not supported");
    }
    if f.contains(CmdFlags::NO_HOLE) && k != WriteZeroes {
        return invalid(EINVAL, "NO_HOLE flag needs WRITE_ZEROES");
    }
    if f.contains(CmdFlags::FAST_ZERO) {
        if k != WriteZeroes {
            return invalid(EINVAL, "FAST_ZERO flag needs WRITE_ZEROES");
        }
        if !t.has(tx_flags::SEND_FAST_ZERO) {
            return invalid(EINVAL, "FAST_ZERO flag not supported");
        }
    }
    if f.contains(CmdFlags::DF) {
        if k != Read {
            return invalid(EINVAL, "DF flag needs READ");
        }
        if !t.structured_replies {
            return invalid(EINVAL, "DF flag without structured replies");
        }
    }
    if f.contains(CmdFlags::REQ_ONE) && k != BlockStatus {
        return invalid(EINVAL, "REQ_ONE flag needs BLOCK_STATUS");
    }

    // Support.
    let unsupported = match k {
        Flush => !t.has(tx_flags::SEND_FLUSH),
        Trim => !t.has(tx_flags::SEND_TRIM),
        WriteZeroes => !t.has(tx_flags::SEND_WRITE_ZEROES),
        Cache => !t.has(tx_flags::SEND_CACHE),
        BlockStatus => !t.structured_replies || t.meta_context.is_none(),
        _ => false,
    };
    if unsupported {
        return invalid(EINVAL, "command not supported on this connection");
    }

    // Lengths and ranges.
    if k == Flush {
        if h.offset != 0 || h.length != 0 {
            return invalid(EINVAL, "FLUSH with nonzero offset or length");
        }
        return Ok(());
    }
    if matches!(k, Read | Write) && h.length > u64::from(MAX_REQUEST_LEN) {
        return invalid(EINVAL, "request too large");
    }
    // nbdkit's errno for a range it cannot serve: ENOSPC for the
    // commands that store data or zeroes, EINVAL for the others.
    let range_errno = if matches!(k, Write | WriteZeroes) {
        ENOSPC
    } else {
        EINVAL
    };
    if h.length == 0 {
        return invalid(range_errno, "zero-length request");
    }
    let end = h.offset.checked_add(h.length);
    if !matches!(end, Some(e) if e <= t.size) {
        return invalid(range_errno, "request beyond the end of the export");
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
    let f = h.cmd_flags();
    let fua = f.contains(CmdFlags::FUA);
    let k = h.command();
    if h.length == 0 && k != Command::Flush {
        return Ok(());
    }
    match k {
        Command::Read => backend.pread(data, h.offset),
        Command::Write => backend.pwrite(data, h.offset, fua),
        Command::Flush => backend.flush(),
        Command::Trim => in_pieces(h, |count, offset| backend.trim(count, offset, fua)),
        Command::Cache => in_pieces(h, |count, offset| backend.cache(count, offset)),
        Command::WriteZeroes => {
            let flags = ZeroFlags {
                may_trim: !f.contains(CmdFlags::NO_HOLE),
                fua,
                fast: f.contains(CmdFlags::FAST_ZERO),
            };
            in_pieces(h, |count, offset| backend.zero(count, offset, flags))
        }
        Command::BlockStatus => {
            extents.reset_range(h.offset, h.length, f.contains(CmdFlags::REQ_ONE));
            for _ in 0..MAX_BLOCK_STATUS_PIECES {
                let at = extents.next_offset();
                let count = piece_len(extents.end() - at);
                backend.extents(count, at, extents)?;
                // A backend that answered less than its piece has said
                // what it knows; ask no more.
                if !extents.wants_more() || extents.next_offset() < at + u64::from(count) {
                    break;
                }
            }
            if extents.is_empty() {
                return Err(Error::new(EIO, "extents: backend returned no extents"));
            }
            Ok(())
        }
        Command::Disc | Command::Unknown(_) => Err(Error::new(EINVAL, "unknown command")),
    }
}

/// The first piece of a request of `length` bytes.
fn piece_len(length: u64) -> u32 {
    length.min(u64::from(MAX_BACKEND_PIECE)) as u32
}

/// Runs `op` over the request's range in pieces the backend can take,
/// stopping at the first failure.
fn in_pieces(
    h: &RequestHeader,
    mut op: impl FnMut(u32, u64) -> Result<(), Error>,
) -> Result<(), Error> {
    let (mut offset, mut left) = (h.offset, h.length);
    while left > 0 {
        let count = piece_len(left);
        op(count, offset)?;
        offset += u64::from(count);
        left -= u64::from(count);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::host::ENOTSUP;
    use crate::wire::consts::{cmd, cmd_flags};

    fn hdr(kind: u16, flags: u16, offset: u64, length: u64) -> RequestHeader {
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
            extended_headers: false,
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
        assert_eq!(errno(hdr(cmd::TRIM, 0, size - 1, 2), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::WRITE_ZEROES, 0, u64::MAX, 2), &t), ENOSPC);
        // Zero length, as nbdkit.
        for (k, e) in [
            (cmd::READ, EINVAL),
            (cmd::WRITE, ENOSPC),
            (cmd::TRIM, EINVAL),
            (cmd::CACHE, EINVAL),
            (cmd::WRITE_ZEROES, ENOSPC),
            (cmd::BLOCK_STATUS, EINVAL),
        ] {
            assert_eq!(errno(hdr(k, 0, 0, 0), &t), e, "command {k}");
        }
        // Too large.
        let big = ctx(ALL_CAPS);
        let big = TxContext {
            size: 1 << 40,
            ..big
        };
        assert_eq!(
            errno(hdr(cmd::READ, 0, 0, u64::from(MAX_REQUEST_LEN)), &big),
            0
        );
        assert_eq!(
            errno(hdr(cmd::READ, 0, 0, u64::from(MAX_REQUEST_LEN) + 1), &big),
            EINVAL
        );
        assert_eq!(
            errno(hdr(cmd::WRITE, 0, 0, u64::from(MAX_REQUEST_LEN) + 1), &big),
            EINVAL
        );
        assert_eq!(
            errno(hdr(cmd::TRIM, 0, 0, u64::from(MAX_REQUEST_LEN) + 1), &big),
            0
        );
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
            extended_headers: false,
            ..ctx(ALL_CAPS)
        };
        assert_eq!(errno(hdr(cmd::READ, cmd_flags::DF, 0, 1), &t), EINVAL);
        assert_eq!(errno(hdr(cmd::BLOCK_STATUS, 0, 0, 1), &t), EINVAL);
    }

    #[test]
    fn payload_rules() {
        let t = ctx(ALL_CAPS);
        let max = u64::from(MAX_REQUEST_LEN);
        assert_eq!(payload(&hdr(cmd::READ, 0, 0, 1 << 30), &t), Payload::None);
        assert_eq!(
            payload(&hdr(cmd::WRITE, 0, 0, 512), &t),
            Payload::Receive(512)
        );
        assert_eq!(
            payload(&hdr(cmd::WRITE, 0, 0, max), &t),
            Payload::Receive(MAX_REQUEST_LEN)
        );
        assert_eq!(
            payload(&hdr(cmd::WRITE, 0, 0, max + 1), &t),
            Payload::Disconnect
        );
        // PAYLOAD_LEN means a payload only with extended headers.
        let bs = hdr(cmd::BLOCK_STATUS, cmd_flags::PAYLOAD_LEN, 0, 12);
        assert_eq!(payload(&bs, &t), Payload::None);
        let ext = TxContext {
            extended_headers: true,
            ..t
        };
        // Read (it is small), then judged by validate and with_payload.
        assert_eq!(payload(&bs, &ext), Payload::Receive(12));
        let trim = hdr(cmd::TRIM, cmd_flags::PAYLOAD_LEN, 0, 12);
        assert_eq!(payload(&trim, &ext), Payload::Discard(12));
        let w = hdr(cmd::WRITE, cmd_flags::PAYLOAD_LEN, 0, 512);
        assert_eq!(payload(&w, &ext), Payload::Receive(512));
    }

    #[test]
    fn extended_headers_rules() {
        let t = ctx(ALL_CAPS);
        let ext = TxContext {
            extended_headers: true,
            size: 1 << 40,
            ..t
        };
        let w = hdr(cmd::WRITE, cmd_flags::PAYLOAD_LEN, 0, 512);
        assert_eq!(errno(w, &t), EINVAL);
        assert_eq!(errno(w, &ext), 0);
        let bs = hdr(cmd::BLOCK_STATUS, cmd_flags::PAYLOAD_LEN, 0, 12);
        assert_eq!(errno(bs, &ext), EINVAL);
        // 64-bit effect lengths for the commands that have no payload.
        for k in [cmd::TRIM, cmd::WRITE_ZEROES, cmd::CACHE, cmd::BLOCK_STATUS] {
            assert_eq!(errno(hdr(k, 0, 0, 5 << 30), &ext), 0);
        }
        assert_eq!(errno(hdr(cmd::READ, 0, 0, 5 << 30), &ext), EINVAL);
    }

    #[test]
    fn block_status_payload_stands_for_its_request() {
        use crate::wire::request::encode_block_status_payload;
        let ext = TxContext {
            extended_headers: true,
            tx_flags: ALL_CAPS | tx_flags::BLOCK_STATUS_PAYLOAD,
            size: 1 << 40,
            ..ctx(ALL_CAPS)
        };
        let p = encode_block_status_payload(5 << 30, &[1]);
        let h = hdr(
            cmd::BLOCK_STATUS,
            cmd_flags::PAYLOAD_LEN | cmd_flags::REQ_ONE,
            4096,
            p.len() as u64,
        );
        assert_eq!(payload(&h, &ext), Payload::Receive(12));
        assert_eq!(errno(h, &ext), 0);
        let h2 = with_payload(&h, &p, &ext).unwrap();
        assert_eq!(
            (h2.length, h2.flags, h2.offset),
            (5 << 30, cmd_flags::REQ_ONE, 4096)
        );
        assert_eq!(errno(h2, &ext), 0);
        // Unknown context, bad lengths, and past the end.
        let bad = encode_block_status_payload(512, &[1, 2]);
        let hb = RequestHeader { length: 16, ..h };
        assert_eq!(with_payload(&hb, &bad, &ext).unwrap_err().errno, EINVAL);
        let hs = RequestHeader { length: 10, ..h };
        assert_eq!(with_payload(&hs, &p[..10], &ext).unwrap_err().errno, EINVAL);
        let far = encode_block_status_payload(1 << 41, &[1]);
        let h3 = with_payload(&h, &far, &ext).unwrap();
        assert_eq!(errno(h3, &ext), EINVAL);
        // Not offered: the flag is refused, the payload discarded.
        let plain = TxContext {
            tx_flags: ALL_CAPS,
            ..ext
        };
        assert_eq!(errno(h, &plain), EINVAL);
        assert_eq!(
            payload(
                &hdr(cmd::BLOCK_STATUS, cmd_flags::PAYLOAD_LEN, 0, 5000),
                &ext
            ),
            Payload::Discard(5000)
        );
    }

    /// Records each backend call's (count, offset).
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(u32, u64)>>);
    impl Backend for Recorder {
        fn size(&self) -> crate::server::backend::Result<u64> {
            Ok(1 << 40)
        }
        fn pread(&self, _: &mut [u8], _: u64) -> crate::server::backend::Result<()> {
            Ok(())
        }
        fn trim(&self, count: u32, offset: u64, _: bool) -> crate::server::backend::Result<()> {
            self.0.lock().unwrap().push((count, offset));
            Ok(())
        }
        fn extents(
            &self,
            count: u32,
            offset: u64,
            sink: &mut Extents,
        ) -> crate::server::backend::Result<()> {
            self.0.lock().unwrap().push((count, offset));
            sink.add(offset, u64::from(count), 0).map(|_| ())
        }
    }

    #[test]
    fn requests_over_4_gib_run_in_pieces() {
        let r = Recorder::default();
        let mut e = Extents::new();
        let len = 9u64 << 30;
        execute(&r, &hdr(cmd::TRIM, 0, 1 << 20, len), &mut [], &mut e).unwrap();
        let calls = std::mem::take(&mut *r.0.lock().unwrap());
        let piece = u64::from(MAX_BACKEND_PIECE);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0], (MAX_BACKEND_PIECE, 1 << 20));
        assert_eq!(calls[1], (MAX_BACKEND_PIECE, (1 << 20) + piece));
        assert_eq!(u64::from(calls[2].0), len - 2 * piece);
        assert_eq!(calls.iter().map(|c| u64::from(c.0)).sum::<u64>(), len);
        // Block status asks piece after piece; the answers merge into one
        // extent longer than 4 GiB.
        execute(&r, &hdr(cmd::BLOCK_STATUS, 0, 0, len), &mut [], &mut e).unwrap();
        assert_eq!(e.as_slice(), &[(len, 0)]);
        let calls = std::mem::take(&mut *r.0.lock().unwrap());
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1], (MAX_BACKEND_PIECE, piece));
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
