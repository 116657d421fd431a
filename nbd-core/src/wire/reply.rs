//! Replies of the transmission phase: simple replies (16-byte header, then
//! the data of a READ) and structured reply chunks (20-byte header, then a
//! typed payload).
//!
//! Both start with a 32-bit magic. A client reads the 16 bytes the two
//! share, then, for a structured chunk, the 4-byte length that follows.
//!
//! Once extended headers are negotiated, every reply is a chunk with a
//! 32-byte header instead (magic, flags, type, cookie, the request's
//! offset, a 64-bit payload length): no simple replies, and block status
//! comes as BLOCK_STATUS_EXT with 64-bit lengths.

use super::codec::{PutBe, Reader, WireError};
use super::consts::{chunk, EXTENDED_REPLY_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC};

/// The header of a structured reply chunk, once its length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    pub flags: u16,
    pub kind: super::vocab::ChunkType,
    pub cookie: u64,
    pub length: u32,
}

impl ChunkHeader {
    /// Whether this is the reply's last chunk (NBD_REPLY_FLAG_DONE).
    pub fn done(&self) -> bool {
        self.flags & super::consts::chunk::FLAG_DONE != 0
    }
}

pub const SIMPLE_REPLY_HEADER_LEN: usize = 16;
pub const STRUCTURED_REPLY_HEADER_LEN: usize = 20;
pub const EXTENDED_REPLY_HEADER_LEN: usize = 32;

/// Which chunk header a connection's server writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkForm {
    /// 20 bytes with a 32-bit length (structured replies).
    Structured,
    /// 32 bytes (extended headers), echoing the request's offset.
    Extended { request_offset: u64 },
}

/// An extended reply header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtendedReplyHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u64,
}

/// Parses a 32-byte extended reply header. Any other magic is an error:
/// with extended headers neither simple nor structured replies exist.
pub fn parse_extended_reply_header(
    b: &[u8; EXTENDED_REPLY_HEADER_LEN],
) -> Result<ExtendedReplyHeader, WireError> {
    let mut r = Reader::new(b);
    match r.u32() {
        Some(EXTENDED_REPLY_MAGIC) => Ok(ExtendedReplyHeader {
            flags: r.u16().unwrap_or(0),
            kind: r.u16().unwrap_or(0),
            cookie: r.u64().unwrap_or(0),
            offset: r.u64().unwrap_or(0),
            length: r.u64().unwrap_or(0),
        }),
        Some(SIMPLE_REPLY_MAGIC | STRUCTURED_REPLY_MAGIC) => Err(WireError::new(
            "reply",
            "compact reply magic after extended headers were negotiated",
        )),
        _ => Err(WireError::new("reply", "bad magic")),
    }
}

/// An extended chunk header; its payload of `length` bytes follows.
pub fn encode_extended_chunk_header(
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    length: u64,
) -> [u8; EXTENDED_REPLY_HEADER_LEN] {
    let mut b = [0u8; EXTENDED_REPLY_HEADER_LEN];
    b[0..4].copy_from_slice(&EXTENDED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..32].copy_from_slice(&length.to_be_bytes());
    b
}

/// Appends a chunk header of either form. A structured header's length
/// must fit 32 bits (the callers' payloads always do).
pub fn put_chunk_header(
    out: &mut Vec<u8>,
    form: ChunkForm,
    flags: u16,
    kind: u16,
    cookie: u64,
    length: u64,
) {
    match form {
        ChunkForm::Structured => {
            out.extend_from_slice(&encode_chunk_header(flags, kind, cookie, length as u32))
        }
        ChunkForm::Extended { request_offset } => out.extend_from_slice(
            &encode_extended_chunk_header(flags, kind, cookie, request_offset, length),
        ),
    }
}

/// The first 16 bytes of any reply, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStart {
    Simple {
        error: u32,
        cookie: u64,
    },
    /// A structured chunk; four more bytes (its payload length) follow.
    Structured {
        flags: u16,
        kind: u16,
        cookie: u64,
    },
}

