//! The curl plugin: a disk image served over HTTP(S), FTP, file:// or any
//! protocol libcurl speaks, read with range requests (nbdkit-curl-plugin).
//!
//! libcurl is loaded with dlopen(3) when the plugin is first used, as
//! nbdkit loads its plugins: the server binary does not depend on it, and
//! without libcurl only this plugin fails, with a clear message.
//!
//! Writes are uploads of the range written, as nbdkit does them: for HTTP
//! a PUT with a `Content-Range: bytes FIRST-LAST/LENGTH` header (which
//! few servers understand: use `-r` for the others). Requests run in
//! parallel, each on an easy handle taken from a pool (so connections
//! are kept alive and reused). Headers and cookies can come from scripts
//! (`scripts.rs`).

use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::sync::OnceLock;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result};
use parking_lot::Mutex;

use crate::params::Params;

use std::sync::Arc;

use self::scripts::Script;
use super::PluginSpec;

mod scripts;
use crate::chain::Plugin;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "curl",
    magic: Some("url"),
    params: &[
        ("url", "the HTTP, HTTPS or FTP URL of the disk"),
        ("header", "an extra request header (may be repeated)"),
        ("header-script", "a script printing the request headers"),
        (
            "header-script-renew",
            "rerun header-script after this many seconds",
        ),
        ("cookie", "the cookie to send (COOKIE, +FILE, -FD or -)"),
        ("cookie-script", "a script printing the cookie to send"),
        (
            "cookie-script-renew",
            "rerun cookie-script after this many seconds",
        ),
        ("protocols", "the protocols allowed, comma-separated"),
        (
            "cookiefile",
            "cookies to start with (empty: none, but keep those received)",
        ),
        ("cookiejar", "a file of cookies, read and written back"),
        ("proxy-user", "the user name at the proxy"),
        (
            "proxy-password",
            "the password at the proxy (PASSWORD, +FILE, -FD or -)",
        ),
        (
            "ssl-version",
            "tlsv1, sslv2, sslv3, tlsv1.0, tlsv1.1, tlsv1.2 or tlsv1.3",
        ),
        ("ssl-cipher-list", "the TLS cipher suites, colon-separated"),
        (
            "tls13-ciphers",
            "the TLS 1.3 cipher suites, colon-separated",
        ),
        ("tcp-keepalive", "whether to send TCP keepalives"),
        ("user-agent", "the User-Agent header"),
        ("user", "the user name to log in with"),
        (
            "password",
            "the password to log in with (PASSWORD, +FILE, -FD or -)",
        ),
        ("proxy", "the proxy to go through"),
        ("cainfo", "the CA certificate file"),
        ("capath", "the directory of CA certificates"),
        (
            "unix-socket-path",
            "a Unix socket to connect to instead of the URL's host",
        ),
        ("sslverify", "whether to check the server's certificate"),
        ("followlocation", "whether to follow redirects"),
        ("tcp-nodelay", "whether to set TCP_NODELAY"),
        ("timeout", "the timeout of a transfer, in seconds"),
    ],
    open: |p, _| Ok(Arc::new(CurlPlugin::open(p)?)),
};

