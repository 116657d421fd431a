//! The info plugin: a read-only disk whose content describes the
//! connection (nbdkit-info-plugin(1)).
//!
//! `mode=` chooses what the disk holds, worked out when the client opens
//! it: the export name it asked for (`exportname`, the default), that
//! name decoded from base64 (`base64exportname`), the client's address
//! as text (`address`: `IP:PORT`, `[IPv6]:PORT`, or `unix`), or a 12-byte
//! clock, refreshed on every read: 8 bytes of seconds and 4 of
//! microseconds, both big-endian, since the Epoch (`time`), since the
//! plugin was loaded (`uptime`) or since the connection opened
//! (`conntime`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Peer, Result};

use crate::chain::Plugin;
use crate::params::Params;

use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "info",
    magic: Some("mode"),
    params: &[(
        "mode",
        "what the disk holds: exportname, base64exportname, address, time, uptime or conntime",
    )],
    open: |p, _| Ok(Arc::new(Info::open(p)?)),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ExportName,
    Base64ExportName,
    Address,
    Time,
    Uptime,
    ConnTime,
}

/// The plugin, shared by every connection.
pub struct Info {
    mode: Mode,
    /// When the plugin was loaded, for `uptime`.
    loaded: Instant,
}

impl Info {
    fn open(p: &mut Params) -> std::result::Result<Info, String> {
        let mode = match p.take("mode") {
            None => Mode::ExportName,
            Some(m) => parse_mode(&m)?,
        };
        Ok(Info {
            mode,
            loaded: Instant::now(),
        })
    }
}

/// Mode names, in any case; `export-name` and `base64-export-name` are
/// accepted too, as nbdkit does.
fn parse_mode(m: &str) -> std::result::Result<Mode, String> {
    Ok(match m.to_ascii_lowercase().as_str() {
        "exportname" | "export-name" => Mode::ExportName,
        "base64exportname" | "base64-export-name" => Mode::Base64ExportName,
        "address" => Mode::Address,
        "time" => Mode::Time,
        "uptime" => Mode::Uptime,
        "conntime" => Mode::ConnTime,
        _ => return Err(format!("unknown mode: '{m}'")),
    })
}

/// Decodes base64 as GnuTLS's `gnutls_base64_decode2` does: blanks and
/// line breaks are skipped; what is left must be whole groups of four,
/// with `=` padding only at the very end.
fn decode_base64(s: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let bad = || "base64: Base64 decoding error.".to_string();
    let chars: Vec<u8> = s
        .iter()
        .copied()
        .filter(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .collect();
    if chars.is_empty() {
        return Ok(Vec::new());
    }
    if !chars.len().is_multiple_of(4) {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let groups = chars.len() / 4;
    for (g, quad) in chars.chunks(4).enumerate() {
        let last = g + 1 == groups;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(bad());
        }
        let mut acc = 0u32;
        for &c in &quad[..4 - pad] {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(bad()),
            };
            acc = (acc << 6) | v as u32;
        }
        acc <<= 6 * pad as u32;
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// The text of `mode=address`.
fn address(peer: &Peer) -> Result<Vec<u8>> {
    Ok(match peer {
        Peer::Tcp(std::net::SocketAddr::V4(a)) => format!("{}:{}", a.ip(), a.port()).into_bytes(),
        // (An IPv4 client of our dual-stack socket is already an IPv4
        // peer: see `listen::peer_of`.)
        Peer::Tcp(std::net::SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()).into_bytes(),
        // Never the socket's path: it is the server's business.
        Peer::Unix { .. } => b"unix".to_vec(),
        // A family nbdkit does not describe: an empty disk.
        Peer::Vsock { .. } => Vec::new(),
        Peer::Other => {
            return Err(Error::new(
                libc::ENOTSOCK,
                "nbdkit_peer_name: the client is not on a socket",
            ))
        }
    })
}

/// Seconds and microseconds, big-endian, in 12 bytes.
fn clock_bytes(secs: u64, micros: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&secs.to_be_bytes());
    b[8..].copy_from_slice(&micros.to_be_bytes());
    b
}

/// One connection's disk.
struct Handle {
    mode: Mode,
    /// The disk for the name and address modes.
    data: Vec<u8>,
    loaded: Instant,
    opened: Instant,
}

impl Handle {
    fn clock(&self) -> [u8; 12] {
        let d = match self.mode {
            Mode::Time => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            Mode::Uptime => self.loaded.elapsed(),
            _ => self.opened.elapsed(),
        };
        clock_bytes(d.as_secs(), d.subsec_micros())
    }

    fn is_clock(&self) -> bool {
        matches!(self.mode, Mode::Time | Mode::Uptime | Mode::ConnTime)
    }
}

impl Backend for Handle {
    fn size(&self) -> Result<u64> {
        Ok(if self.is_clock() {
            12
        } else {
            self.data.len() as u64
        })
    }

    /// Clients asking for the same name see the same disk; an address or
    /// a clock differs between connections.
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(matches!(
            self.mode,
            Mode::ExportName | Mode::Base64ExportName
        ))
    }

    /// Everything is in memory: caching is a no-op.
    fn can_cache(&self) -> Result<bool> {
        Ok(true)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let clock;
        let src: &[u8] = if self.is_clock() {
            clock = self.clock();
            &clock
        } else {
            &self.data
        };
        let start = offset as usize;
        buf.copy_from_slice(&src[start..start + buf.len()]);
        Ok(())
    }
}

