//! Requests of the transmission phase: a 28-byte header, followed by the
//! payload for WRITE.

use super::codec::{Reader, WireError};
use super::consts::REQUEST_MAGIC;
use super::vocab::{CmdFlags, Command};

pub const REQUEST_HEADER_LEN: usize = 28;

/// A request header. `cookie` is proto.md's name for what older texts call
/// the handle: an opaque value the server echoes in its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
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

    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }

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
            length: r.u32().unwrap_or(0),
        })
    }
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
}
