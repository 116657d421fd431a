//! The nbd plugin's TLS to the server it forwards to: `tls=off|on|require`
//! with Pre-Shared Keys (`tls-psk=FILE`, `tls-username=NAME`) or X.509
//! (`tls-certificates=DIR`: ca-cert.pem, and client-cert.pem with
//! client-key.pem if there; without it the system's CAs; `tls-verify=false`
//! skips the host name check), as nbdkit-nbd-plugin(1) describes them and
//! libnbd does them: the name is checked only over TCP, where there is
//! one. The session runs over the blocking socket with GnuTLS's own
//! transport.

use std::ffi::CString;
use std::os::unix::io::RawFd;

use nbd_core::client::Tls;
use nbd_gnutls::secret::Zeroizing;
use nbd_gnutls::{Certificate, Credentials, PskClient, Session, Side};

use crate::params::Params;

/// libnbd's priority string with the PSK key exchanges added.
const PSK_PRIORITY: &std::ffi::CStr = c"NORMAL:-VERS-SSL3.0:+ECDHE-PSK:+DHE-PSK:+PSK";

/// libnbd's default priority string, for X.509.
const X509_PRIORITY: &std::ffi::CStr = c"NORMAL:-VERS-SSL3.0";

/// What the plugin was told about TLS.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub mode: Tls,
    /// The PSK file and the user name whose key it holds.
    /// (None: the local user, from $LOGNAME or $USER, or an nbds URI's.)
    psk: Option<(String, Option<String>)>,
    /// tls-certificates=: the X.509 directory.
    certificates: Option<String>,
    /// tls-verify=: check the server's name (over TCP).
    verify: bool,
    /// The server's host name, when connecting over TCP.
    pub hostname: Option<String>,
}

impl Settings {
    /// Takes the tls parameters. As nbdkit: `tls=` defaults to off, or to
    /// on when another tls parameter is given.
    pub fn take(p: &mut Params) -> Result<Settings, String> {
        // Absolute, since the server may change directory when it goes
        // into the background.
        let absolute = |f: String| {
            std::path::absolute(&f)
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or(f)
        };
        let tls = p.take("tls");
        let psk = p.take("tls-psk").map(absolute);
        let user = p.take("tls-username");
        let certs = p.take("tls-certificates").map(absolute);
        let verify = p.take("tls-verify");
        let verify = match verify {
            None => true,
            Some(v) => {
                crate::params::parse_bool(&v).map_err(|e| p.err(format!("tls-verify: {e}")))?
            }
        };
        if let Some(d) = &certs {
            if !std::path::Path::new(d).is_dir() {
                return Err(p.err(format!("tls-certificates: {d}: not a directory")));
            }
        }
        let others = psk.is_some() || user.is_some() || certs.is_some();
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
        let psk = match psk {
            None => None,
            Some(f) => {
                let user = user
                    .or_else(|| std::env::var("LOGNAME").ok())
                    .or_else(|| std::env::var("USER").ok());
                // Read now, so that a bad file is a start-up error.
                if let Some(u) = &user {
                    lookup_key(&f, u).map_err(|e| p.err(e))?;
                }
                Some((f, user))
            }
        };
        Ok(Settings {
            mode,
            psk,
            certificates: certs,
            verify,
            hostname: None,
        })
    }

    /// Runs the client's TLS handshake on the connected socket `fd`.
    pub fn handshake(&self, fd: RawFd) -> Result<Session, String> {
        let e = |e: nbd_gnutls::Error| format!("TLS: {e}");
        let mut s = Session::new(Side::Client, false).map_err(e)?;
        let creds = match &self.psk {
            Some((file, user)) => {
                let user = user
                    .as_deref()
                    .ok_or("TLS: no user name for tls-psk= (tls-username=)")?;
                s.set_priority(PSK_PRIORITY).map_err(e)?;
                let name = CString::new(user.as_bytes()).map_err(|_| "TLS: user name has NUL")?;
                let key = lookup_key(file, user)?;
                Credentials::PskClient(PskClient::new(&name, key).map_err(e)?)
            }
            None => {
                s.set_priority(X509_PRIORITY).map_err(e)?;
                Credentials::Certificate(self.x509()?)
            }
        };
        s.set_credentials(std::sync::Arc::new(creds)).map_err(e)?;
        if self.psk.is_none() && self.verify {
            if let Some(h) = &self.hostname {
                let h = CString::new(h.as_bytes()).map_err(|_| "TLS: host name has NUL")?;
                s.verify_cert(Some(&h));
            }
        }
        s.transport_sockets(fd, fd);
        while !s.handshake().map_err(e)? {}
        Ok(s)
    }
}

impl Settings {
    /// The X.509 credentials: the directory's CA (and our certificate and
    /// key if it has them), else the system's CAs. Over TCP with
    /// verification on, the session is told the name to check.
    fn x509(&self) -> Result<Certificate, String> {
        let e = |e: nbd_gnutls::Error| format!("TLS: {e}");
        let c = Certificate::new().map_err(e)?;
        let file = |d: &str, f: &str| {
            let p = std::path::Path::new(d).join(f);
            let exists = p.exists();
            CString::new(p.as_os_str().as_encoded_bytes())
                .map(|c| (c, exists))
                .map_err(|_| format!("TLS: {d}: NUL in the path"))
        };
        match &self.certificates {
            Some(d) => {
                let (ca, have_ca) = file(d, "ca-cert.pem")?;
                if !have_ca {
                    return Err(format!("TLS: {d}/ca-cert.pem: not found"));
                }
                c.set_trust_file(&ca, "ca-cert.pem").map_err(e)?;
                let (cert, have_cert) = file(d, "client-cert.pem")?;
                let (key, have_key) = file(d, "client-key.pem")?;
                if have_cert && have_key {
                    c.set_key_file(&cert, &key, "client-cert.pem").map_err(e)?;
                }
            }
            None => c.set_system_trust().map_err(e)?,
        }
        Ok(c)
    }
}

/// The TLS part of an `nbds*` URI (see `nbd::uri_tls`).
pub struct UriTls {
    pub psk_file: Option<String>,
    pub username: Option<String>,
    pub certificates: Option<String>,
    pub verify: Option<bool>,
}

impl Settings {
    /// An `nbds*` URI requires TLS; its credentials count where no
    /// parameter gave them.
    pub fn require_for_uri(&mut self, u: UriTls) -> Result<(), String> {
        // As nbdkit's plugin (libnbd refuses them unless allowed): files
        // are named by this plugin's parameters, not by the URI.
        if u.psk_file.is_some() || u.certificates.is_some() {
            return Err(
                "local file access (tls-psk-file, tls-certificates) in the URI is not allowed; \
                 use tls-psk= or tls-certificates="
                    .into(),
            );
        }
        self.mode = Tls::Require;
        if let (Some((file, user)), Some(u)) = (&mut self.psk, u.username) {
            lookup_key(file, &u)?;
            *user = Some(u);
        }
        if let Some(v) = u.verify {
            self.verify = v;
        }
        Ok(())
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