// libcurl's option and info numbers (curl/curl.h): a type base plus an
// index, fixed by its ABI.
const CURLOPT_WRITEDATA: c_int = 10001;
const CURLOPT_READDATA: c_int = 10009;
const CURLOPT_COOKIE: c_int = 10022;
const CURLOPT_UPLOAD: c_int = 46;
const CURLOPT_HTTPGET: c_int = 80;
const CURLOPT_READFUNCTION: c_int = 20012;
const CURLOPT_INFILESIZE_LARGE: c_int = 30115;
const CURLOPT_USERAGENT: c_int = 10018;
const CURLOPT_COOKIEFILE: c_int = 10031;
const CURLOPT_SSLVERSION: c_int = 32;
const CURLOPT_COOKIEJAR: c_int = 10082;
const CURLOPT_SSL_CIPHER_LIST: c_int = 10083;
const CURLOPT_PROXYUSERNAME: c_int = 10175;
const CURLOPT_PROXYPASSWORD: c_int = 10176;
const CURLOPT_TCP_KEEPALIVE: c_int = 213;
const CURLOPT_TLS13_CIPHERS: c_int = 10276;
const CURLOPT_COOKIELIST: c_int = 10135;
const CURLOPT_PROTOCOLS: c_int = 181;
const CURLOPT_REDIR_PROTOCOLS: c_int = 182;
const CURLOPT_URL: c_int = 10002;
const CURLOPT_PROXY: c_int = 10004;
const CURLOPT_RANGE: c_int = 10007;
const CURLOPT_TIMEOUT: c_int = 13;
const CURLOPT_WRITEFUNCTION: c_int = 20011;
const CURLOPT_HTTPHEADER: c_int = 10023;
const CURLOPT_NOBODY: c_int = 44;
const CURLOPT_FAILONERROR: c_int = 45;
const CURLOPT_FOLLOWLOCATION: c_int = 52;
const CURLOPT_SSL_VERIFYPEER: c_int = 64;
const CURLOPT_CAINFO: c_int = 10065;
const CURLOPT_SSL_VERIFYHOST: c_int = 81;
const CURLOPT_CAPATH: c_int = 10097;
const CURLOPT_NOSIGNAL: c_int = 99;
const CURLOPT_TCP_NODELAY: c_int = 121;
const CURLOPT_USERNAME: c_int = 10173;
const CURLOPT_PASSWORD: c_int = 10174;
const CURLOPT_UNIX_SOCKET_PATH: c_int = 10231;
const CURLINFO_RESPONSE_CODE: c_int = 0x20_0002;
const CURLINFO_CONTENT_LENGTH_DOWNLOAD_T: c_int = 0x60_000f;
const CURL_GLOBAL_DEFAULT: c_long = 3;

type Curl = *mut c_void;
type WriteFn = extern "C" fn(*const c_char, usize, usize, *mut c_void) -> usize;
type ReadFn = extern "C" fn(*mut c_char, usize, usize, *mut c_void) -> usize;

/// The names `protocols=` takes, with libcurl's CURLPROTO_* bits.
const PROTOCOLS: &[(&str, c_long)] = &[
    ("http", 1 << 0),
    ("https", 1 << 1),
    ("ftp", 1 << 2),
    ("ftps", 1 << 3),
    ("scp", 1 << 4),
    ("sftp", 1 << 5),
    ("telnet", 1 << 6),
    ("ldap", 1 << 7),
    ("ldaps", 1 << 8),
    ("dict", 1 << 9),
    ("file", 1 << 10),
    ("tftp", 1 << 11),
    ("imap", 1 << 12),
    ("imaps", 1 << 13),
    ("pop3", 1 << 14),
    ("pop3s", 1 << 15),
    ("smtp", 1 << 16),
    ("smtps", 1 << 17),
    ("rtsp", 1 << 18),
    ("rtmp", 1 << 19),
    ("rtmpt", 1 << 20),
    ("rtmpe", 1 << 21),
    ("rtmpte", 1 << 22),
    ("rtmps", 1 << 23),
    ("rtmpts", 1 << 24),
    ("gopher", 1 << 25),
    ("smb", 1 << 26),
    ("smbs", 1 << 27),
    ("mqtt", 1 << 28),
];

/// `ssl-version=`: libcurl's CURL_SSLVERSION_* value.
fn parse_ssl_version(v: &str) -> std::result::Result<c_long, String> {
    Ok(match v {
        "tlsv1" => 1,
        "sslv2" => 2,
        "sslv3" => 3,
        "tlsv1.0" => 4,
        "tlsv1.1" => 5,
        "tlsv1.2" => 6,
        "tlsv1.3" => 7,
        _ => {
            return Err(format!(
                "curl_easy_setopt: CURLOPT_SSLVERSION [{v}]: unknown version"
            ))
        }
    })
}

/// `protocols=http,https`: the bit mask; errors in nbdkit's words.
fn parse_protocols(v: &str) -> std::result::Result<c_long, String> {
    let mut mask = 0;
    // One trailing comma is allowed; any other empty name is not found.
    let mut names: Vec<&str> = v.split(',').collect();
    if names.last() == Some(&"") {
        names.pop();
    }
    for name in names {
        let (_, bit) = PROTOCOLS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or(format!("protocols: protocol name not found: {name}"))?;
        mask |= bit;
    }
    if mask == 0 {
        return Err("protocols: empty list of protocols is not allowed".into());
    }
    Ok(mask)
}

