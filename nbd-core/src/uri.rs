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
//! ```
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
}

impl Endpoint {
    pub fn transport(&self) -> Transport {
        match self {
            Endpoint::Tcp { .. } => Transport::Tcp,
            Endpoint::Unix { .. } => Transport::Unix,
            Endpoint::Vsock { .. } => Transport::Vsock,
        }
    }
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

    // The scheme, exactly (libnbd compares case-sensitively), then the
    // scheme://[authority][/absname][?queries] form.
    let Some(colon) = s.find(':') else {
        return Err(einval(format!("unknown NBD URI scheme: (none) in {s}")));
    };
    let name = &s[..colon];
    let Some(&(scheme, transport, tls)) = SCHEMES.iter().find(|(n, _, _)| *n == name) else {
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
    let mut ignored = Vec::new();
    for (n, v) in parse_query(url.query().unwrap_or(""))? {
        match n.as_slice() {
            b"socket" => socket = Some(c_string(v, "socket")?),
            b"tls-certificates" => tls_certificates = Some(c_string(v, "tls-certificates")?),
            b"tls-psk-file" => tls_psk_file = Some(c_string(v, "tls-psk-file")?),
            b"tls-username" => tls_username = Some(c_string(v, "tls-username")?),
            b"tls-verify-peer" => {
                tls_verify_peer = Some(match v.as_slice() {
                    b"1" | b"true" | b"yes" | b"on" => true,
                    b"0" | b"false" | b"no" | b"off" => false,
                    _ => {
                        return Err(einval(format!(
                            "could not parse tls-verify-peer in NBD URI: {}",
                            String::from_utf8_lossy(&v)
                        )))
                    }
                })
            }
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
            Endpoint::Tcp {
                host: c_string(host.into_bytes(), "host")?,
                port: c_string(
                    port.unwrap_or(DEFAULT_PORT).to_string().into_bytes(),
                    "port",
                )?,
            }
        }
        Transport::Vsock => {
            let cid = if host.is_empty() {
                DEFAULT_CID
            } else {
                host.parse::<u32>()
                    .map_err(|_| einval(format!("cannot parse vsock CID from NBD URI: {host}")))?
            };
            Endpoint::Vsock {
                cid,
                port: port.unwrap_or(DEFAULT_PORT),
            }
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
        ignored,
    })
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
    pub tls: TlsRule,
    /// Query parameters naming local files (`tls-certificates`,
    /// `tls-psk-file`).
    pub local_file: bool,
}

impl Permitted {
    /// Everything but local files: libnbd's defaults.
    pub const DEFAULT: Permitted = Permitted {
        tcp: true,
        unix: true,
        vsock: true,
        tls: TlsRule::Optional,
        local_file: false,
    };

    pub fn transport(&self, t: Transport) -> bool {
        match t {
            Transport::Tcp => self.tcp,
            Transport::Unix => self.unix,
            Transport::Vsock => self.vsock,
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
        assert_eq!(bad("NBD://x").message, "unknown NBD URI scheme: NBD");
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
}
