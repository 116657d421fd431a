//! Requests of the transmission phase: a header, followed by the payload
//! for WRITE (and, with extended headers, for a BLOCK_STATUS that names
//! its contexts).
//!
//! Two header forms exist. The compact one (28 bytes, 32-bit length) is
//! the only one until NBD_OPT_EXTENDED_HEADERS succeeds; from then on every
//! request uses the extended one (32 bytes, 64-bit length). The length is
//! an *effect* length (how many bytes of the export the command touches),
//! except with NBD_CMD_FLAG_PAYLOAD_LEN, where it is the payload's length.

use super::codec::{PutBe, Reader, WireError};
use super::consts::{EXTENDED_REQUEST_MAGIC, REQUEST_MAGIC};
use super::vocab::{CmdFlags, Command};

/// Length of a compact request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Length of an extended request header.
pub const EXTENDED_REQUEST_HEADER_LEN: usize = 32;

/// A request header in either form. `cookie` is proto.md's name for what
/// older texts call the handle: an opaque value the server echoes in its
/// reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    /// 32 bits on the wire in the compact form, 64 in the extended one.
    pub length: u64,
}

/// An encoded header of either form, kept inline (no allocation per
/// request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedRequest {
    bytes: [u8; EXTENDED_REQUEST_HEADER_LEN],
    len: u8,
}

impl EncodedRequest {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl RequestHeader {
    /// The command, typed; unknown values are kept.
    pub fn command(&self) -> Command {
        Command::from_wire(self.kind)
    }

    /// The command flags, typed; unknown bits are kept.
    pub fn cmd_flags(&self) -> CmdFlags {
        CmdFlags(self.flags)
    }

    /// The compact form. The length must fit in 32 bits (the caller
    /// checks; a longer one would be truncated).
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        debug_assert!(self.length <= u64::from(u32::MAX));
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&(self.length as u32).to_be_bytes());
        b
    }

    /// The extended form.
    pub fn encode_extended(&self) -> [u8; EXTENDED_REQUEST_HEADER_LEN] {
        let mut b = [0u8; EXTENDED_REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&EXTENDED_REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..32].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// The form the connection negotiated.
    pub fn encode_for(&self, extended: bool) -> EncodedRequest {
        let mut bytes = [0u8; EXTENDED_REQUEST_HEADER_LEN];
        if extended {
            bytes = self.encode_extended();
            EncodedRequest {
                bytes,
                len: EXTENDED_REQUEST_HEADER_LEN as u8,
            }
        } else {
            bytes[..REQUEST_HEADER_LEN].copy_from_slice(&self.encode());
            EncodedRequest {
                bytes,
                len: REQUEST_HEADER_LEN as u8,
            }
        }
    }

    /// Decodes the compact form.
    pub fn decode(b: &[u8; REQUEST_HEADER_LEN]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        if r.u32() != Some(REQUEST_MAGIC) {
            return Err(WireError::new("request", "bad magic"));
        }
        Ok(RequestHeader {
            flags: r.u16().unwrap_or(0),
            kind: r.u16().unwrap_or(0),
            cookie: r.u64().unwrap_or(0),
            offset: r.u64().unwrap_or(0),
            length: u64::from(r.u32().unwrap_or(0)),
        })
    }

    /// Decodes the extended form.
    pub fn decode_extended(b: &[u8; EXTENDED_REQUEST_HEADER_LEN]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        if r.u32() != Some(EXTENDED_REQUEST_MAGIC) {
            return Err(WireError::new("extended request", "bad magic"));
        }
        Ok(RequestHeader {
            flags: r.u16().unwrap_or(0),
            kind: r.u16().unwrap_or(0),
            cookie: r.u64().unwrap_or(0),
            offset: r.u64().unwrap_or(0),
            length: r.u64().unwrap_or(0),
        })
    }
}

/// The payload of a BLOCK_STATUS sent with NBD_CMD_FLAG_PAYLOAD_LEN: the
/// effect length, then the ids of the contexts the client wants.
pub fn encode_block_status_payload(effect_length: u64, context_ids: &[u32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + 4 * context_ids.len());
    v.put_u64(effect_length);
    for id in context_ids {
        v.put_u32(*id);
    }
    v
}

/// Parses that payload: (effect length, context ids). At least one id.
pub fn parse_block_status_payload(b: &[u8]) -> Result<(u64, Vec<u32>), WireError> {
    let what = "BLOCK_STATUS payload";
    if b.len() < 12 || !(b.len() - 8).is_multiple_of(4) {
        return Err(WireError::new(what, "length is not 8 + 4n with n >= 1"));
    }
    let mut r = Reader::new(b);
    let effect = r.u64().unwrap_or(0);
    let ids = r
        .rest()
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((effect, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = RequestHeader {
            flags: 1,
            kind: 1,
            cookie: 0xdead_beef,
            offset: 1 << 40,
            length: 4096,
        };
        assert_eq!(RequestHeader::decode(&h.encode()).unwrap(), h);
        let mut b = h.encode();
        b[0] ^= 1;
        assert!(RequestHeader::decode(&b).is_err());
    }

    #[test]
    fn extended_round_trip_keeps_64_bit_lengths() {
        let h = RequestHeader {
            flags: 0x20,
            kind: 6,
            cookie: 7,
            offset: 1 << 33,
            length: (5 << 30) + 1,
        };
        let e = h.encode_for(true);
        assert_eq!(e.as_bytes().len(), EXTENDED_REQUEST_HEADER_LEN);
        assert_eq!(&e.as_bytes()[..4], &[0x21, 0xe4, 0x1c, 0x71]);
        let b: &[u8; 32] = e.as_bytes().try_into().unwrap();
        assert_eq!(RequestHeader::decode_extended(b).unwrap(), h);
        // Neither form is taken for the other.
        assert!(RequestHeader::decode(b[..28].try_into().unwrap()).is_err());
        let short = RequestHeader { length: 9, ..h };
        let c = short.encode_for(false);
        assert_eq!(c.as_bytes().len(), REQUEST_HEADER_LEN);
        let mut padded = [0u8; 32];
        padded[..28].copy_from_slice(c.as_bytes());
        assert!(RequestHeader::decode_extended(&padded).is_err());
    }

    #[test]
    fn block_status_payload_round_trip() {
        let p = encode_block_status_payload(1 << 35, &[1, 9]);
        assert_eq!(p.len(), 16);
        assert_eq!(
            parse_block_status_payload(&p).unwrap(),
            (1 << 35, vec![1, 9])
        );
        assert!(parse_block_status_payload(&p[..8]).is_err());
        assert!(parse_block_status_payload(&p[..14]).is_err());
    }
}
