//! Replies of the transmission phase, built with the wire encoders.
//!
//! [`encode_reply`] writes everything but a READ's data into a reusable
//! buffer; when it returns `true` the driver sends the buffer followed by
//! the data in one vectored write. Choices:
//!
//! - Without structured replies every reply is simple.
//! - With them, a successful READ is one OFFSET_DATA chunk with DONE, a
//!   BLOCK_STATUS one BLOCK_STATUS chunk with DONE, a failed READ or
//!   BLOCK_STATUS one ERROR chunk with DONE (carrying the message), and
//!   other commands get simple replies, as proto.md allows.

use crate::wire::codec::PutBe;
use crate::wire::consts::{chunk, cmd};
use crate::wire::reply::{
    encode_chunk_header, encode_error_chunk, encode_offset_data_header, encode_simple_reply,
};
use crate::wire::request::RequestHeader;

use super::backend::{Error, Extents};
use super::request::TxContext;

/// The error a client sees for a backend's errno: the server direction of
/// the one policy in [`crate::errno`].
pub fn wire_error(errno: i32, flags: u16) -> u32 {
    crate::errno::wire_of_errno(errno, flags)
}

/// Encodes the reply to `h` into `out` (cleared first). `result` is the
/// outcome; `extents` holds a BLOCK_STATUS answer. Returns whether the
/// READ data (`h.length` bytes) must follow `out` on the wire.
pub fn encode_reply(
    out: &mut Vec<u8>,
    h: &RequestHeader,
    t: &TxContext,
    result: &Result<(), Error>,
    extents: &Extents,
) -> bool {
    out.clear();
    let structured_cmd = t.structured_replies && matches!(h.kind, cmd::READ | cmd::BLOCK_STATUS);
    match result {
        Err(e) => {
            let wire = wire_error(e.errno, h.flags);
            if structured_cmd {
                encode_error_chunk(out, h.cookie, wire, e.message.as_bytes());
            } else {
                out.extend_from_slice(&encode_simple_reply(wire, h.cookie));
            }
            false
        }
        Ok(()) if h.kind == cmd::READ => {
            if structured_cmd && h.length == 0 {
                // OFFSET_DATA cannot be empty: a NONE chunk ends the reply.
                out.extend_from_slice(&encode_chunk_header(
                    chunk::FLAG_DONE,
                    chunk::NONE,
                    h.cookie,
                    0,
                ));
                return false;
            }
            if structured_cmd {
                out.extend_from_slice(&encode_offset_data_header(
                    chunk::FLAG_DONE,
                    h.cookie,
                    h.offset,
                    h.length,
                ));
            } else {
                out.extend_from_slice(&encode_simple_reply(0, h.cookie));
            }
            h.length > 0
        }
        Ok(()) if h.kind == cmd::BLOCK_STATUS && structured_cmd => {
            encode_block_status(out, h.cookie, t.meta_context.unwrap_or(0), extents);
            false
        }
        Ok(()) => {
            out.extend_from_slice(&encode_simple_reply(0, h.cookie));
            false
        }
    }
}

/// A BLOCK_STATUS chunk with DONE, straight from the extents (no copy).
fn encode_block_status(out: &mut Vec<u8>, cookie: u64, context_id: u32, e: &Extents) {
    let list = e.as_slice();
    out.extend_from_slice(&encode_chunk_header(
        chunk::FLAG_DONE,
        chunk::BLOCK_STATUS,
        cookie,
        4 + 8 * list.len() as u32,
    ));
    out.put_u32(context_id);
    for &(len, flags) in list {
        out.put_u32(len.min(u32::MAX as u64) as u32);
        out.put_u32(flags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::host;
    use crate::wire::consts::cmd_flags;
    use crate::wire::reply::{
        parse_block_status, parse_error_chunk, parse_reply_start, ReplyStart,
    };

    fn hdr(kind: u16, flags: u16, length: u32) -> RequestHeader {
        RequestHeader {
            flags,
            kind,
            cookie: 77,
            offset: 4096,
            length,
        }
    }

    fn ctx(structured: bool) -> TxContext {
        TxContext {
            size: 1 << 20,
            tx_flags: 1,
            structured_replies: structured,
            meta_context: Some(5),
        }
    }

    fn start(out: &[u8]) -> ReplyStart {
        parse_reply_start(out[..16].try_into().unwrap()).unwrap()
    }

    #[test]
    fn simple_replies() {
        let mut out = Vec::new();
        let e = Extents::new();
        assert!(encode_reply(
            &mut out,
            &hdr(cmd::READ, 0, 10),
            &ctx(false),
            &Ok(()),
            &e
        ));
        assert_eq!(
            start(&out),
            ReplyStart::Simple {
                error: 0,
                cookie: 77
            }
        );
        assert_eq!(out.len(), 16);
        let err = Err(Error::new(host::EPERM, "ro"));
        assert!(!encode_reply(
            &mut out,
            &hdr(cmd::WRITE, 0, 10),
            &ctx(true),
            &err,
            &e
        ));
        assert_eq!(
            start(&out),
            ReplyStart::Simple {
                error: 1,
                cookie: 77
            }
        );
        assert!(!encode_reply(
            &mut out,
            &hdr(cmd::READ, 0, 10),
            &ctx(false),
            &err,
            &e
        ));
        assert_eq!(out.len(), 16);
    }

    #[test]
    fn structured_replies() {
        let mut out = Vec::new();
        let mut e = Extents::new();
        assert!(encode_reply(
            &mut out,
            &hdr(cmd::READ, 0, 10),
            &ctx(true),
            &Ok(()),
            &e
        ));
        assert_eq!(out.len(), 28);
        assert_eq!(
            start(&out),
            ReplyStart::Structured {
                flags: chunk::FLAG_DONE,
                kind: chunk::OFFSET_DATA,
                cookie: 77
            }
        );
        assert_eq!(&out[16..20], &18u32.to_be_bytes());
        assert_eq!(&out[20..28], &4096u64.to_be_bytes());

        let err = Err(Error::new(host::EIO, "boom"));
        assert!(!encode_reply(
            &mut out,
            &hdr(cmd::READ, 0, 10),
            &ctx(true),
            &err,
            &e
        ));
        let ec = parse_error_chunk(chunk::ERROR, &out[20..]).unwrap();
        assert_eq!((ec.error, ec.message), (5, &b"boom"[..]));

        e.reset(4096, 3000, false);
        e.add(4096, 1000, 3).unwrap();
        e.add(5096, 5000, 0).unwrap();
        assert!(!encode_reply(
            &mut out,
            &hdr(cmd::BLOCK_STATUS, 0, 3000),
            &ctx(true),
            &Ok(()),
            &e
        ));
        let (id, it) = parse_block_status(&out[20..]).unwrap();
        assert_eq!(id, 5);
        assert_eq!(it.collect::<Vec<_>>(), vec![(1000, 3), (2000, 0)]);
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(wire_error(95, 0), 22);
        assert_eq!(wire_error(95, cmd_flags::FAST_ZERO), 95);
        assert_eq!(wire_error(30, 0), 1);
        assert_eq!(wire_error(75, cmd_flags::DF), 75);
        assert_eq!(wire_error(4, 0), 5);
        assert_eq!(wire_error(28, 0), 28);
    }
}