/// The part of libcurl's API the plugin uses, resolved from libcurl.so.4.
struct Lib {
    easy_init: unsafe extern "C" fn() -> Curl,
    easy_setopt: unsafe extern "C" fn(Curl, c_int, ...) -> c_int,
    easy_perform: unsafe extern "C" fn(Curl) -> c_int,
    easy_getinfo: unsafe extern "C" fn(Curl, c_int, ...) -> c_int,
    easy_cleanup: unsafe extern "C" fn(Curl),
    easy_strerror: unsafe extern "C" fn(c_int) -> *const c_char,
    slist_append: unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void,
    slist_free_all: unsafe extern "C" fn(*mut c_void),
}

fn lib() -> std::result::Result<&'static Lib, String> {
    static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: dlopen and dlsym with NUL-terminated names; each symbol
        // is cast to the type libcurl's header gives it.
        unsafe {
            let h = libc::dlopen(c"libcurl.so.4".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if h.is_null() {
                return Err("curl: cannot load libcurl.so.4: install the libcurl4 package".into());
            }
            // Each symbol becomes the function type libcurl's header gives
            // it (F is always an `unsafe extern "C" fn`, pointer-sized).
            fn sym<F: Copy>(h: *mut c_void, name: &CStr) -> std::result::Result<F, String> {
                assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
                // SAFETY: a handle from dlopen and a NUL-terminated name.
                let p = unsafe { libc::dlsym(h, name.as_ptr()) };
                if p.is_null() {
                    return Err(format!("curl: libcurl lacks {}", name.to_string_lossy()));
                }
                // SAFETY: a function pointer of the symbol's C type, same
                // size as the data pointer dlsym returns (POSIX requires
                // this conversion to work).
                Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
            }
            let global_init: unsafe extern "C" fn(c_long) -> c_int = sym(h, c"curl_global_init")?;
            if global_init(CURL_GLOBAL_DEFAULT) != 0 {
                return Err("curl: curl_global_init failed".into());
            }
            Ok(Lib {
                easy_init: sym(h, c"curl_easy_init")?,
                easy_setopt: sym(h, c"curl_easy_setopt")?,
                easy_perform: sym(h, c"curl_easy_perform")?,
                easy_getinfo: sym(h, c"curl_easy_getinfo")?,
                easy_cleanup: sym(h, c"curl_easy_cleanup")?,
                easy_strerror: sym(h, c"curl_easy_strerror")?,
                slist_append: sym(h, c"curl_slist_append")?,
                slist_free_all: sym(h, c"curl_slist_free_all")?,
            })
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The plugin's settings: everything a new easy handle is set up with.
struct Settings {
    url: CString,
    user: Option<CString>,
    password: Option<CString>,
    proxy: Option<CString>,
    cainfo: Option<CString>,
    capath: Option<CString>,
    unix_socket_path: Option<CString>,
    cookie: Option<CString>,
    protocols: Option<c_long>,
    cookiefile: Option<CString>,
    cookiejar: Option<CString>,
    proxy_user: Option<CString>,
    proxy_password: Option<CString>,
    ssl_version: Option<c_long>,
    ssl_cipher_list: Option<CString>,
    tls13_ciphers: Option<CString>,
    user_agent: Option<CString>,
    tcp_keepalive: bool,
    /// Kept alive for the handles that point at it (a curl_slist).
    headers: *mut c_void,
    sslverify: bool,
    followlocation: bool,
    tcp_nodelay: bool,
    timeout: c_long,
}

/// An easy handle, cleaned up when dropped, with what the scripts last
/// gave it (libcurl keeps a pointer to the header list, so each handle
/// owns its copy).
struct Easy {
    c: Curl,
    script_headers: *mut c_void,
    /// The scripts' output this handle has: `Scripts::generation`.
    generation: u64,
}

// SAFETY: an easy handle is used by one thread at a time (it lives in the
// pool or in the one request using it); libcurl allows moving it between
// threads.
unsafe impl Send for Easy {}

impl Drop for Easy {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: a handle from curl_easy_init, cleaned up once,
            // then the list it pointed at.
            unsafe {
                (l.easy_cleanup)(self.c);
                if !self.script_headers.is_null() {
                    (l.slist_free_all)(self.script_headers);
                }
            }
        }
    }
}

