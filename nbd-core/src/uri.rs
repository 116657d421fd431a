//! NBD URIs, as the NBD URI specification (NetworkBlockDevice/nbd
//! doc/uri.md) defines them and libnbd 1.14 reads them: pure parsing,
//! checking and rendering, no I/O and no handle.
//!
//! ```text
//! nbd://[user@]host[:port]/export           TCP (default port 10809)
//! nbds://...                                TCP, TLS required
//! nbd+unix://[user@]/export?socket=PATH     Unix domain socket
//! nbds+unix://...
//! nbd+vsock://[user@]CID[:PORT]/export      AF_VSOCK (CID default 2)
//! nbds+vsock://...
//! nbd+ssh://[user@]host[:sshport]/export     ssh(1) to host, then nc(1)
//! nbds+ssh://...                            there to the NBD server
//! ```
//!
//! Schemes are matched in any case (libnbd 1.24). libnbd 1.24's query
//! parameters are read too: `nbd-port` (the NBD server's port, overriding
//! the authority's; for ssh, the port nc connects to on the remote side),
//! `tls-hostname`, `tls-priority` (when permitted) and `compress` (ssh).
//!
//! The export name is the path less its leading `/`, percent-decoded. The
//! query parameters acted on are `socket`, `tls-certificates` and
//! `tls-psk-file` (libnbd 1.14's), and `tls-username` and
//! `tls-verify-peer` (the NBD URI specification's, which later libnbds
//! honour too); the last wins when one is repeated. A URI can only turn
//! peer verification off by saying `tls-verify-peer=false` in plain sight.
//! Every other parameter is ignored, as libnbd ignores it, and
//! kept in [`NbdUri::ignored`] for the debug log.
//!
//! The client library (nbd_connect_uri, nbd_get_uri) and the server's nbd
//! plugin both use it; errors are typed ([`UriErrorKind`]) and each caller
//! maps them onto its errno.

use std::ffi::CString;

/// Why a URI was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriErrorKind {
    /// Not an NBD URI, or a malformed one (EINVAL).
    Invalid,
    /// Well formed, but not what the caller permits (EPERM).
    NotPermitted,
    /// Well formed, but it cannot be written as a URI (EPROTONOSUPPORT).
    Unsupported,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UriError {
    pub kind: UriErrorKind,
    /// libnbd's wording, without the call's name.
    pub message: String,
}

impl std::fmt::Display for UriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UriError {}

type Error = UriError;

fn err(kind: UriErrorKind, message: impl Into<String>) -> Error {
    UriError {
        kind,
        message: message.into(),
    }
}

/// The IANA port of NBD, the default for TCP and vsock.
pub const DEFAULT_PORT: u32 = 10809;
/// VMADDR_CID_HOST: the default vsock CID (the hypervisor).
pub const DEFAULT_CID: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
    Vsock,
    Ssh,
}

/// Where a connection goes: what nbd_connect_tcp/unix/vsock were given.
/// It is also what nbd_get_uri renders back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// getaddrinfo's node and service, as given.
    Tcp {
        host: CString,
        port: CString,
    },
    Unix {
        socket: CString,
    },
    Vsock {
        cid: u32,
        port: u32,
    },
    /// `nbd+ssh://`: tunnelled through the local ssh(1).
    Ssh(SshTarget),
}

impl Endpoint {
    pub fn transport(&self) -> Transport {
        match self {
            Endpoint::Tcp { .. } => Transport::Tcp,
            Endpoint::Unix { .. } => Transport::Unix,
            Endpoint::Vsock { .. } => Transport::Vsock,
            Endpoint::Ssh(_) => Transport::Ssh,
        }
    }
}

/// Where an `nbd+ssh://` URI goes (libnbd ≥ 1.22): the local ssh(1)
/// logs in to `host` and runs nc(1) there, to the NBD server's Unix
/// `socket` if given, else to its TCP `nbd_port` on the remote localhost.
/// Everything that reaches the remote shell has been checked for shell
/// metacharacters, and the host can never be read as an ssh option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// Never empty, never starting with `-`.
    pub host: CString,
    /// The ssh server's port (the URI authority's), if given.
    pub ssh_port: Option<u32>,
    /// The ssh user (the URI authority's userinfo), without `%`.
    pub user: Option<CString>,
    /// `socket=`: the NBD server's Unix socket on the remote host.
    pub socket: Option<CString>,
    /// `nbd-port=` or 10809: the NBD server's TCP port on the remote host.
    pub nbd_port: CString,
    /// `compress=true`: ssh -C.
    pub compress: bool,
}

impl SshTarget {
    /// The ssh(1) command line: options, then `--` so that nothing after
    /// it is an option, the host, and the remote command.
    pub fn argv(&self) -> Vec<CString> {
        let arg = |s: &str| CString::new(s).expect("no NUL in a constant");
        let mut v = vec![arg("ssh")];
        if self.compress {
            v.push(arg("-C"));
        }
        if let Some(p) = self.ssh_port {
            v.push(arg("-p"));
            v.push(arg(&p.to_string()));
        }
        if let Some(u) = &self.user {
            let mut o = b"User=".to_vec();
            o.extend_from_slice(u.to_bytes());
            v.push(arg("-o"));
            v.push(CString::new(o).expect("from a CString"));
        }
        v.push(arg("--"));
        v.push(self.host.clone());
        v.push(arg("nc"));
        match &self.socket {
            Some(sock) => {
                v.push(arg("-U"));
                v.push(sock.clone());
            }
            None => {
                v.push(arg("localhost"));
                v.push(self.nbd_port.clone());
            }
        }
        v
    }
}

