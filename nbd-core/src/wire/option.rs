//! Option haggling: the client's option requests and the server's replies,
//! with the payloads of the options we implement.

use super::codec::{PutBe, Reader, WireError};
use super::consts::{info, IHAVEOPT, OPTION_REPLY_MAGIC};
use crate::limits::MAX_STRING;

/// Length of an option request's header: IHAVEOPT, option, length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of an option reply's header: magic, option, type, length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;

/// The header of a client's option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

impl OptionHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(IHAVEOPT);
        out.put_u32(self.option);
        out.put_u32(self.len);
    }

    pub fn decode(b: &[u8; OPTION_HEADER_LEN]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        if r.u64() != Some(IHAVEOPT) {
            return Err(WireError::new("option", "bad magic (expected IHAVEOPT)"));
        }
        let option = r.u32().unwrap_or(0);
        let len = r.u32().unwrap_or(0);
        Ok(OptionHeader { option, len })
    }
}

/// Appends a whole option (header and payload) to `out`.
pub fn encode_option(out: &mut Vec<u8>, option: u32, payload: &[u8]) {
    OptionHeader {
        option,
        len: payload.len() as u32,
    }
    .encode(out);
    out.extend_from_slice(payload);
}

/// The header of a server's reply to an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply_type: u32,
    pub len: u32,
}

impl OptionReplyHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(OPTION_REPLY_MAGIC);
        out.put_u32(self.option);
        out.put_u32(self.reply_type);
        out.put_u32(self.len);
    }

    pub fn decode(b: &[u8; OPTION_REPLY_HEADER_LEN]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        if r.u64() != Some(OPTION_REPLY_MAGIC) {
            return Err(WireError::new("option reply", "bad magic"));
        }
        Ok(OptionReplyHeader {
            option: r.u32().unwrap_or(0),
            reply_type: r.u32().unwrap_or(0),
            len: r.u32().unwrap_or(0),
        })
    }
}

/// Appends a whole option reply to `out`.
pub fn encode_option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, payload: &[u8]) {
    OptionReplyHeader {
        option,
        reply_type,
        len: payload.len() as u32,
    }
    .encode(out);
    out.extend_from_slice(payload);
}

/// The payload of INFO and GO: an export name and the information wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoRequest<'a> {
    pub export_name: &'a [u8],
    pub info_requests: Vec<u16>,
}

impl<'a> GoRequest<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(6 + self.export_name.len() + 2 * self.info_requests.len());
        v.put_string32(self.export_name);
        v.put_u16(self.info_requests.len() as u16);
        for i in &self.info_requests {
            v.put_u16(*i);
        }
        v
    }

    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let what = "NBD_OPT_GO/INFO";
        let mut r = Reader::new(payload);
        let export_name = r
            .string32(MAX_STRING)
            .ok_or(WireError::new(what, "export name too long or truncated"))?;
        let n = r.u16().ok_or(WireError::new(what, "truncated"))?;
        if r.remaining() != 2 * n as usize {
            return Err(WireError::new(what, "information request count mismatch"));
        }
        let info_requests = (0..n).filter_map(|_| r.u16()).collect();
        Ok(GoRequest {
            export_name,
            info_requests,
        })
    }
}

/// The payload of LIST_META_CONTEXT and SET_META_CONTEXT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaContextRequest<'a> {
    pub export_name: &'a [u8],
    pub queries: Vec<&'a [u8]>,
}

impl<'a> MetaContextRequest<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.put_string32(self.export_name);
        v.put_u32(self.queries.len() as u32);
        for q in &self.queries {
            v.put_string32(q);
        }
        v
    }

    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let what = "meta context request";
        let mut r = Reader::new(payload);
        let export_name = r
            .string32(MAX_STRING)
            .ok_or(WireError::new(what, "export name too long or truncated"))?;
        let n = r.u32().ok_or(WireError::new(what, "truncated"))?;
        // Each query takes at least four bytes, which bounds n by the payload.
        if n as usize > r.remaining() / 4 {
            return Err(WireError::new(what, "query count exceeds payload"));
        }
        let mut queries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            queries.push(
                r.string32(MAX_STRING)
                    .ok_or(WireError::new(what, "query too long or truncated"))?,
            );
        }
        r.finish(what)?;
        Ok(MetaContextRequest {
            export_name,
            queries,
        })
    }
}