/// `header-script` and `cookie-script`, shared by every handle.
struct Scripts {
    header: Option<Script>,
    cookie: Option<Script>,
    /// Bumped at each run, so each handle knows whether it is current.
    generation: u64,
}

pub struct CurlPlugin {
    s: Settings,
    size: u64,
    pool: Mutex<Vec<Easy>>,
    scripts: Option<Mutex<Scripts>>,
}

// SAFETY: `headers` is written once at open and only read afterwards
// (handed to libcurl, which reads it); everything else is owned data.
unsafe impl Send for CurlPlugin {}
unsafe impl Sync for CurlPlugin {}

fn cstring(key: &str, v: String) -> std::result::Result<CString, String> {
    CString::new(v).map_err(|_| format!("curl: {key} contains a NUL byte"))
}

/// Where a range request's data goes: the caller's buffer, filled from
/// the start; anything beyond it is a server that ignored the range.
struct Sink<'a> {
    buf: &'a mut [u8],
    filled: usize,
    overflow: bool,
}

extern "C" fn write_cb(data: *const c_char, size: usize, n: usize, user: *mut c_void) -> usize {
    let len = size.saturating_mul(n);
    // SAFETY: user is the Sink passed with CURLOPT_WRITEDATA for this
    // transfer; data is len bytes, per libcurl's contract.
    let (sink, data) = unsafe {
        (
            &mut *user.cast::<Sink>(),
            std::slice::from_raw_parts(data.cast::<u8>(), len),
        )
    };
    let room = sink.buf.len() - sink.filled;
    if len > room {
        sink.overflow = true;
        return 0; // a short count makes libcurl abort the transfer
    }
    sink.buf[sink.filled..sink.filled + len].copy_from_slice(data);
    sink.filled += len;
    len
}

/// Where an upload's data comes from: the caller's buffer, in order.
struct Source<'a> {
    buf: &'a [u8],
    sent: usize,
}

extern "C" fn read_cb(data: *mut c_char, size: usize, n: usize, user: *mut c_void) -> usize {
    let room = size.saturating_mul(n);
    // SAFETY: user is the Source passed with CURLOPT_READDATA for this
    // transfer; data has room for `room` bytes, per libcurl's contract.
    let src = unsafe { &mut *user.cast::<Source>() };
    let len = room.min(src.buf.len() - src.sent);
    // SAFETY: as above; the two buffers do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(src.buf[src.sent..].as_ptr(), data.cast::<u8>(), len) };
    src.sent += len;
    len
}

fn secret(key: &str, v: String) -> std::result::Result<CString, String> {
    let bytes = crate::password::read_password(&v)?;
    CString::new(bytes).map_err(|_| format!("curl: {key} contains a NUL byte"))
}

/// `*-script-renew=SECS`: 0 (never) when not given.
fn renew_secs(key: &str, v: Option<String>) -> std::result::Result<u64, String> {
    match v {
        None => Ok(0),
        Some(v) => v
            .parse::<u32>()
            .map(u64::from)
            .map_err(|_| format!("curl: {key}: could not parse number: {v}")),
    }
}