/// Characters a value passed on to the remote shell must not contain
/// (libnbd's list, and blanks, which would split the word).
const SHELL_METACHARACTERS: &[u8] = b"\\\"`$';&|<>!(){}[]*?~ \t\n\r";

fn check_shell_safe(name: &str, v: &[u8]) -> Result<(), Error> {
    if v.iter().any(|c| SHELL_METACHARACTERS.contains(c)) {
        return Err(einval(format!(
            "parameter '{name}' rejected because it contains shell metacharacters"
        )));
    }
    Ok(())
}

/// A parsed NBD URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdUri {
    /// As written: `nbd`, `nbds+unix`, ...
    pub scheme: &'static str,
    /// Whether the scheme requires TLS (`nbds*`).
    pub tls: bool,
    pub endpoint: Endpoint,
    /// The userinfo part, decoded (`user` or `user:password`, as libnbd
    /// 1.14 passes it whole to nbd_set_tls_username).
    pub user: Option<CString>,
    pub export_name: CString,
    /// `tls-certificates=DIR` (local file access).
    pub tls_certificates: Option<CString>,
    /// `tls-psk-file=FILE` (local file access).
    pub tls_psk_file: Option<CString>,
    /// `tls-username=NAME`; takes precedence over the URI's user part.
    pub tls_username: Option<CString>,
    /// `tls-verify-peer=true|false`.
    pub tls_verify_peer: Option<bool>,
    /// `tls-priority=PRIORITY` (libnbd 1.24; refused unless the caller
    /// allows it, see [`Permitted::tls_priority`]).
    pub tls_priority: Option<CString>,
    /// `tls-hostname=NAME` (libnbd 1.22): nbd_set_tls_hostname.
    pub tls_hostname: Option<CString>,
    /// Every other query parameter, decoded, in order.
    pub ignored: Vec<(String, String)>,
}

const SCHEMES: &[(&str, Transport, bool)] = &[
    ("nbd", Transport::Tcp, false),
    ("nbds", Transport::Tcp, true),
    ("nbd+unix", Transport::Unix, false),
    ("nbds+unix", Transport::Unix, true),
    ("nbd+vsock", Transport::Vsock, false),
    ("nbds+vsock", Transport::Vsock, true),
    ("nbd+ssh", Transport::Ssh, false),
    ("nbds+ssh", Transport::Ssh, true),
];