/// One piece of information in an NBD_REP_INFO reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InfoReply<'a> {
    Export {
        size: u64,
        flags: u16,
    },
    Name(&'a [u8]),
    Description(&'a [u8]),
    BlockSize {
        minimum: u32,
        preferred: u32,
        maximum: u32,
    },
    /// A type we do not know; proto.md says to ignore it.
    Unknown(u16),
}

impl<'a> InfoReply<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            InfoReply::Export { size, flags } => {
                v.put_u16(info::EXPORT);
                v.put_u64(*size);
                v.put_u16(*flags);
            }
            InfoReply::Name(n) => {
                v.put_u16(info::NAME);
                v.extend_from_slice(n);
            }
            InfoReply::Description(d) => {
                v.put_u16(info::DESCRIPTION);
                v.extend_from_slice(d);
            }
            InfoReply::BlockSize {
                minimum,
                preferred,
                maximum,
            } => {
                v.put_u16(info::BLOCK_SIZE);
                v.put_u32(*minimum);
                v.put_u32(*preferred);
                v.put_u32(*maximum);
            }
            InfoReply::Unknown(t) => v.put_u16(*t),
        }
        v
    }

    pub fn decode(payload: &'a [u8]) -> Result<Self, WireError> {
        let what = "NBD_REP_INFO";
        let mut r = Reader::new(payload);
        let t = r.u16().ok_or(WireError::new(what, "truncated"))?;
        let short = WireError::new(what, "wrong length for its type");
        let v = match t {
            info::EXPORT => {
                let size = r.u64().ok_or(short.clone())?;
                let flags = r.u16().ok_or(short.clone())?;
                r.finish(what)?;
                InfoReply::Export { size, flags }
            }
            info::NAME | info::DESCRIPTION => {
                let s = r.rest();
                if s.len() > MAX_STRING {
                    return Err(WireError::new(what, "string too long"));
                }
                if t == info::NAME {
                    InfoReply::Name(s)
                } else {
                    InfoReply::Description(s)
                }
            }
            info::BLOCK_SIZE => {
                let minimum = r.u32().ok_or(short.clone())?;
                let preferred = r.u32().ok_or(short.clone())?;
                let maximum = r.u32().ok_or(short)?;
                r.finish(what)?;
                InfoReply::BlockSize {
                    minimum,
                    preferred,
                    maximum,
                }
            }
            other => InfoReply::Unknown(other),
        };
        Ok(v)
    }
}

/// The payload of NBD_REP_SERVER: an export name and its description.
pub fn encode_rep_server(name: &[u8], description: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + name.len() + description.len());
    v.put_string32(name);
    v.extend_from_slice(description);
    v
}

/// Parses NBD_REP_SERVER into (name, description).
pub fn parse_rep_server(payload: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let mut r = Reader::new(payload);
    let name = r.string32(MAX_STRING).ok_or(WireError::new(
        "NBD_REP_SERVER",
        "name too long or truncated",
    ))?;
    let desc = r.rest();
    if desc.len() > MAX_STRING {
        return Err(WireError::new("NBD_REP_SERVER", "description too long"));
    }
    Ok((name, desc))
}

/// The payload of NBD_REP_META_CONTEXT: the context's id and name.
pub fn encode_rep_meta_context(id: u32, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + name.len());
    v.put_u32(id);
    v.extend_from_slice(name);
    v
}

/// Parses NBD_REP_META_CONTEXT into (id, name).
pub fn parse_rep_meta_context(payload: &[u8]) -> Result<(u32, &[u8]), WireError> {
    let mut r = Reader::new(payload);
    let id = r
        .u32()
        .ok_or(WireError::new("NBD_REP_META_CONTEXT", "truncated"))?;
    let name = r.rest();
    if name.len() > MAX_STRING {
        return Err(WireError::new("NBD_REP_META_CONTEXT", "name too long"));
    }
    Ok((id, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_round_trip() {
        let g = GoRequest {
            export_name: b"disk",
            info_requests: vec![info::BLOCK_SIZE, info::NAME],
        };
        let e = g.encode();
        assert_eq!(GoRequest::decode(&e).unwrap(), g);
        assert!(GoRequest::decode(&e[..e.len() - 1]).is_err());
    }

    #[test]
    fn meta_round_trip_and_bounds() {
        let m = MetaContextRequest {
            export_name: b"",
            queries: vec![b"base:allocation", b"qemu:"],
        };
        let e = m.encode();
        assert_eq!(MetaContextRequest::decode(&e).unwrap(), m);
        // A count that the payload cannot hold is refused before allocating.
        let mut bad = Vec::new();
        bad.put_string32(b"");
        bad.put_u32(u32::MAX);
        assert!(MetaContextRequest::decode(&bad).is_err());
    }

    #[test]
    fn info_round_trip() {
        for i in [
            InfoReply::Export {
                size: 1 << 30,
                flags: 0x1ff,
            },
            InfoReply::Name(b"x"),
            InfoReply::BlockSize {
                minimum: 1,
                preferred: 4096,
                maximum: 1 << 25,
            },
        ] {
            assert_eq!(InfoReply::decode(&i.encode()).unwrap(), i);
        }
        assert!(InfoReply::decode(&[0, 0, 1]).is_err());
    }
}