impl CurlPlugin {
    pub fn open(p: &mut Params) -> std::result::Result<CurlPlugin, String> {
        let url = p.take("url").ok_or("curl: the url parameter is required")?;
        let opt = |p: &mut Params, k: &str| -> std::result::Result<Option<CString>, String> {
            p.take(k).map(|v| cstring(k, v)).transpose()
        };
        let l = lib()?;
        let mut headers = std::ptr::null_mut();
        for h in p.take_all("header") {
            let h = cstring("header", h)?;
            // SAFETY: curl_slist_append copies the string.
            headers = unsafe { (l.slist_append)(headers, h.as_ptr()) };
        }
        let header_script = p.take("header-script");
        let header_renew = renew_secs("header-script-renew", p.take("header-script-renew"))?;
        let cookie_script = p.take("cookie-script");
        let cookie_renew = renew_secs("cookie-script-renew", p.take("cookie-script-renew"))?;
        let cookie = p.take("cookie").map(|v| secret("cookie", v)).transpose()?;
        if !headers.is_null() && header_script.is_some() {
            return Err("header and header-script cannot be used at the same time".into());
        }
        if header_script.is_none() && header_renew > 0 {
            return Err("header-script-renew cannot be used without header-script".into());
        }
        if cookie.is_some() && cookie_script.is_some() {
            return Err("cookie and cookie-script cannot be used at the same time".into());
        }
        if cookie_script.is_none() && cookie_renew > 0 {
            return Err("cookie-script-renew cannot be used without cookie-script".into());
        }
        let scripts = (header_script.is_some() || cookie_script.is_some()).then(|| {
            Mutex::new(Scripts {
                header: header_script
                    .map(|sc| Script::new("header-script", sc, header_renew, &url)),
                cookie: cookie_script
                    .map(|sc| Script::new("cookie-script", sc, cookie_renew, &url)),
                generation: 0,
            })
        });
        let s = Settings {
            url: cstring("url", url)?,
            user: opt(p, "user")?,
            password: p
                .take("password")
                .map(|v| secret("password", v))
                .transpose()?,
            cookie,
            cookiefile: match p.take("cookiefile") {
                // libcurl would read standard input.
                Some(v) if v == "-" => return Err("cookiefile parameter cannot be \"-\"".into()),
                v => v.map(|v| cstring("cookiefile", v)).transpose()?,
            },
            cookiejar: match p.take("cookiejar") {
                // libcurl would write to standard output.
                Some(v) if v == "-" => return Err("cookiejar parameter cannot be \"-\"".into()),
                v => v.map(|v| cstring("cookiejar", v)).transpose()?,
            },
            proxy_user: opt(p, "proxy-user")?,
            proxy_password: p
                .take("proxy-password")
                .map(|v| secret("proxy-password", v))
                .transpose()?,
            ssl_version: p
                .take("ssl-version")
                .map(|v| parse_ssl_version(&v))
                .transpose()?,
            ssl_cipher_list: opt(p, "ssl-cipher-list")?,
            tls13_ciphers: opt(p, "tls13-ciphers")?,
            user_agent: opt(p, "user-agent")?,
            tcp_keepalive: p.take_bool("tcp-keepalive")?.unwrap_or(false),
            protocols: p
                .take("protocols")
                .map(|v| parse_protocols(&v))
                .transpose()?,
            proxy: opt(p, "proxy")?,
            cainfo: opt(p, "cainfo")?,
            capath: opt(p, "capath")?,
            unix_socket_path: opt(p, "unix-socket-path")?,
            headers,
            sslverify: p.take_bool("sslverify")?.unwrap_or(true),
            followlocation: p.take_bool("followlocation")?.unwrap_or(true),
            tcp_nodelay: p.take_bool("tcp-nodelay")?.unwrap_or(true),
            timeout: p
                .take_with("timeout", |v| {
                    v.parse::<c_long>()
                        .ok()
                        .filter(|t| *t >= 0)
                        .ok_or(format!("curl: could not parse timeout: {v}"))
                })?
                .unwrap_or(0),
        };
        let mut plugin = CurlPlugin {
            s,
            size: 0,
            pool: Mutex::new(Vec::new()),
            scripts,
        };
        plugin.size = plugin
            .content_length()
            .map_err(|e| e.message.into_owned())?;
        Ok(plugin)
    }