fn einval(msg: impl Into<String>) -> Error {
    err(UriErrorKind::Invalid, msg)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding (RFC 3986 section 2.1). `+` stays `+`. A `%` not
/// followed by two hex digits is an error.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes every byte that is neither unreserved (RFC 3986) nor
/// in `keep`.
pub fn percent_encode(b: &[u8], keep: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) || keep.contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn c_string(v: Vec<u8>, what: &str) -> Result<CString, Error> {
    CString::new(v).map_err(|_| einval(format!("{what} in NBD URI contains a NUL byte")))
}

/// A decoded query parameter: name and value.
pub type QueryParam = (Vec<u8>, Vec<u8>);

/// The query string split as libnbd does (libvirt's rules): `&` or `;`
/// separate parameters, `name` alone means an empty value, `=value`
/// without a name is skipped, names and values are percent-decoded.
pub fn parse_query(q: &str) -> Result<Vec<QueryParam>, Error> {
    let bad = || einval(format!("unable to parse URI queries: {q}"));
    let mut out = Vec::new();
    for part in q.split(['&', ';']) {
        if part.is_empty() {
            continue;
        }
        let (name, value) = match part.split_once('=') {
            Some(("", _)) => continue,
            Some((n, v)) => (n, v),
            None => (part, ""),
        };
        out.push((
            percent_decode(name).ok_or_else(bad)?,
            percent_decode(value).ok_or_else(bad)?,
        ));
    }
    Ok(out)
}

/// Parses an NBD URI. Errors are EINVAL with a message naming the problem.
pub fn parse(raw: &[u8]) -> Result<NbdUri, Error> {
    let text = String::from_utf8_lossy(raw);
    let unparsable = || einval(format!("unable to parse URI: {text}"));
    let s = std::str::from_utf8(raw).map_err(|_| unparsable())?;

    // The scheme, in any case (as libnbd 1.24 compares it), then the
    // scheme://[authority][/absname][?queries] form.
    let Some(colon) = s.find(':') else {
        return Err(einval(format!("unknown NBD URI scheme: (none) in {s}")));
    };
    let name = &s[..colon];
    let Some(&(scheme, transport, tls)) = SCHEMES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
    else {
        return Err(einval(format!("unknown NBD URI scheme: {name}")));
    };
    if !s[colon..].starts_with("://") {
        return Err(einval(format!("URI must begin with '{scheme}://'")));
    }
    // The url crate checks the generic syntax (bad characters, ports,
    // bracketed IPv6 literals). Leading or trailing blanks, which it would
    // trim, are errors here.
    if s.trim() != s || s.bytes().any(|c| c <= b' ' || c == 0x7f) {
        return Err(unparsable());
    }
    // The userinfo is taken out by hand: the url crate refuses one
    // without a host, which `nbds+unix://alice@/?socket=...` needs.
    let after = colon + 3;
    let auth_len = s[after..].find(['/', '?', '#']).unwrap_or(s.len() - after);
    let authority = &s[after..after + auth_len];
    let (user, rest) = match authority.rfind('@') {
        Some(at) => {
            let info = &authority[..at];
            let valid = info
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:".contains(&c));
            if !valid {
                return Err(unparsable());
            }
            let v = percent_decode(info).ok_or_else(unparsable)?;
            (
                Some(c_string(v, "user name")?),
                format!("{}{}", &s[..after], &s[after + at + 1..]),
            )
        }
        None => (None, s.to_string()),
    };
    let url = url::Url::parse(&rest).map_err(|_| unparsable())?;

    // The path as written, not url.path(): the url crate removes `.` and
    // `..` segments (even as %2E), so `nbd://h/a/../b` would name export
    // `b`. libnbd takes the path verbatim: that export is `a/../b`.
    let tail = &s[after + auth_len..];
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    let export = path.strip_prefix('/').unwrap_or(path);
    let export_name = c_string(
        percent_decode(export).ok_or_else(unparsable)?,
        "export name",
    )?;

    let mut socket = None;
    let mut tls_certificates = None;
    let mut tls_psk_file = None;
    let mut tls_username = None;
    let mut tls_verify_peer = None;
    let mut tls_priority = None;
    let mut tls_hostname = None;
    let mut nbd_port: Option<Vec<u8>> = None;
    let mut compress = false;
    let mut ignored = Vec::new();
    for (n, v) in parse_query(url.query().unwrap_or(""))? {
        match n.as_slice() {
            b"socket" => socket = Some(c_string(v, "socket")?),
            b"tls-certificates" => tls_certificates = Some(c_string(v, "tls-certificates")?),
            b"tls-psk-file" => tls_psk_file = Some(c_string(v, "tls-psk-file")?),
            b"tls-username" => tls_username = Some(c_string(v, "tls-username")?),
            b"tls-priority" => tls_priority = Some(c_string(v, "tls-priority")?),
            b"tls-hostname" => tls_hostname = Some(c_string(v, "tls-hostname")?),
            b"nbd-port" => nbd_port = Some(v),
            b"compress" => compress = parse_bool("compress", &v)?,
            b"tls-verify-peer" => tls_verify_peer = Some(parse_bool("tls-verify-peer", &v)?),
            _ => ignored.push((
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )),
        }
    }

    let host = match url.host() {
        None => String::new(),
        Some(url::Host::Domain(d)) => String::from_utf8(percent_decode(d).ok_or_else(unparsable)?)
            .map_err(|_| unparsable())?,
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
    };
    // libnbd treats port 0 as absent.
    let port = url.port().filter(|p| *p != 0).map(u32::from);

    let endpoint = match transport {
        Transport::Unix => {
            // Any authority is ignored, as in libnbd.
            let Some(socket) = socket else {
                return Err(einval(
                    "cannot parse socket parameter from NBD URI \
                     (did you mean to use \"nbd+unix:///?socket=...\"?)",
                ));
            };
            Endpoint::Unix { socket }
        }
        Transport::Ssh => {
            if host.is_empty() {
                return Err(einval("SSH transport requires a server name"));
            }
            // After `--` ssh reads no options, but a host that looks like
            // one is refused before anything runs.
            if host.starts_with('-') {
                return Err(einval(format!(
                    "SSH server name cannot begin with '-': {host}"
                )));
            }
            if let Some(u) = &user {
                if u.to_bytes().contains(&b'%') {
                    return Err(einval("invalid SSH username, cannot contain '%'"));
                }
            }
            if let Some(sock) = &socket {
                check_shell_safe("socket", sock.to_bytes())?;
            }
            let nbd_port = nbd_port.unwrap_or_else(|| DEFAULT_PORT.to_string().into_bytes());
            check_shell_safe("nbd-port", &nbd_port)?;
            Endpoint::Ssh(SshTarget {
                host: c_string(host.into_bytes(), "host")?,
                ssh_port: port,
                user: user.clone(),
                socket,
                nbd_port: c_string(nbd_port, "nbd-port")?,
                compress,
            })
        }
        _ if socket.is_some() => {
            return Err(einval(format!(
                "socket parameter is incompatible with \"{scheme}:\" \
                 (did you mean to use \"nbd+unix:///?socket=...\"?)"
            )))
        }
        Transport::Tcp => {
            let host = if host.is_empty() {
                "localhost".into()
            } else {
                host
            };
            let port = match nbd_port {
                Some(p) => p,
                None => port.unwrap_or(DEFAULT_PORT).to_string().into_bytes(),
            };
            Endpoint::Tcp {
                host: c_string(host.into_bytes(), "host")?,
                port: c_string(port, "port")?,
            }
        }
        Transport::Vsock => {
            let cid = if host.is_empty() {
                DEFAULT_CID
            } else {
                host.parse::<u32>()
                    .map_err(|_| einval(format!("cannot parse vsock CID from NBD URI: {host}")))?
            };
            let port = match nbd_port {
                Some(p) => std::str::from_utf8(&p)
                    .ok()
                    .and_then(|t| t.parse::<u32>().ok())
                    .ok_or_else(|| {
                        einval(format!(
                            "cannot parse vsock port from nbd-port: {}",
                            String::from_utf8_lossy(&p)
                        ))
                    })?,
                None => port.unwrap_or(DEFAULT_PORT),
            };
            Endpoint::Vsock { cid, port }
        }
    };

    Ok(NbdUri {
        scheme,
        tls,
        endpoint,
        user,
        export_name,
        tls_certificates,
        tls_psk_file,
        tls_username,
        tls_verify_peer,
        tls_priority,
        tls_hostname,
        ignored,
    })
}

/// A boolean query parameter, in libnbd's spellings.
fn parse_bool(name: &str, v: &[u8]) -> Result<bool, Error> {
    match v {
        b"1" | b"true" | b"yes" | b"on" => Ok(true),
        b"0" | b"false" | b"no" | b"off" => Ok(false),
        _ => Err(einval(format!(
            "could not parse {name} parameter, expecting {name}=true|false: {}",
            String::from_utf8_lossy(v)
        ))),
    }
}

/// Whether a URI may, must or must not ask for TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsRule {
    Forbidden,
    Optional,
    Required,
}

