//! A reader that cannot run off the end of its input, and the writers'
//! helpers. All protocol parsing goes through [`Reader`].

use std::fmt;

/// A malformed message: what we were parsing and why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub what: &'static str,
    pub why: &'static str,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {}: {}", self.what, self.why)
    }
}

impl std::error::Error for WireError {}

impl WireError {
    pub fn new(what: &'static str, why: &'static str) -> Self {
        WireError { what, why }
    }
}

/// A cursor over a byte slice. Every `take` checks the length first and
/// returns `None` on short input, so a parser built on it cannot panic.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes, or `None` if fewer are left.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_be_bytes(a)
        })
    }

    /// A string preceded by its 32-bit length, no longer than `max`.
    pub fn string32(&mut self, max: usize) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return None;
        }
        self.take(len)
    }

    /// Fails unless the input was consumed exactly.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::new(what, "trailing bytes"))
        }
    }
}

/// Appends big-endian numbers and length-prefixed strings to a Vec.
pub trait PutBe {
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_string32(&mut self, s: &[u8]);
}

impl PutBe for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_string32(&mut self, s: &[u8]) {
        self.put_u32(s.len() as u32);
        self.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_short_input() {
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.u16(), Some(1));
        assert_eq!(r.u32(), None);
        assert_eq!(r.u8(), Some(2));
        assert!(r.finish("x").is_ok());
    }

    #[test]
    fn string32_bounds_its_length() {
        let mut v = Vec::new();
        v.put_string32(b"hello");
        assert_eq!(Reader::new(&v).string32(5), Some(&b"hello"[..]));
        assert_eq!(Reader::new(&v).string32(4), None);
        assert_eq!(Reader::new(&v[..6]).string32(10), None);
    }
}