pub fn parse_reply_start(b: &[u8; 16]) -> Result<ReplyStart, WireError> {
    let mut r = Reader::new(b);
    match r.u32() {
        Some(SIMPLE_REPLY_MAGIC) => Ok(ReplyStart::Simple {
            error: r.u32().unwrap_or(0),
            cookie: r.u64().unwrap_or(0),
        }),
        Some(STRUCTURED_REPLY_MAGIC) => Ok(ReplyStart::Structured {
            flags: r.u16().unwrap_or(0),
            kind: r.u16().unwrap_or(0),
            cookie: r.u64().unwrap_or(0),
        }),
        _ => Err(WireError::new("reply", "bad magic")),
    }
}

/// A simple reply's header.
pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; SIMPLE_REPLY_HEADER_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_HEADER_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured chunk's header; its payload of `length` bytes follows.
pub fn encode_chunk_header(
    flags: u16,
    kind: u16,
    cookie: u64,
    length: u32,
) -> [u8; STRUCTURED_REPLY_HEADER_LEN] {
    let mut b = [0u8; STRUCTURED_REPLY_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
    b
}

/// The header of an OFFSET_DATA chunk with its offset (the 8 bytes before
/// the data), so a server can send header and data in one vectored write.
pub fn encode_offset_data_header(flags: u16, cookie: u64, offset: u64, data_len: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&encode_chunk_header(
        flags,
        chunk::OFFSET_DATA,
        cookie,
        data_len + 8,
    ));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b
}

/// A whole OFFSET_HOLE chunk.
pub fn encode_offset_hole(flags: u16, cookie: u64, offset: u64, length: u32) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..20].copy_from_slice(&encode_chunk_header(flags, chunk::OFFSET_HOLE, cookie, 12));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b[28..32].copy_from_slice(&length.to_be_bytes());
    b
}

/// A whole ERROR chunk (always the last: it carries the DONE flag).
pub fn encode_error_chunk(out: &mut Vec<u8>, cookie: u64, error: u32, message: &[u8]) {
    encode_error_chunk_for(out, ChunkForm::Structured, cookie, error, message)
}

/// A whole ERROR chunk with the header of `form`.
pub fn encode_error_chunk_for(
    out: &mut Vec<u8>,
    form: ChunkForm,
    cookie: u64,
    error: u32,
    message: &[u8],
) {
    let msg = &message[..message.len().min(4096)];
    put_chunk_header(
        out,
        form,
        chunk::FLAG_DONE,
        chunk::ERROR,
        cookie,
        6 + msg.len() as u64,
    );
    out.put_u32(error);
    out.put_u16(msg.len() as u16);
    out.extend_from_slice(msg);
}

/// A whole BLOCK_STATUS chunk: a context id, then (length, flags) pairs.
pub fn encode_block_status_chunk(
    out: &mut Vec<u8>,
    flags: u16,
    cookie: u64,
    context_id: u32,
    extents: &[(u32, u32)],
) {
    out.extend_from_slice(&encode_chunk_header(
        flags,
        chunk::BLOCK_STATUS,
        cookie,
        4 + 8 * extents.len() as u32,
    ));
    out.put_u32(context_id);
    for (len, fl) in extents {
        out.put_u32(*len);
        out.put_u32(*fl);
    }
}

/// A whole BLOCK_STATUS_EXT chunk (extended headers): a context id, the
/// number of extents, then (length, flags) pairs of 64 bits each.
pub fn encode_block_status_ext_chunk(
    out: &mut Vec<u8>,
    flags: u16,
    cookie: u64,
    request_offset: u64,
    context_id: u32,
    extents: &[(u64, u64)],
) {
    out.extend_from_slice(&encode_extended_chunk_header(
        flags,
        chunk::BLOCK_STATUS_EXT,
        cookie,
        request_offset,
        8 + 16 * extents.len() as u64,
    ));
    out.put_u32(context_id);
    out.put_u32(extents.len() as u32);
    for (len, fl) in extents {
        out.put_u64(*len);
        out.put_u64(*fl);
    }
}