impl Plugin for Info {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        // An export name ends at its first NUL, as a C string does.
        let name = info.export_name.split(|&b| b == 0).next().unwrap_or(&[]);
        let data = match self.mode {
            Mode::ExportName => name.to_vec(),
            Mode::Base64ExportName => {
                decode_base64(name).map_err(|e| Error::new(libc::EINVAL, e))?
            }
            Mode::Address => address(&info.peer)?,
            Mode::Time | Mode::Uptime | Mode::ConnTime => Vec::new(),
        };
        Ok(Box::new(Handle {
            mode: self.mode,
            data,
            loaded: self.loaded,
            opened: Instant::now(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("EXPORTNAME"), Ok(Mode::ExportName));
        assert_eq!(parse_mode("export-name"), Ok(Mode::ExportName));
        assert_eq!(parse_mode("Base64-Export-Name"), Ok(Mode::Base64ExportName));
        assert_eq!(parse_mode("conntime"), Ok(Mode::ConnTime));
        assert_eq!(parse_mode("bad"), Err("unknown mode: 'bad'".to_string()));
    }

    #[test]
    fn base64_as_gnutls() {
        assert_eq!(decode_base64(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbA==").unwrap(), b"hell");
        assert_eq!(decode_base64(b"aGV sbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        for bad in [
            &b"aGVsbG8"[..],
            b"!!!",
            b"aGVsbG8=eHl6",
            b"YQ",
            b"Y",
            b"aGVsbG8==",
            b"a=GVsbG8",
        ] {
            assert!(decode_base64(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_and_clock() {
        let v4: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(address(&Peer::Tcp(v4)).unwrap(), b"127.0.0.1:5000");
        let v6: std::net::SocketAddr = "[::1]:58912".parse().unwrap();
        assert_eq!(address(&Peer::Tcp(v6)).unwrap(), b"[::1]:58912");
        let unix = Peer::Unix {
            pid: None,
            uid: None,
            gid: None,
        };
        assert_eq!(address(&unix).unwrap(), b"unix");
        assert_eq!(
            clock_bytes(0x5d8f24c7, 0x042401),
            [0, 0, 0, 0, 0x5d, 0x8f, 0x24, 0xc7, 0, 0x04, 0x24, 0x01]
        );
    }
}
