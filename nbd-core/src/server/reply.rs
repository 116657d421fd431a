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
    encode_block_status_ext_chunk, encode_error_chunk_for, encode_simple_reply, put_chunk_header,
    ChunkForm,
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
    // With extended headers every reply is a chunk; with structured
    // replies only those of READ and BLOCK_STATUS are.
    let (chunked, form) = if t.extended_headers {
        (
            true,
            ChunkForm::Extended {
                request_offset: h.offset,
            },
        )
    } else {
        (
            t.structured_replies && matches!(h.kind, cmd::READ | cmd::BLOCK_STATUS),
            ChunkForm::Structured,
        )
    };
    let done = |out: &mut Vec<u8>| {
        put_chunk_header(out, form, chunk::FLAG_DONE, chunk::NONE, h.cookie, 0);
    };
    match result {
        Err(e) => {
            let wire = wire_error(e.errno, h.flags);
            if chunked {
                encode_error_chunk_for(out, form, h.cookie, wire, e.message.as_bytes());
            } else {
                out.extend_from_slice(&encode_simple_reply(wire, h.cookie));
            }
            false
        }
        Ok(()) if h.kind == cmd::READ => {
            if chunked && h.length == 0 {
                // OFFSET_DATA cannot be empty: a NONE chunk ends the reply.
                done(out);
                return false;
            }
            if chunked {
                put_chunk_header(
                    out,
                    form,
                    chunk::FLAG_DONE,
                    chunk::OFFSET_DATA,
                    h.cookie,
                    h.length + 8,
                );
                out.put_u64(h.offset);
            } else {
                out.extend_from_slice(&encode_simple_reply(0, h.cookie));
            }
            h.length > 0
        }
        Ok(()) if h.kind == cmd::BLOCK_STATUS && t.extended_headers => {
            let list: Vec<(u64, u64)> = extents
                .as_slice()
                .iter()
                .map(|&(len, flags)| (len, u64::from(flags)))
                .collect();
            encode_block_status_ext_chunk(
                out,
                chunk::FLAG_DONE,
                h.cookie,
                h.offset,
                t.meta_context.unwrap_or(0),
                &list,
            );
            false
        }
        Ok(()) if h.kind == cmd::BLOCK_STATUS && chunked => {
            encode_block_status(out, h.cookie, t.meta_context.unwrap_or(0), extents);
            false
        }
        Ok(()) if chunked => {
            done(out);
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
    put_chunk_header(
        out,
        ChunkForm::Structured,
        chunk::FLAG_DONE,
        chunk::BLOCK_STATUS,
        cookie,
        4 + 8 * list.len() as u64,
    );
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

    fn hdr(kind: u16, flags: u16, length: u64) -> RequestHeader {
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
            extended_headers: false,
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

    #[test]
    fn extended_replies() {
        use crate::wire::reply::{parse_block_status_ext, parse_extended_reply_header};
        let t = TxContext {
            extended_headers: true,
            size: 1 << 40,
            ..ctx(true)
        };
        let head = |out: &[u8]| parse_extended_reply_header(out[..32].try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        let mut e = Extents::new();
        // A READ: OFFSET_DATA header and offset, then the data.
        assert!(encode_reply(
            &mut out,
            &hdr(cmd::READ, 0, 10),
            &t,
            &Ok(()),
            &e
        ));
        let h = head(&out);
        assert_eq!(
            (h.kind, h.flags, h.cookie),
            (chunk::OFFSET_DATA, chunk::FLAG_DONE, 77)
        );
        assert_eq!((h.offset, h.length), (4096, 18));
        assert_eq!(&out[32..40], &4096u64.to_be_bytes());
        assert_eq!(out.len(), 40);
        // Every other success is a NONE chunk: no simple replies at all.
        for k in [
            cmd::WRITE,
            cmd::FLUSH,
            cmd::TRIM,
            cmd::WRITE_ZEROES,
            cmd::CACHE,
        ] {
            assert!(!encode_reply(
                &mut out,
                &hdr(k, 0, 5 << 30),
                &t,
                &Ok(()),
                &e
            ));
            let h = head(&out);
            assert_eq!((h.kind, h.length, out.len()), (chunk::NONE, 0, 32));
        }
        // Errors are ERROR chunks, for every command.
        let err = Err(Error::new(host::ENOSPC, "full"));
        assert!(!encode_reply(&mut out, &hdr(cmd::TRIM, 0, 1), &t, &err, &e));
        assert_eq!(head(&out).kind, chunk::ERROR);
        let ec = parse_error_chunk(chunk::ERROR, &out[32..]).unwrap();
        assert_eq!((ec.error, ec.message), (28, &b"full"[..]));
        // Block status as BLOCK_STATUS_EXT, with lengths over 32 bits.
        e.reset(4096, u32::MAX, false);
        e.add(4096, 1 << 31, 3).unwrap();
        assert!(!encode_reply(
            &mut out,
            &hdr(cmd::BLOCK_STATUS, 0, 8 << 30),
            &t,
            &Ok(()),
            &e
        ));
        assert_eq!(head(&out).kind, chunk::BLOCK_STATUS_EXT);
        let (id, it) = parse_block_status_ext(&out[32..]).unwrap();
        assert_eq!(id, 5);
        assert_eq!(it.collect::<Vec<_>>(), vec![(1 << 31, 3)]);
    }
}