/// What a caller lets a URI do (nbd_set_uri_allow_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permitted {
    pub tcp: bool,
    pub unix: bool,
    pub vsock: bool,
    pub ssh: bool,
    pub tls: TlsRule,
    /// Query parameters naming local files (`tls-certificates`,
    /// `tls-psk-file`).
    pub local_file: bool,
    /// `tls-priority=`: it can read local files and weaken TLS, so it
    /// is refused by default (nbd_set_uri_allow_tls_priority).
    pub tls_priority: bool,
}

impl Permitted {
    /// Everything but local files: libnbd's defaults.
    pub const DEFAULT: Permitted = Permitted {
        tcp: true,
        unix: true,
        vsock: true,
        ssh: true,
        tls: TlsRule::Optional,
        local_file: false,
        tls_priority: false,
    };

    pub fn transport(&self, t: Transport) -> bool {
        match t {
            Transport::Tcp => self.tcp,
            Transport::Unix => self.unix,
            Transport::Vsock => self.vsock,
            Transport::Ssh => self.ssh,
        }
    }
}

/// Checks a parsed URI against what the caller permits: NotPermitted
/// for a transport or TLS mode not allowed, or for local file access.
pub fn check_allowed(uri: &NbdUri, allow: &Permitted) -> Result<(), Error> {
    if !allow.transport(uri.endpoint.transport()) {
        return Err(err(
            UriErrorKind::NotPermitted,
            format!("URI transport {} is not permitted", uri.scheme),
        ));
    }
    if (uri.tls && allow.tls == TlsRule::Forbidden) || (!uri.tls && allow.tls == TlsRule::Required)
    {
        return Err(err(
            UriErrorKind::NotPermitted,
            format!("URI TLS setting {} is not permitted", uri.scheme),
        ));
    }
    for (param, present) in [
        ("tls-certificates", uri.tls_certificates.is_some()),
        ("tls-psk-file", uri.tls_psk_file.is_some()),
    ] {
        if present && !allow.local_file {
            return Err(err(
                UriErrorKind::NotPermitted,
                format!(
                    "local file access ({param}) is not allowed, \
                     call nbd_set_uri_allow_local_file to enable this"
                ),
            ));
        }
    }
    if uri.tls_priority.is_some() && !allow.tls_priority {
        return Err(err(
            UriErrorKind::NotPermitted,
            "TLS priority (tls-priority) is not allowed in URIs, \
             call nbd_set_uri_allow_tls_priority to enable this",
        ));
    }
    Ok(())
}

/// What nbd_get_uri puts into the URI besides the endpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct UriParts<'a> {
    /// Whether the connection uses (or requires) TLS: `nbds*`.
    pub tls: bool,
    /// A TLS user name set explicitly (not the $LOGNAME default).
    pub user: Option<&'a [u8]>,
    pub export_name: &'a [u8],
    pub tls_certificates: Option<&'a [u8]>,
    pub tls_psk_file: Option<&'a [u8]>,
}

/// Sub-delims of RFC 3986, allowed unencoded in userinfo and paths.
const SUB_DELIMS: &[u8] = b"!$&'()*+,;=";

