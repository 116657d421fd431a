//! The first bytes of a connection: the server's greeting, the client's
//! flags, and the reply to NBD_OPT_EXPORT_NAME (which ends negotiation the
//! old way, with the export's size and flags and perhaps 124 zero bytes).

use super::codec::{Reader, WireError};
use super::consts::{IHAVEOPT, NBDMAGIC, OLDSTYLE_MAGIC};

/// Bytes both greetings share: NBDMAGIC and the magic that tells them apart.
pub const GREETING_PREFIX_LEN: usize = 16;
/// The rest of a newstyle greeting: 16-bit handshake flags.
pub const NEWSTYLE_REST_LEN: usize = 2;
/// The rest of an oldstyle greeting: size, 32-bit flags, 124 reserved bytes.
pub const OLDSTYLE_REST_LEN: usize = 8 + 4 + 124;
/// Length of the reply to EXPORT_NAME without the zeroes.
pub const EXPORT_NAME_REPLY_LEN: usize = 10;
/// The padding after it unless both sides agreed to NO_ZEROES.
pub const ZEROES_LEN: usize = 124;

/// Which kind of server greeted us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreetingKind {
    Newstyle,
    Oldstyle,
}

/// Reads NBDMAGIC and the second magic.
pub fn parse_greeting_prefix(b: &[u8; GREETING_PREFIX_LEN]) -> Result<GreetingKind, WireError> {
    let mut r = Reader::new(b);
    let what = "server greeting";
    if r.u64() != Some(NBDMAGIC) {
        return Err(WireError::new(what, "bad magic: not an NBD server"));
    }
    match r.u64() {
        Some(IHAVEOPT) => Ok(GreetingKind::Newstyle),
        Some(OLDSTYLE_MAGIC) => Ok(GreetingKind::Oldstyle),
        _ => Err(WireError::new(what, "unknown protocol version magic")),
    }
}

/// The size and flags of an oldstyle greeting (the part after the prefix).
pub fn parse_oldstyle_rest(b: &[u8; OLDSTYLE_REST_LEN]) -> (u64, u32) {
    let mut r = Reader::new(b);
    // Lengths are fixed by the array type, so these cannot fail.
    let size = r.u64().unwrap_or(0);
    let flags = r.u32().unwrap_or(0);
    (size, flags)
}

/// A newstyle server's greeting.
pub fn encode_newstyle_greeting(handshake_flags: u16) -> [u8; 18] {
    let mut b = [0u8; 18];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&handshake_flags.to_be_bytes());
    b
}

/// An oldstyle server's greeting, for servers that still offer it.
pub fn encode_oldstyle_greeting(size: u64, flags: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(GREETING_PREFIX_LEN + OLDSTYLE_REST_LEN);
    b.extend_from_slice(&NBDMAGIC.to_be_bytes());
    b.extend_from_slice(&OLDSTYLE_MAGIC.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b.resize(b.len() + 124, 0);
    b
}

/// The reply to EXPORT_NAME: size, transmission flags, and the zeroes
/// unless `no_zeroes`.
pub fn encode_export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(EXPORT_NAME_REPLY_LEN + ZEROES_LEN);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        b.resize(b.len() + ZEROES_LEN, 0);
    }
    b
}

/// Parses the reply to EXPORT_NAME (without the zeroes).
pub fn parse_export_name_reply(b: &[u8; EXPORT_NAME_REPLY_LEN]) -> (u64, u16) {
    let mut r = Reader::new(b);
    (r.u64().unwrap_or(0), r.u16().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_round_trip() {
        let g = encode_newstyle_greeting(3);
        let p: [u8; 16] = g[..16].try_into().unwrap();
        assert_eq!(parse_greeting_prefix(&p), Ok(GreetingKind::Newstyle));
        let o = encode_oldstyle_greeting(1 << 40, 7);
        let p: [u8; 16] = o[..16].try_into().unwrap();
        assert_eq!(parse_greeting_prefix(&p), Ok(GreetingKind::Oldstyle));
        let rest: [u8; OLDSTYLE_REST_LEN] = o[16..].try_into().unwrap();
        assert_eq!(parse_oldstyle_rest(&rest), (1 << 40, 7));
        assert!(parse_greeting_prefix(&[0u8; 16]).is_err());
    }
}