/// The payload of an ERROR or ERROR_OFFSET chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorChunk<'a> {
    pub error: u32,
    pub message: &'a [u8],
    pub offset: Option<u64>,
}

pub fn parse_error_chunk(kind: u16, payload: &[u8]) -> Result<ErrorChunk<'_>, WireError> {
    let what = "error chunk";
    let mut r = Reader::new(payload);
    let error = r.u32().ok_or(WireError::new(what, "truncated"))?;
    let len = r.u16().ok_or(WireError::new(what, "truncated"))? as usize;
    let message = r
        .take(len)
        .ok_or(WireError::new(what, "message longer than chunk"))?;
    let offset = if kind == chunk::ERROR_OFFSET {
        Some(r.u64().ok_or(WireError::new(what, "offset missing"))?)
    } else {
        None
    };
    // Unknown error types may carry more; proto.md lets a client skip it.
    if kind == chunk::ERROR || kind == chunk::ERROR_OFFSET {
        r.finish(what)?;
    }
    Ok(ErrorChunk {
        error,
        message,
        offset,
    })
}

/// The payload of an OFFSET_HOLE chunk: (offset, length).
pub fn parse_offset_hole(payload: &[u8]) -> Result<(u64, u32), WireError> {
    let what = "OFFSET_HOLE chunk";
    let mut r = Reader::new(payload);
    let off = r.u64().ok_or(WireError::new(what, "truncated"))?;
    let len = r.u32().ok_or(WireError::new(what, "truncated"))?;
    r.finish(what)?;
    if len == 0 {
        return Err(WireError::new(what, "zero length"));
    }
    Ok((off, len))
}

/// The payload of a BLOCK_STATUS chunk: its context id and its extents as
/// an iterator over (length, flags), so no allocation is needed to walk it.
pub fn parse_block_status(
    payload: &[u8],
) -> Result<(u32, impl Iterator<Item = (u32, u32)> + '_), WireError> {
    let what = "BLOCK_STATUS chunk";
    if payload.len() < 12 || !(payload.len() - 4).is_multiple_of(8) {
        return Err(WireError::new(what, "length is not 4 + 8n with n >= 1"));
    }
    let mut r = Reader::new(payload);
    let id = r.u32().unwrap_or(0);
    let rest = r.rest();
    let it = rest.chunks_exact(8).map(|c| {
        let mut r = Reader::new(c);
        (r.u32().unwrap_or(0), r.u32().unwrap_or(0))
    });
    Ok((id, it))
}