/// Renders a URI that connects back to `ep`, as libnbd 1.14's
/// nbd_get_uri does: the port always present (TCP and vsock), the export name as the
/// path, TLS file parameters in the query.
pub fn render(ep: &Endpoint, p: &UriParts<'_>) -> Result<String, Error> {
    let s = if p.tls { "s" } else { "" };
    let mut out;
    let mut query: Vec<(&str, &[u8])> = Vec::new();
    let user = match p.user {
        Some(u) => {
            let keep: Vec<u8> = SUB_DELIMS.iter().copied().chain(*b":").collect();
            format!("{}@", percent_encode(u, &keep))
        }
        None => String::new(),
    };
    match ep {
        Endpoint::Tcp { host, port } => {
            let h = host.to_bytes();
            let ipv6 =
                std::str::from_utf8(h).is_ok_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok());
            let host = if ipv6 {
                // Bracketed. Any other name with a colon (a decoded %3A)
                // has it percent-encoded below.
                format!("[{}]", String::from_utf8_lossy(h))
            } else {
                percent_encode(h, SUB_DELIMS)
            };
            out = format!(
                "nbd{s}://{user}{host}:{}",
                percent_encode(port.to_bytes(), SUB_DELIMS)
            );
        }
        Endpoint::Unix { socket } => {
            if socket.to_bytes().is_empty() {
                return Err(err(
                    UriErrorKind::Unsupported,
                    "Unix domain sockets in the abstract namespace are not yet supported",
                ));
            }
            out = format!("nbd{s}+unix://{user}");
            query.push(("socket", socket.to_bytes()));
        }
        Endpoint::Vsock { cid, port } => {
            out = format!("nbd{s}+vsock://{user}{cid}:{port}");
        }
        Endpoint::Ssh(t) => {
            // The ssh user, not the TLS one, belongs in the authority.
            let user = match &t.user {
                Some(u) => format!("{}@", percent_encode(u.to_bytes(), SUB_DELIMS)),
                None => String::new(),
            };
            let port = t.ssh_port.map(|p| format!(":{p}")).unwrap_or_default();
            out = format!(
                "nbd{s}+ssh://{user}{}{port}",
                percent_encode(t.host.to_bytes(), SUB_DELIMS)
            );
            match &t.socket {
                Some(sock) => query.push(("socket", sock.to_bytes())),
                None => query.push(("nbd-port", t.nbd_port.to_bytes())),
            }
        }
    }
    let keep: Vec<u8> = SUB_DELIMS.iter().copied().chain(*b":@/").collect();
    out.push('/');
    out.push_str(&percent_encode(p.export_name, &keep));
    if let Some(c) = p.tls_certificates {
        query.push(("tls-certificates", c));
    }
    if let Some(f) = p.tls_psk_file {
        query.push(("tls-psk-file", f));
    }
    for (i, (n, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(n);
        out.push('=');
        out.push_str(&percent_encode(v, b"/:@!$'()*,"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use UriErrorKind::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn ok(s: &str) -> NbdUri {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {}", e.message))
    }

    fn bad(s: &str) -> Error {
        match parse(s.as_bytes()) {
            Ok(u) => panic!("{s} parsed: {u:?}"),
            Err(e) => e,
        }
    }

    fn tcp(host: &str, port: &str) -> Endpoint {
        Endpoint::Tcp {
            host: c(host),
            port: c(port),
        }
    }

    /// Found by fuzz/ (uri): `.` and `..` path segments are part of the
    /// export name, as in libnbd 1.14 (checked against it); they used to be
    /// removed, so such a name rendered by nbd_get_uri did not parse back.
    #[test]
    fn dot_segments_are_part_of_the_export_name() {
        for (uri, export) in [
            ("nbd://h/a/./b", "a/./b"),
            ("nbd://h/%2E%2E/x", "../x"),
            ("nbd+unix:///a/../b?socket=/s", "a/../b"),
            ("nbd://h/.", "."),
            ("nbd://h//x", "/x"),
        ] {
            assert_eq!(ok(uri).export_name, c(export), "{uri}");
        }
        let u = ok("nbd://h/%2E%2E/x");
        let parts = UriParts {
            tls: false,
            user: None,
            export_name: u.export_name.to_bytes(),
            tls_certificates: None,
            tls_psk_file: None,
        };
        let again = ok(&render(&u.endpoint, &parts).unwrap());
        assert_eq!(again.export_name, c("../x"));
    }

    /// Found by fuzz/ (uri): a host name with a colon that is not an IPv6
    /// address (`%3a` decoded) was rendered bracketed, as `[xo9:e]`, which
    /// does not parse. It is rendered percent-encoded now.
    #[test]
    fn a_host_name_with_a_colon_renders_back() {
        let u = ok("nbd://xo9%3ae/e2");
        assert_eq!(u.endpoint, tcp("xo9:e", "10809"));
        let parts = UriParts {
            tls: false,
            user: None,
            export_name: b"e2",
            tls_certificates: None,
            tls_psk_file: None,
        };
        let text = render(&u.endpoint, &parts).unwrap();
        assert_eq!(text, "nbd://xo9%3Ae:10809/e2");
        assert_eq!(ok(&text).endpoint, u.endpoint);
        let v6 = render(&tcp("::1", "10809"), &parts).unwrap();
        assert_eq!(v6, "nbd://[::1]:10809/e2");
    }

    #[test]
    fn every_scheme() {
        let u = ok("nbd://example.com/disk");
        assert_eq!((u.scheme, u.tls), ("nbd", false));
        assert_eq!(u.endpoint, tcp("example.com", "10809"));
        assert_eq!(u.export_name, c("disk"));
        let u = ok("nbds://example.com:1234");
        assert_eq!((u.scheme, u.tls), ("nbds", true));
        assert_eq!(u.endpoint, tcp("example.com", "1234"));
        assert_eq!(u.export_name, c(""));
        let u = ok("nbd+unix:///disk?socket=/tmp/sock");
        assert_eq!((u.scheme, u.tls), ("nbd+unix", false));
        assert_eq!(
            u.endpoint,
            Endpoint::Unix {
                socket: c("/tmp/sock")
            }
        );
        assert_eq!(u.export_name, c("disk"));
        let u = ok("nbds+unix://alice@/?socket=sock");
        assert_eq!((u.scheme, u.tls), ("nbds+unix", true));
        assert_eq!(u.user, Some(c("alice")));
        assert_eq!(u.endpoint, Endpoint::Unix { socket: c("sock") });
        let u = ok("nbd+vsock:///");
        assert_eq!(
            u.endpoint,
            Endpoint::Vsock {
                cid: 2,
                port: 10809
            }
        );
        let u = ok("nbds+vsock://3:4000/e");
        assert!(u.tls);
        assert_eq!(u.endpoint, Endpoint::Vsock { cid: 3, port: 4000 });
        assert_eq!(u.export_name, c("e"));
        for s in ["nbd+vsock", "nbds+vsock", "nbd", "nbds"] {
            assert_eq!(ok(&format!("{s}:///")).scheme, s);
        }
        for s in ["nbd+unix", "nbds+unix"] {
            assert_eq!(ok(&format!("{s}:///?socket=x")).scheme, s);
        }
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(ok("nbd://").endpoint, tcp("localhost", "10809"));
        assert_eq!(ok("nbd:///x").endpoint, tcp("localhost", "10809"));
        assert_eq!(ok("nbd://h:0/").endpoint, tcp("h", "10809"));
        assert_eq!(ok("nbd://h:65535/").endpoint, tcp("h", "65535"));
        assert_eq!(ok("nbd://127.0.0.1:99").endpoint, tcp("127.0.0.1", "99"));
        assert_eq!(ok("nbd://[::1]:10999/x").endpoint, tcp("::1", "10999"));
        assert_eq!(ok("nbd://[fe80::1]").endpoint, tcp("fe80::1", "10809"));
        assert_eq!(ok("nbd://h%2Dx/").endpoint, tcp("h-x", "10809"));
        // A host is ignored for Unix sockets, as in libnbd.
        assert_eq!(
            ok("nbd+unix://host/?socket=s").endpoint,
            Endpoint::Unix { socket: c("s") }
        );
        for s in [
            "nbd://h:abc/",
            "nbd://h:99999/",
            "nbd://[::1/",
            "nbd://a b/",
        ] {
            let e = bad(s);
            assert_eq!(e.kind, Invalid);
            assert_eq!(e.message, format!("unable to parse URI: {s}"));
        }
    }

    #[test]
    fn users() {
        assert_eq!(ok("nbd://u@h/").user, Some(c("u")));
        assert_eq!(ok("nbd://u:pw@h/").user, Some(c("u:pw")));
        assert_eq!(ok("nbd://al%69ce@h/").user, Some(c("alice")));
        assert_eq!(ok("nbd://h/").user, None);
        assert_eq!(ok("nbd+unix://bob@/?socket=s").user, Some(c("bob")));
    }

    #[test]
    fn export_names() {
        assert_eq!(ok("nbd://h").export_name, c(""));
        assert_eq!(ok("nbd://h/").export_name, c(""));
        assert_eq!(ok("nbd://h//disk").export_name, c("/disk"));
        assert_eq!(ok("nbd://h/hello%20world").export_name, c("hello world"));
        assert_eq!(ok("nbd://h/%2Fabs%3F").export_name, c("/abs?"));
        assert_eq!(ok("nbd://h/a+b").export_name, c("a+b"));
        assert_eq!(ok("nbd://h/x#frag").export_name, c("x"));
        assert_eq!(ok("nbd://h/caf%C3%A9").export_name, c("café"));
        let e = bad("nbd://h/a%00b");
        assert_eq!(e.kind, Invalid);
        assert!(e.message.contains("NUL"), "{}", e.message);
        assert_eq!(bad("nbd://h/%zz").kind, Invalid);
        assert_eq!(bad("nbd://h/%4").kind, Invalid);
    }

    #[test]
    fn query_parameters() {
        let u = ok("nbd+unix:///e?socket=%2Ftmp%2Fs&tls-certificates=/c&tls-psk-file=/k");
        assert_eq!(
            u.endpoint,
            Endpoint::Unix {
                socket: c("/tmp/s")
            }
        );
        assert_eq!(u.tls_certificates, Some(c("/c")));
        assert_eq!(u.tls_psk_file, Some(c("/k")));
        assert!(u.ignored.is_empty());
        // ';' separates too; the last socket wins; empty and nameless
        // parts are skipped; unknown parameters are kept aside, not
        // applied; the specification's TLS parameters are taken.
        let u = ok("nbd+unix:///?socket=a;socket=b&&=x&zzz&tls-verify-peer=false&tls-username=u");
        assert_eq!(u.endpoint, Endpoint::Unix { socket: c("b") });
        assert_eq!(u.ignored, vec![("zzz".into(), "".into())]);
        assert_eq!(u.tls_verify_peer, Some(false));
        assert_eq!(u.tls_username, Some(c("u")));
        assert!(bad("nbd+unix:///?socket=a&tls-verify-peer=maybe")
            .message
            .contains("tls-verify-peer"));
        assert_eq!(
            parse_query("a=1&b=&c").unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), vec![]),
                (b"c".to_vec(), vec![]),
            ]
        );
        let e = bad("nbd+unix:///?socket=%G0");
        assert_eq!(e.message, "unable to parse URI queries: socket=%G0");
        assert_eq!(bad("nbd+unix:///?socket=a%00b").kind, Invalid);
    }

    #[test]
    fn malformed() {
        let e = bad("foo://x");
        assert_eq!(
            (e.kind, e.message.as_str()),
            (Invalid, "unknown NBD URI scheme: foo")
        );
        // Schemes are matched in any case since libnbd 1.24.
        assert_eq!(bad("NBDX://x").message, "unknown NBD URI scheme: NBDX");
        assert_eq!(bad("nbd").kind, Invalid);
        assert_eq!(bad("").kind, Invalid);
        assert_eq!(bad("nbd:").message, "URI must begin with 'nbd://'");
        assert_eq!(bad("nbd:/x").message, "URI must begin with 'nbd://'");
        assert_eq!(
            bad("nbds+unix:x").message,
            "URI must begin with 'nbds+unix://'"
        );
        assert!(bad("nbd+unix:///x")
            .message
            .starts_with("cannot parse socket parameter from NBD URI"));
        assert!(bad("nbd://h/?socket=/x")
            .message
            .starts_with("socket parameter is incompatible with \"nbd:\""));
        assert!(bad("nbd+vsock:///?socket=/x")
            .message
            .starts_with("socket parameter is incompatible with \"nbd+vsock:\""));
        assert_eq!(
            bad("nbd+vsock://abc/").message,
            "cannot parse vsock CID from NBD URI: abc"
        );
        assert_eq!(bad(" nbd://h/").kind, Invalid);
        assert_eq!(bad("nbd://h/ ").kind, Invalid);
        assert_eq!(bad("nbd://h/\n").kind, Invalid);
        assert_eq!(parse(b"nbd://h/\xff").unwrap_err().kind, Invalid);
    }

    #[test]
    fn allow_rules() {
        let all = Permitted::DEFAULT;
        let only = |tcp, unix, vsock| Permitted {
            tcp,
            unix,
            vsock,
            ..all
        };
        let tls = |tls| Permitted { tls, ..all };
        let unix = ok("nbd+unix:///?socket=s");
        let tls_tcp = ok("nbds://h/");
        let vsock = ok("nbd+vsock:///");
        assert!(check_allowed(&unix, &all).is_ok());
        let e = check_allowed(&unix, &only(true, false, false)).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (NotPermitted, "URI transport nbd+unix is not permitted")
        );
        assert!(check_allowed(&vsock, &only(true, true, false)).is_err());
        assert!(check_allowed(&tls_tcp, &only(true, false, false)).is_ok());
        assert!(check_allowed(&tls_tcp, &only(false, true, false)).is_err());
        // Forbidden TLS refuses nbds, required TLS refuses nbd.
        let e = check_allowed(&tls_tcp, &tls(TlsRule::Forbidden)).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (NotPermitted, "URI TLS setting nbds is not permitted")
        );
        assert!(check_allowed(&tls_tcp, &tls(TlsRule::Required)).is_ok());
        assert!(check_allowed(&unix, &tls(TlsRule::Forbidden)).is_ok());
        assert_eq!(
            check_allowed(&unix, &tls(TlsRule::Required))
                .unwrap_err()
                .kind,
            NotPermitted
        );
        // Local files need nbd_set_uri_allow_local_file.
        for (s, what) in [
            (
                "nbd+unix:///?socket=s&tls-certificates=/c",
                "tls-certificates",
            ),
            ("nbd:///?tls-psk-file=/k", "tls-psk-file"),
        ] {
            let u = ok(s);
            let e = check_allowed(&u, &all).unwrap_err();
            assert_eq!(e.kind, NotPermitted);
            assert_eq!(
                e.message,
                format!(
                    "local file access ({what}) is not allowed, \
                     call nbd_set_uri_allow_local_file to enable this"
                )
            );
            let files = Permitted {
                local_file: true,
                ..all
            };
            assert!(check_allowed(&u, &files).is_ok());
        }
    }

    #[test]
    fn rendering() {
        let p = UriParts::default();
        assert_eq!(
            render(&tcp("localhost", "10999"), &p).unwrap(),
            "nbd://localhost:10999/"
        );
        assert_eq!(
            render(
                &tcp("::1", "10809"),
                &UriParts {
                    export_name: b"x",
                    ..p
                }
            )
            .unwrap(),
            "nbd://[::1]:10809/x"
        );
        assert_eq!(
            render(&tcp("h", "nbd"), &UriParts { tls: true, ..p }).unwrap(),
            "nbds://h:nbd/"
        );
        let unix = Endpoint::Unix {
            socket: c("/tmp/p sock"),
        };
        assert_eq!(
            render(
                &unix,
                &UriParts {
                    user: Some(b"carol"),
                    export_name: b"foo bar",
                    tls_certificates: Some(b"/x"),
                    tls_psk_file: Some(b"/y&z"),
                    ..p
                }
            )
            .unwrap(),
            "nbd+unix://carol@/foo%20bar?socket=/tmp/p%20sock&tls-certificates=/x&tls-psk-file=/y%26z"
        );
        assert_eq!(
            render(
                &unix,
                &UriParts {
                    export_name: b"/abs?",
                    ..p
                }
            )
            .unwrap(),
            "nbd+unix:////abs%3F?socket=/tmp/p%20sock"
        );
        assert_eq!(
            render(&Endpoint::Vsock { cid: 1, port: 2 }, &p).unwrap(),
            "nbd+vsock://1:2/"
        );
        assert_eq!(
            render(
                &Endpoint::Vsock {
                    cid: 2,
                    port: 10809
                },
                &UriParts { tls: true, ..p }
            )
            .unwrap(),
            "nbds+vsock://2:10809/"
        );
        let e = render(&Endpoint::Unix { socket: c("") }, &p).unwrap_err();
        assert_eq!(e.kind, Unsupported);
    }

    #[test]
    fn render_then_parse_round_trips() {
        for s in [
            "nbd://localhost:10809/",
            "nbds://u@example.com:99/a%20b",
            "nbd://[::1]:10809//x",
            "nbd+unix:///e?socket=/tmp/s",
            "nbds+unix://alice@/e?socket=/tmp/s&tls-certificates=/c&tls-psk-file=/k",
            "nbd+vsock://3:4000/x",
            "nbd+ssh://alice@h:2222/e?nbd-port=10809",
            "nbds+ssh://h/?socket=/run/s",
        ] {
            let u = ok(s);
            let parts = UriParts {
                tls: u.tls,
                user: u.user.as_ref().map(|c| c.to_bytes()),
                export_name: u.export_name.to_bytes(),
                tls_certificates: u.tls_certificates.as_ref().map(|c| c.to_bytes()),
                tls_psk_file: u.tls_psk_file.as_ref().map(|c| c.to_bytes()),
            };
            assert_eq!(render(&u.endpoint, &parts).unwrap(), s);
        }
    }

    fn ssh_of(u: &NbdUri) -> &SshTarget {
        match &u.endpoint {
            Endpoint::Ssh(t) => t,
            e => panic!("not ssh: {e:?}"),
        }
    }

    fn argv(t: &SshTarget) -> Vec<String> {
        t.argv()
            .iter()
            .map(|a| a.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn schemes_in_any_case() {
        assert_eq!(ok("NBD://h/e").endpoint, tcp("h", "10809"));
        assert!(ok("NbdS+Unix:///?socket=/s").tls);
        assert_eq!(ok("nBd+SSH://h/").endpoint.transport(), Transport::Ssh);
    }

    #[test]
    fn nbd_port_overrides_the_authority() {
        assert_eq!(ok("nbd://h:1/?nbd-port=2").endpoint, tcp("h", "2"));
        assert_eq!(
            ok("nbd+vsock://3:1/?nbd-port=4294967295").endpoint,
            Endpoint::Vsock {
                cid: 3,
                port: u32::MAX
            }
        );
        assert!(bad("nbd+vsock://3/?nbd-port=x")
            .message
            .contains("nbd-port"));
    }

    #[test]
    fn tls_hostname_and_username() {
        let u = ok("nbds://alice@h/?tls-hostname=cert.example&tls-username=bob");
        assert_eq!(u.tls_hostname, Some(c("cert.example")));
        assert_eq!(u.tls_username, Some(c("bob")));
        assert_eq!(u.user, Some(c("alice")));
    }

    #[test]
    fn ssh_command_line() {
        let u = ok("nbd+ssh://alice@server:2222/exp?socket=/run/nbd.sock&compress=true");
        assert_eq!(u.export_name, c("exp"));
        assert_eq!(
            argv(ssh_of(&u)),
            [
                "ssh",
                "-C",
                "-p",
                "2222",
                "-o",
                "User=alice",
                "--",
                "server",
                "nc",
                "-U",
                "/run/nbd.sock"
            ]
        );
        let u = ok("nbds+ssh://server/?nbd-port=10810");
        assert!(u.tls);
        assert_eq!(
            argv(ssh_of(&u)),
            ["ssh", "--", "server", "nc", "localhost", "10810"]
        );
        assert_eq!(
            argv(ssh_of(&ok("nbd+ssh://server"))),
            ["ssh", "--", "server", "nc", "localhost", "10809"]
        );
    }

    #[test]
    fn ssh_refuses_what_could_inject() {
        for u in [
            "nbd+ssh://-oProxyCommand=touch%20x/",
            "nbd+ssh://-oProxyCommand=x/",
            "nbd+ssh:///",
            "nbd+ssh://a%25b@h/",
            "nbd+ssh://h/?socket=/s%3Brm",
            "nbd+ssh://h/?socket=$(x)",
            "nbd+ssh://h/?nbd-port=1%20x",
            "nbd+ssh://h/?nbd-port=`x`",
            "nbd+ssh://h/?compress=maybe",
        ] {
            assert_eq!(bad(u).kind, Invalid, "{u}");
        }
    }

    #[test]
    fn ssh_is_a_transport_to_permit() {
        let u = ok("nbd+ssh://h/");
        let mut p = Permitted::DEFAULT;
        assert!(check_allowed(&u, &p).is_ok());
        p.ssh = false;
        assert_eq!(check_allowed(&u, &p).unwrap_err().kind, NotPermitted);
    }
}
