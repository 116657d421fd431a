//! The pattern plugin: every 8-byte-aligned offset holds itself as a
//! big-endian u64 (nbdkit-pattern-plugin(1)).

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Result};

use crate::chain::Plugin;
use crate::params::{size_param, Params};

use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "pattern",
    magic: Some("size"),
    params: &[("size", "the size of the disk that reads as its own offsets")],
    open: |p, _| Ok(Arc::new(Pattern::open(p)?)),
};

/// `pattern [size=]SIZE`: every 8-byte-aligned offset holds itself as a
/// big-endian u64; read-only.
pub struct Pattern {
    size: u64,
}

impl Pattern {
    pub fn open(p: &mut Params) -> std::result::Result<Pattern, String> {
        Ok(Pattern {
            size: size_param(p, true)?,
        })
    }
}

/// Fills `buf` with the pattern as seen from `offset`.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    let mut i = 0usize;
    while i < buf.len() {
        let pos = offset + i as u64;
        let word = pos & !7;
        let in_word = (pos - word) as usize;
        let bytes = word.to_be_bytes();
        let n = (8 - in_word).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&bytes[in_word..in_word + n]);
        i += n;
    }
}

impl Backend for Pattern {
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    supports!(can_multi_conn, can_cache);
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        fill_pattern(buf, offset);
        Ok(())
    }
}

/// The same disk for every connection.
impl Plugin for Pattern {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_bytes() {
        let mut b = [0u8; 13];
        fill_pattern(&mut b, 5);
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]);
        let mut b = [0u8; 4];
        fill_pattern(&mut b, 0x1_0000_0006);
        assert_eq!(b, [0, 0, 0, 0]);
        fill_pattern(&mut b, 0x1_0000_0004 + 0x100);
        assert_eq!(b, [0x00, 0x00, 0x01, 0x00]);
    }
}