/// The payload of a BLOCK_STATUS_EXT chunk: its context id and its
/// extents as (length, flags), 64 bits each. The count the server sent
/// must agree with the payload's length.
pub fn parse_block_status_ext(
    payload: &[u8],
) -> Result<(u32, impl Iterator<Item = (u64, u64)> + '_), WireError> {
    let what = "BLOCK_STATUS_EXT chunk";
    if payload.len() < 24 || !(payload.len() - 8).is_multiple_of(16) {
        return Err(WireError::new(what, "length is not 8 + 16n with n >= 1"));
    }
    let mut r = Reader::new(payload);
    let id = r.u32().unwrap_or(0);
    let count = r.u32().unwrap_or(0) as usize;
    let rest = r.rest();
    if count != rest.len() / 16 {
        return Err(WireError::new(what, "extent count disagrees with length"));
    }
    let it = rest.chunks_exact(16).map(|c| {
        let mut r = Reader::new(c);
        (r.u64().unwrap_or(0), r.u64().unwrap_or(0))
    });
    Ok((id, it))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_parse() {
        let s = encode_simple_reply(5, 9);
        assert_eq!(
            parse_reply_start(&s).unwrap(),
            ReplyStart::Simple {
                error: 5,
                cookie: 9
            }
        );
        let c = encode_chunk_header(1, chunk::OFFSET_DATA, 7, 100);
        let head: [u8; 16] = c[..16].try_into().unwrap();
        assert_eq!(
            parse_reply_start(&head).unwrap(),
            ReplyStart::Structured {
                flags: 1,
                kind: chunk::OFFSET_DATA,
                cookie: 7
            }
        );
        assert!(parse_reply_start(&[0; 16]).is_err());
    }

    #[test]
    fn error_chunk_round_trip() {
        let mut v = Vec::new();
        encode_error_chunk(&mut v, 3, 5, b"boom");
        let e = parse_error_chunk(chunk::ERROR, &v[20..]).unwrap();
        assert_eq!(e.error, 5);
        assert_eq!(e.message, b"boom");
        assert!(parse_error_chunk(chunk::ERROR, &v[20..25]).is_err());
    }

    #[test]
    fn block_status_round_trip() {
        let mut v = Vec::new();
        encode_block_status_chunk(&mut v, 0, 1, 9, &[(512, 3), (1024, 0)]);
        let (id, it) = parse_block_status(&v[20..]).unwrap();
        assert_eq!(id, 9);
        assert_eq!(it.collect::<Vec<_>>(), vec![(512, 3), (1024, 0)]);
        assert!(parse_block_status(&v[20..30]).is_err());
    }

    #[test]
    fn extended_headers_round_trip() {
        let b = encode_extended_chunk_header(1, chunk::NONE, 42, 1 << 40, 0);
        assert_eq!(
            parse_extended_reply_header(&b).unwrap(),
            ExtendedReplyHeader {
                flags: 1,
                kind: chunk::NONE,
                cookie: 42,
                offset: 1 << 40,
                length: 0
            }
        );
        // A compact reply is refused, whatever follows its magic.
        let mut compact = [0u8; 32];
        compact[..16].copy_from_slice(&encode_simple_reply(0, 1));
        assert!(parse_extended_reply_header(&compact).is_err());
        compact[..20].copy_from_slice(&encode_chunk_header(1, 0, 1, 0));
        assert!(parse_extended_reply_header(&compact).is_err());
        let mut v = Vec::new();
        put_chunk_header(&mut v, ChunkForm::Structured, 0, 1, 2, 3);
        assert_eq!(v.len(), STRUCTURED_REPLY_HEADER_LEN);
        put_chunk_header(
            &mut v,
            ChunkForm::Extended { request_offset: 9 },
            0,
            1,
            2,
            3,
        );
        assert_eq!(
            v.len(),
            STRUCTURED_REPLY_HEADER_LEN + EXTENDED_REPLY_HEADER_LEN
        );
    }

    #[test]
    fn extended_error_chunk() {
        let mut v = Vec::new();
        encode_error_chunk_for(
            &mut v,
            ChunkForm::Extended { request_offset: 5 },
            3,
            28,
            b"full",
        );
        let h = parse_extended_reply_header(v[..32].try_into().unwrap()).unwrap();
        assert_eq!((h.kind, h.length, h.offset), (chunk::ERROR, 10, 5));
        let e = parse_error_chunk(chunk::ERROR, &v[32..]).unwrap();
        assert_eq!((e.error, e.message), (28, &b"full"[..]));
    }

    #[test]
    fn block_status_ext_round_trip() {
        let mut v = Vec::new();
        let extents = [(5u64 << 30, 3u64), (512, 0)];
        encode_block_status_ext_chunk(&mut v, 1, 7, 0, 2, &extents);
        let h = parse_extended_reply_header(v[..32].try_into().unwrap()).unwrap();
        assert_eq!((h.kind, h.length), (chunk::BLOCK_STATUS_EXT, 40));
        let (id, it) = parse_block_status_ext(&v[32..]).unwrap();
        assert_eq!(id, 2);
        assert_eq!(it.collect::<Vec<_>>(), extents.to_vec());
        // Too short, or a count that disagrees with the length.
        assert!(parse_block_status_ext(&v[32..48]).is_err());
        let mut bad = v[32..].to_vec();
        bad[7] = 3;
        assert!(parse_block_status_ext(&bad).is_err());
    }
}