    /// A handle set up with the plugin's settings, from the pool or new.
    fn handle(&self) -> Result<Easy> {
        if let Some(e) = self.pool.lock().pop() {
            return Ok(e);
        }
        let l = lib().map_err(|e| Error::new(libc::EIO, e))?;
        let e = Easy {
            // SAFETY: plain constructor; checked for NULL.
            c: unsafe { (l.easy_init)() },
            script_headers: std::ptr::null_mut(),
            generation: 0,
        };
        if e.c.is_null() {
            return Err(Error::new(libc::ENOMEM, "curl: curl_easy_init failed"));
        }
        let s = &self.s;
        // SAFETY: each option with the argument type libcurl documents for
        // it; the strings and the header list outlive the handle (they
        // belong to the plugin, which owns the pool).
        unsafe {
            let set_str = |o: c_int, v: &CString| (l.easy_setopt)(e.c, o, v.as_ptr());
            let set_long = |o: c_int, v: c_long| (l.easy_setopt)(e.c, o, v);
            set_str(CURLOPT_URL, &s.url);
            for (o, v) in [
                (CURLOPT_USERNAME, &s.user),
                (CURLOPT_PASSWORD, &s.password),
                (CURLOPT_PROXY, &s.proxy),
                (CURLOPT_CAINFO, &s.cainfo),
                (CURLOPT_CAPATH, &s.capath),
                (CURLOPT_UNIX_SOCKET_PATH, &s.unix_socket_path),
                (CURLOPT_COOKIEFILE, &s.cookiefile),
                (CURLOPT_COOKIEJAR, &s.cookiejar),
                (CURLOPT_PROXYUSERNAME, &s.proxy_user),
                (CURLOPT_PROXYPASSWORD, &s.proxy_password),
                (CURLOPT_SSL_CIPHER_LIST, &s.ssl_cipher_list),
                (CURLOPT_TLS13_CIPHERS, &s.tls13_ciphers),
                (CURLOPT_USERAGENT, &s.user_agent),
            ] {
                if let Some(v) = v {
                    set_str(o, v);
                }
            }
            if let Some(c) = &s.cookie {
                set_str(CURLOPT_COOKIE, c);
            }
            if let Some(v) = s.ssl_version {
                set_long(CURLOPT_SSLVERSION, v);
            }
            set_long(CURLOPT_TCP_KEEPALIVE, c_long::from(s.tcp_keepalive));
            if let Some(mask) = s.protocols {
                // Redirects too may only lead to these protocols.
                set_long(CURLOPT_PROTOCOLS, mask);
                set_long(CURLOPT_REDIR_PROTOCOLS, mask);
            }
            if !s.headers.is_null() {
                (l.easy_setopt)(e.c, CURLOPT_HTTPHEADER, s.headers);
            }
            set_long(CURLOPT_SSL_VERIFYPEER, c_long::from(s.sslverify));
            set_long(CURLOPT_SSL_VERIFYHOST, if s.sslverify { 2 } else { 0 });
            set_long(CURLOPT_FOLLOWLOCATION, c_long::from(s.followlocation));
            set_long(CURLOPT_TCP_NODELAY, c_long::from(s.tcp_nodelay));
            set_long(CURLOPT_TIMEOUT, s.timeout);
            // No signals from libcurl in a threaded server; HTTP errors
            // (404, 500 …) are transfer errors.
            set_long(CURLOPT_NOSIGNAL, 1);
            set_long(CURLOPT_FAILONERROR, 1);
        }
        Ok(e)
    }

    /// Runs the header and cookie scripts if they are due, and gives the
    /// handle their latest output (nbdkit does this before each request).
    fn apply_scripts(&self, e: &mut Easy) -> Result<()> {
        let Some(scripts) = &self.scripts else {
            return Ok(());
        };
        let l = lib().map_err(|e| Error::new(libc::EIO, e))?;
        let mut guard = scripts.lock();
        let sc = &mut *guard;
        let mut ran = false;
        for script in [&mut sc.header, &mut sc.cookie].into_iter().flatten() {
            ran |= script.refresh().map_err(|m| Error::new(libc::EIO, m))?;
        }
        if ran {
            sc.generation += 1;
        }
        if e.generation == sc.generation && sc.generation > 0 {
            return Ok(());
        }
        // SAFETY: the handle's own list is replaced (libcurl is told
        // first), and the cookie string is copied by libcurl.
        unsafe {
            if let Some(h) = &sc.header {
                let mut list = std::ptr::null_mut();
                for line in &h.lines {
                    if let Ok(line) = CString::new(line.as_str()) {
                        list = (l.slist_append)(list, line.as_ptr());
                    }
                }
                (l.easy_setopt)(e.c, CURLOPT_HTTPHEADER, list);
                if !e.script_headers.is_null() {
                    (l.slist_free_all)(e.script_headers);
                }
                e.script_headers = list;
            }
            if let Some(c) = &sc.cookie {
                let cookie = c.lines.first().and_then(|l| CString::new(l.as_str()).ok());
                (l.easy_setopt)(
                    e.c,
                    CURLOPT_COOKIE,
                    cookie.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                );
            }
        }
        e.generation = sc.generation;
        Ok(())
    }

