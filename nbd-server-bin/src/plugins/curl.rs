//! The curl plugin: a disk image served over HTTP(S), FTP, file:// or any
//! protocol libcurl speaks, read with range requests (nbdkit-curl-plugin).
//!
//! libcurl is loaded with dlopen(3) when the plugin is first used, as
//! nbdkit loads its plugins: the server binary does not depend on it, and
//! without libcurl only this plugin fails, with a clear message.
//!
//! Read-only: nbdkit's plugin writes only for a few protocols, and a disk
//! image behind an HTTP server is the case people use it for. Requests run
//! in parallel, each on an easy handle taken from a pool (so connections
//! are kept alive and reused).

use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::sync::OnceLock;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result};
use parking_lot::Mutex;

use crate::params::Params;

use std::sync::Arc;

use super::PluginSpec;
use crate::chain::Plugin;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "curl",
    magic: Some("url"),
    params: &[
        ("url", "the HTTP, HTTPS or FTP URL of the disk"),
        ("header", "an extra request header (may be repeated)"),
        ("user", "the user name to log in with"),
        ("password", "the password to log in with"),
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
    /// Kept alive for the handles that point at it (a curl_slist).
    headers: *mut c_void,
    sslverify: bool,
    followlocation: bool,
    tcp_nodelay: bool,
    timeout: c_long,
}

/// An easy handle, cleaned up when dropped.
struct Easy(Curl);

// SAFETY: an easy handle is used by one thread at a time (it lives in the
// pool or in the one request using it); libcurl allows moving it between
// threads.
unsafe impl Send for Easy {}

impl Drop for Easy {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: a handle from curl_easy_init, cleaned up once.
            unsafe { (l.easy_cleanup)(self.0) };
        }
    }
}

pub struct CurlPlugin {
    s: Settings,
    size: u64,
    pool: Mutex<Vec<Easy>>,
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
        let s = Settings {
            url: cstring("url", url)?,
            user: opt(p, "user")?,
            password: opt(p, "password")?,
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
        // SAFETY: plain constructor; checked for NULL.
        let e = Easy(unsafe { (l.easy_init)() });
        if e.0.is_null() {
            return Err(Error::new(libc::ENOMEM, "curl: curl_easy_init failed"));
        }
        let s = &self.s;
        // SAFETY: each option with the argument type libcurl documents for
        // it; the strings and the header list outlive the handle (they
        // belong to the plugin, which owns the pool).
        unsafe {
            let set_str = |o: c_int, v: &CString| (l.easy_setopt)(e.0, o, v.as_ptr());
            let set_long = |o: c_int, v: c_long| (l.easy_setopt)(e.0, o, v);
            set_str(CURLOPT_URL, &s.url);
            for (o, v) in [
                (CURLOPT_USERNAME, &s.user),
                (CURLOPT_PASSWORD, &s.password),
                (CURLOPT_PROXY, &s.proxy),
                (CURLOPT_CAINFO, &s.cainfo),
                (CURLOPT_CAPATH, &s.capath),
                (CURLOPT_UNIX_SOCKET_PATH, &s.unix_socket_path),
            ] {
                if let Some(v) = v {
                    set_str(o, v);
                }
            }
            if !s.headers.is_null() {
                (l.easy_setopt)(e.0, CURLOPT_HTTPHEADER, s.headers);
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

    fn perform(&self, e: &Easy, what: &str) -> Result<()> {
        let l = lib().map_err(|e| Error::new(libc::EIO, e))?;
        // SAFETY: a handle set up by `handle`.
        let r = unsafe { (l.easy_perform)(e.0) };
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
        let e = self.handle()?;
        // SAFETY: options and info of the types libcurl documents.
        let len = unsafe {
            (l.easy_setopt)(e.0, CURLOPT_NOBODY, 1 as c_long);
            self.perform(&e, &format!("{}", self.s.url.to_string_lossy()))?;
            let mut len: i64 = -1;
            (l.easy_getinfo)(
                e.0,
                CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                &mut len as *mut i64,
            );
            (l.easy_setopt)(e.0, CURLOPT_NOBODY, 0 as c_long);
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

impl Backend for CurlPlugin {
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_multi_conn(&self) -> Result<bool> {
        Ok(true)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let l = lib().map_err(|e| Error::new(libc::EIO, e))?;
        let e = self.handle()?;
        let range = CString::new(format!("{}-{}", offset, offset + buf.len() as u64 - 1))
            .expect("digits and a dash");
        let mut sink = Sink {
            buf,
            filled: 0,
            overflow: false,
        };
        // SAFETY: the callback and its data live until perform returns;
        // the range string too. Both are reset before the handle goes back
        // to the pool.
        let r = unsafe {
            (l.easy_setopt)(e.0, CURLOPT_RANGE, range.as_ptr());
            (l.easy_setopt)(e.0, CURLOPT_WRITEFUNCTION, write_cb as WriteFn);
            (l.easy_setopt)(
                e.0,
                CURLOPT_WRITEDATA,
                &mut sink as *mut Sink as *mut c_void,
            );
            let r = self.perform(&e, "read");
            (l.easy_setopt)(e.0, CURLOPT_RANGE, std::ptr::null::<c_char>());
            (l.easy_setopt)(e.0, CURLOPT_WRITEDATA, std::ptr::null_mut::<c_void>());
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
        unsafe { (l.easy_getinfo)(e.0, CURLINFO_RESPONSE_CODE, &mut code as *mut c_long) };
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

/// The same disk for every connection.
impl Plugin for CurlPlugin {
    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}
