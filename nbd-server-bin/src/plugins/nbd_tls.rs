//! The nbd plugin's TLS to the server it forwards to: `tls=off|on|require`
//! and Pre-Shared Keys (`tls-psk=FILE`, `tls-username=NAME`), as
//! nbdkit-nbd-plugin(1) describes them. The session runs over the blocking
//! socket with GnuTLS's own transport. X.509 (`tls-certificates=`,
//! `tls-verify=`) is refused at start-up: not implemented yet.

use std::ffi::CString;
use std::os::unix::io::RawFd;

use nbd_core::client::Tls;
use nbd_gnutls::secret::Zeroizing;
use nbd_gnutls::{Credentials, PskClient, Session, Side};

use crate::params::Params;

/// libnbd's priority string with the PSK key exchanges added.
const PSK_PRIORITY: &std::ffi::CStr = c"NORMAL:-VERS-SSL3.0:+ECDHE-PSK:+DHE-PSK:+PSK";

/// What the plugin was told about TLS.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub mode: Tls,
    /// The PSK file and the user name whose key it holds.
    psk: Option<(String, String)>,
}

impl Settings {
    /// Takes the tls parameters. As nbdkit: `tls=` defaults to off, or to
    /// on when another tls parameter is given.
    pub fn take(p: &mut Params) -> Result<Settings, String> {
        let tls = p.take("tls");
        let psk = p.take("tls-psk");
        let user = p.take("tls-username");
        let certs = p.take("tls-certificates");
        let verify = p.take("tls-verify");
        if certs.is_some() || verify.is_some() {
            return Err(p.err(
                "X.509 TLS to the server (tls-certificates=, tls-verify=) is not supported yet; use tls-psk=",
            ));
        }
        let others = psk.is_some() || user.is_some();
        let mode = match tls.as_deref() {
            None if others => Tls::Allow,
            None => Tls::Disable,
            Some("require" | "REQUIRE") => Tls::Require,
            Some(v) => match crate::params::parse_bool(v) {
                Ok(true) => Tls::Allow,
                Ok(false) => Tls::Disable,
                Err(_) => return Err(p.err(format!("tls: expected off, on or require: {v}"))),
            },
        };
        if mode != Tls::Disable && psk.is_none() {
            return Err(p.err("TLS to the server needs tls-psk= (X.509 is not supported yet)"));
        }
        let psk = match psk {
            None => None,
            Some(f) => {
                let user = user
                    .or_else(|| std::env::var("LOGNAME").ok())
                    .or_else(|| std::env::var("USER").ok())
                    .ok_or_else(|| p.err("tls-psk: no user name (tls-username=)"))?;
                // Read now, so that a bad file is a start-up error.
                lookup_key(&f, &user).map_err(|e| p.err(e))?;
                Some((f, user))
            }
        };
        Ok(Settings { mode, psk })
    }

    /// Runs the client's TLS handshake on the connected socket `fd`.
    pub fn handshake(&self, fd: RawFd) -> Result<Session, String> {
        let (file, user) = self.psk.as_ref().ok_or("TLS: no credentials")?;
        let e = |e: nbd_gnutls::Error| format!("TLS: {e}");
        let mut s = Session::new(Side::Client, false).map_err(e)?;
        s.set_priority(PSK_PRIORITY).map_err(e)?;
        let name = CString::new(user.as_bytes()).map_err(|_| "TLS: user name has NUL")?;
        let key = lookup_key(file, user)?;
        let creds = PskClient::new(&name, key).map_err(e)?;
        s.set_credentials(std::sync::Arc::new(Credentials::PskClient(creds)))
            .map_err(e)?;
        s.transport_sockets(fd, fd);
        while !s.handshake().map_err(e)? {}
        Ok(s)
    }
}

/// The hex key of `user` in the PSK file (psktool's `user:hexkey` lines).
fn lookup_key(file: &str, user: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = std::fs::read(file)
        .map(Zeroizing::new)
        .map_err(|e| format!("tls-psk: {file}: {e}"))?;
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(key) = line
            .strip_prefix(user.as_bytes())
            .and_then(|r| r.strip_prefix(b":"))
        {
            if key.is_empty() || !key.iter().all(u8::is_ascii_hexdigit) {
                return Err(format!(
                    "tls-psk: {file}: the key of {user} is not hexadecimal"
                ));
            }
            return Ok(Zeroizing::new(key.to_vec()));
        }
    }
    Err(format!("tls-psk: {file}: no key for user {user}"))
}