    fn perform(&self, e: &Easy, what: &str) -> Result<()> {
        let l = lib().map_err(|e| Error::new(libc::EIO, e))?;
        // SAFETY: a handle set up by `handle`.
        let r = unsafe { (l.easy_perform)(e.c) };
        if r != 0 {
            // SAFETY: curl_easy_strerror returns a static string.
            let why = unsafe { CStr::from_ptr((l.easy_strerror)(r)) };
            return Err(Error::new(
                libc::EIO,
                format!("curl: {what}: {}", why.to_string_lossy()),
            ));
        }
        Ok(())
    }

    /// The image's size, from a HEAD request (or its equivalent for the
    /// protocol).
    fn content_length(&self) -> Result<u64> {
        let l = lib().map_err(|e| Error::new(libc::EIO, e))?;
        let mut e = self.handle()?;
        self.apply_scripts(&mut e)?;
        // SAFETY: options and info of the types libcurl documents.
        let len = unsafe {
            (l.easy_setopt)(e.c, CURLOPT_NOBODY, 1 as c_long);
            self.perform(&e, &format!("{}", self.s.url.to_string_lossy()))?;
            let mut len: i64 = -1;
            (l.easy_getinfo)(
                e.c,
                CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                &mut len as *mut i64,
            );
            (l.easy_setopt)(e.c, CURLOPT_NOBODY, 0 as c_long);
            len
        };
        if len < 0 {
            return Err(Error::new(
                libc::EIO,
                format!(
                    "curl: {}: the server did not report the size of the image",
                    self.s.url.to_string_lossy()
                ),
            ));
        }
        self.pool.lock().push(e);
        Ok(len as u64)
    }
}

impl Drop for CurlPlugin {
    fn drop(&mut self) {
        // The handles point at the header list: clean them up first.
        self.pool.lock().clear();
        if let (Ok(l), false) = (lib(), self.s.headers.is_null()) {
            // SAFETY: the list from curl_slist_append, no longer used.
            unsafe { (l.slist_free_all)(self.s.headers) };
        }
    }
}

impl CurlPlugin {
    /// What a transfer of the `len` bytes at `offset` starts from: the
    /// library, a handle with the header and cookie scripts applied, and
    /// the range as libcurl takes it (`len` > 0).
    fn ranged(&self, offset: u64, len: usize) -> Result<(&'static Lib, Easy, CString)> {
        let l = lib().map_err(|e| Error::new(libc::EIO, e))?;
        let mut e = self.handle()?;
        self.apply_scripts(&mut e)?;
        let range = CString::new(format!("{}-{}", offset, offset + len as u64 - 1))
            .expect("digits and a dash");
        Ok((l, e, range))
    }

    /// Uploads `buf` as the range at `offset` (for HTTP: a PUT with a
    /// Content-Range header, which libcurl makes from the range).
    fn upload(&self, buf: &[u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (l, e, range) = self.ranged(offset, buf.len())?;
        let mut src = Source { buf, sent: 0 };
        // SAFETY: the callback, its data and the range live until perform
        // returns; all are reset before the handle goes back to the pool.
        let r = unsafe {
            (l.easy_setopt)(e.c, CURLOPT_UPLOAD, 1 as c_long);
            (l.easy_setopt)(e.c, CURLOPT_INFILESIZE_LARGE, buf.len() as i64);
            (l.easy_setopt)(e.c, CURLOPT_RANGE, range.as_ptr());
            (l.easy_setopt)(e.c, CURLOPT_READFUNCTION, read_cb as ReadFn);
            (l.easy_setopt)(
                e.c,
                CURLOPT_READDATA,
                &mut src as *mut Source as *mut c_void,
            );
            let r = self.perform(&e, "write");
            (l.easy_setopt)(e.c, CURLOPT_UPLOAD, 0 as c_long);
            (l.easy_setopt)(e.c, CURLOPT_RANGE, std::ptr::null::<c_char>());
            (l.easy_setopt)(e.c, CURLOPT_READDATA, std::ptr::null_mut::<c_void>());
            r
        };
        r?;
        if src.sent != buf.len() {
            return Err(Error::new(
                libc::EIO,
                format!(
                    "curl: short write: {} of {} bytes at offset {offset}",
                    src.sent,
                    buf.len()
                ),
            ));
        }
        self.pool.lock().push(e);
        Ok(())
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (l, e, range) = self.ranged(offset, buf.len())?;
        let mut sink = Sink {
            buf,
            filled: 0,
            overflow: false,
        };
        // SAFETY: the callback and its data live until perform returns;
        // the range string too. Both are reset before the handle goes back
        // to the pool.
        let r = unsafe {
            // A GET again, after an upload on this handle.
            (l.easy_setopt)(e.c, CURLOPT_HTTPGET, 1 as c_long);
            (l.easy_setopt)(e.c, CURLOPT_RANGE, range.as_ptr());
            (l.easy_setopt)(e.c, CURLOPT_WRITEFUNCTION, write_cb as WriteFn);
            (l.easy_setopt)(
                e.c,
                CURLOPT_WRITEDATA,
                &mut sink as *mut Sink as *mut c_void,
            );
            let r = self.perform(&e, "read");
            (l.easy_setopt)(e.c, CURLOPT_RANGE, std::ptr::null::<c_char>());
            (l.easy_setopt)(e.c, CURLOPT_WRITEDATA, std::ptr::null_mut::<c_void>());
            r
        };
        if sink.overflow {
            // The server sent more than the range: it ignores ranges, and
            // serving such an image would mean downloading it whole per
            // request. Drop the handle rather than reuse it mid-transfer.
            return Err(Error::new(
                libc::EIO,
                "curl: the server does not support range requests",
            ));
        }
        r?;
        if sink.filled != sink.buf.len() {
            return Err(Error::new(
                libc::EIO,
                format!(
                    "curl: short read: {} of {} bytes at offset {offset}",
                    sink.filled,
                    sink.buf.len()
                ),
            ));
        }
        let mut code: c_long = 0;
        // SAFETY: CURLINFO_RESPONSE_CODE takes a long *.
        unsafe { (l.easy_getinfo)(e.c, CURLINFO_RESPONSE_CODE, &mut code as *mut c_long) };
        // 206 Partial Content for HTTP; 0 for protocols without codes
        // (file://); a 200 with exactly the right length is a whole-image
        // read.
        if !(code == 206
            || code == 0
            || (code == 200 && offset == 0 && sink.filled as u64 == self.size))
        {
            return Err(Error::new(
                libc::EIO,
                format!("curl: unexpected response {code} to a range request"),
            ));
        }
        self.pool.lock().push(e);
        Ok(())
    }
}

/// One client's view of the disk: the same for every connection, but
/// multi-conn only when read-only (HTTP has nothing to flush, so writes
/// on one connection are not known to be visible on another).
struct CurlConnection {
    plugin: Arc<CurlPlugin>,
    readonly: bool,
}

impl Backend for CurlConnection {
    fn size(&self) -> Result<u64> {
        Ok(self.plugin.size)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(self.readonly)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(true)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.plugin.read(buf, offset)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        self.plugin.upload(buf, offset)
    }
}

/// `cookiejar=`: libcurl writes the jar when a handle is cleaned up, and
/// ours live in a pool for the server's lifetime; so when a client
/// disconnects (when nbdkit 1.32 cleans up that client's handle), the
/// idle handles write theirs now.
impl Drop for CurlConnection {
    fn drop(&mut self) {
        if self.plugin.s.cookiejar.is_none() {
            return;
        }
        let Ok(l) = lib() else { return };
        for e in self.plugin.pool.lock().iter() {
            // SAFETY: an idle handle; "FLUSH" is a string libcurl copies.
            unsafe { (l.easy_setopt)(e.c, CURLOPT_COOKIELIST, c"FLUSH".as_ptr()) };
        }
    }
}

impl Plugin for CurlPlugin {
    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(CurlConnection {
            plugin: self,
            readonly: info.readonly,
        }))
    }
}
