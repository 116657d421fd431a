//! The `nbdkit_*` functions plugins call, with nbdkit's C names and
//! semantics (nbdkit-plugin(3), nbdkit-filter(3)). The `nbdkit` binary
//! exports them to the plugins it dlopens (see build.rs and
//! `nbdkit.dynlist`). The printf-style ones are C variadic functions,
//! which stable Rust cannot define: `shim.c` formats their message and
//! calls `nbdkit_rs_error`, `nbdkit_rs_debug` or `nbdkit_strdup_intern`.
//!
//! Strings returned to be freed by the plugin are allocated with malloc
//! (the plugin calls free(3)); "interned" ones belong to the server
//! (`context::intern`).
//!
//! The functions only filters call are with the filter code: the extents
//! helpers in `next.rs`, the contexts in `filter.rs`.

#![allow(clippy::missing_safety_doc)]

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

use nbd_core::server::backend::Peer;

use super::abi::{Export, Extent};
use super::context;
use super::lists::{ExportsList, ExtentsList};

/// False when the server uses stdin/stdout for the client (`-s`).
static STDIO_SAFE: AtomicBool = AtomicBool::new(true);

pub fn set_stdio_safe(safe: bool) {
    STDIO_SAFE.store(safe, Ordering::SeqCst);
}

/// Whether plugins may use standard input and output (not with `-s`).
pub fn stdio_safe() -> bool {
    STDIO_SAFE.load(Ordering::SeqCst)
}

/// nbdkit_error's report, then errno set as nbdkit leaves it.
fn report(msg: impl std::fmt::Display, errno: c_int) {
    crate::log::error!("{msg}");
    set_errno(errno);
}

fn set_errno(e: c_int) {
    // SAFETY: errno is this thread's.
    unsafe { *libc::__errno_location() = e };
}

/// A C string argument; NULL reads as empty.
unsafe fn arg<'a>(p: *const c_char) -> &'a str {
    if p.is_null() {
        ""
    } else {
        CStr::from_ptr(p).to_str().unwrap_or("")
    }
}

/// A malloc'd copy of `s` for the plugin to free.
fn malloc_string(s: &[u8]) -> *mut c_char {
    let c = CString::new(s).unwrap_or_default();
    // SAFETY: strdup of a valid C string.
    unsafe { libc::strdup(c.as_ptr()) }
}

// ---- messages and errors --------------------------------------------

/// The formatted message of `nbdkit_error`/`nbdkit_verror` (from shim.c).
#[no_mangle]
pub unsafe extern "C" fn nbdkit_rs_error(msg: *const c_char) {
    // Within a connection nbdkit names the message by the plugin and the
    // connection or worker (context::thread_name).
    crate::log::log_error_in(
        &context::thread_name(),
        format_args!("{}", CStr::from_ptr(msg).to_string_lossy()),
    );
}

/// The formatted message of `nbdkit_debug`/`nbdkit_vdebug`: shown with
/// `-v`, named by the plugin.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_rs_debug(msg: *const c_char) {
    if crate::log::verbose() {
        let name = super::loaded_name().unwrap_or_default();
        crate::log::debug!("{name}: {}", CStr::from_ptr(msg).to_string_lossy());
    }
}

#[no_mangle]
pub extern "C" fn nbdkit_set_error(err: c_int) {
    context::set_error(err);
}

// ---- parsers -------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nbdkit_parse_size(s: *const c_char) -> i64 {
    match crate::params::parse_size(arg(s)) {
        Ok(v) => v as i64,
        Err(m) => {
            report(m, libc::EINVAL);
            -1
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_parse_bool(s: *const c_char) -> c_int {
    match crate::params::parse_bool(arg(s)) {
        Ok(b) => b as c_int,
        Err(m) => {
            report(m, libc::EINVAL);
            -1
        }
    }
}

/// nbdkit_parse_probability (nbdkit 1.36): "N%", "N/M" or a fraction.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_parse_probability(
    what: *const c_char,
    s: *const c_char,
    r: *mut f64,
) -> c_int {
    match crate::params::parse_probability(arg(s)) {
        Ok(p) => {
            if !r.is_null() {
                *r = p;
            }
            0
        }
        Err(m) => {
            report(format!("{}: {m}", arg(what)), libc::EINVAL);
            -1
        }
    }
}

/// nbdkit's integer parsing: strtoll/strtoull in base 0 (so 0x and
/// leading-0 octal work), the whole string a number, within range.
unsafe fn parse_signed(what: *const c_char, s: *const c_char, min: i64, max: i64) -> Option<i64> {
    let (w, text) = (arg(what), arg(s));
    let mut end: *mut c_char = std::ptr::null_mut();
    set_errno(0);
    let v = libc::strtoll(s, &mut end, 0);
    let e = std::io::Error::last_os_error();
    number_checks(w, text, s, end, e)?;
    if v < min || v > max {
        report(
            format!("{w}: could not parse number: \"{text}\": Numerical result out of range"),
            libc::ERANGE,
        );
        return None;
    }
    Some(v)
}

unsafe fn parse_unsigned(what: *const c_char, s: *const c_char, max: u64) -> Option<u64> {
    let (w, text) = (arg(what), arg(s));
    if text.trim_start().starts_with('-') {
        report(
            format!("{w}: negative numbers are not allowed"),
            libc::ERANGE,
        );
        return None;
    }
    let mut end: *mut c_char = std::ptr::null_mut();
    set_errno(0);
    let v = libc::strtoull(s, &mut end, 0);
    let e = std::io::Error::last_os_error();
    number_checks(w, text, s, end, e)?;
    if v > max {
        report(
            format!("{w}: could not parse number: \"{text}\": Numerical result out of range"),
            libc::ERANGE,
        );
        return None;
    }
    Some(v)
}

/// The checks after strtoll/strtoull, in nbdkit's words.
unsafe fn number_checks(
    w: &str,
    text: &str,
    s: *const c_char,
    end: *mut c_char,
    e: std::io::Error,
) -> Option<()> {
    let errno = e.raw_os_error().unwrap_or(0);
    if errno != 0 {
        report(
            format!("{w}: could not parse number: \"{text}\": {e}"),
            errno,
        );
        return None;
    }
    if std::ptr::eq(end, s) {
        report(
            format!("{w}: empty string where we expected a number"),
            libc::EINVAL,
        );
        return None;
    }
    if *end != 0 {
        report(
            format!("{w}: could not parse number: \"{text}\": trailing garbage"),
            libc::EINVAL,
        );
        return None;
    }
    Some(())
}

macro_rules! signed_parser {
    ($name:ident, $t:ty) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(what: *const c_char, s: *const c_char, r: *mut $t) -> c_int {
            match parse_signed(what, s, <$t>::MIN as i64, <$t>::MAX as i64) {
                Some(v) => {
                    if !r.is_null() {
                        *r = v as $t;
                    }
                    0
                }
                None => -1,
            }
        }
    };
}

macro_rules! unsigned_parser {
    ($name:ident, $t:ty) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(what: *const c_char, s: *const c_char, r: *mut $t) -> c_int {
            match parse_unsigned(what, s, <$t>::MAX as u64) {
                Some(v) => {
                    if !r.is_null() {
                        *r = v as $t;
                    }
                    0
                }
                None => -1,
            }
        }
    };
}

signed_parser!(nbdkit_parse_int, c_int);
signed_parser!(nbdkit_parse_int8_t, i8);
signed_parser!(nbdkit_parse_int16_t, i16);
signed_parser!(nbdkit_parse_int32_t, i32);
signed_parser!(nbdkit_parse_int64_t, i64);
unsigned_parser!(nbdkit_parse_unsigned, c_uint);
unsigned_parser!(nbdkit_parse_uint8_t, u8);
unsigned_parser!(nbdkit_parse_uint16_t, u16);
unsigned_parser!(nbdkit_parse_uint32_t, u32);
unsigned_parser!(nbdkit_parse_uint64_t, u64);

// ---- paths and passwords ------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nbdkit_absolute_path(path: *const c_char) -> *mut c_char {
    if path.is_null() || *path == 0 {
        report(
            "cannot convert null or empty path to an absolute path",
            libc::EINVAL,
        );
        return std::ptr::null_mut();
    }
    let p = CStr::from_ptr(path).to_bytes();
    if p[0] == b'/' {
        return malloc_string(p);
    }
    match std::env::current_dir() {
        Ok(d) => {
            use std::os::unix::ffi::OsStrExt;
            let mut full = d.as_os_str().as_bytes().to_vec();
            full.push(b'/');
            full.extend_from_slice(p);
            malloc_string(&full)
        }
        Err(e) => {
            report(
                format!("getcwd: {e}"),
                e.raw_os_error().unwrap_or(libc::EIO),
            );
            std::ptr::null_mut()
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_realpath(path: *const c_char) -> *mut c_char {
    if path.is_null() || *path == 0 {
        report("cannot resolve a null or empty path", libc::EINVAL);
        return std::ptr::null_mut();
    }
    let r = libc::realpath(path, std::ptr::null_mut());
    if r.is_null() {
        let e = std::io::Error::last_os_error();
        report(
            format!("realpath: {}: {e}", arg(path)),
            e.raw_os_error().unwrap_or(libc::EIO),
        );
    }
    r
}

/// Reads all of `fd` (then closes it): the password is its first line.
fn password_from_fd(fd: c_int) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::io::FromRawFd;
    // SAFETY: the caller hands the descriptor over.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    if v.last() == Some(&b'\n') {
        v.pop();
    }
    Ok(v)
}

/// Prompts on the terminal with echo off and reads one line.
fn password_from_tty() -> std::io::Result<Vec<u8>> {
    use std::io::{BufRead, Write};
    print!("password: ");
    std::io::stdout().flush()?;
    // SAFETY: termios calls on fd 0 with a valid struct.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        let ok = libc::tcgetattr(0, &mut t) == 0;
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        if ok {
            libc::tcsetattr(0, libc::TCSAFLUSH, &t);
        }
        ok.then_some(saved)
    };
    let mut line = Vec::new();
    let r = std::io::stdin().lock().read_until(b'\n', &mut line);
    if let Some(t) = saved {
        // SAFETY: as above, restoring what was there.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &t) };
        println!();
    }
    r?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

/// `-` asks on the terminal, `-FD` reads descriptor FD, `+FILE` reads a
/// file, anything else is the password itself.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_read_password(
    value: *const c_char,
    password: *mut *mut c_char,
) -> c_int {
    if password.is_null() {
        return -1;
    }
    *password = std::ptr::null_mut();
    let v = if value.is_null() {
        &[][..]
    } else {
        CStr::from_ptr(value).to_bytes()
    };
    let got = match v {
        b"-" => {
            if !STDIO_SAFE.load(Ordering::SeqCst) {
                report("stdin is not available for reading password", libc::EINVAL);
                return -1;
            }
            if libc::isatty(0) == 0 {
                report(
                    "stdin is not a tty, cannot read password interactively",
                    libc::EINVAL,
                );
                return -1;
            }
            password_from_tty().map_err(|e| format!("could not read password from stdin: {e}"))
        }
        [b'-', fd @ ..] => match std::str::from_utf8(fd)
            .ok()
            .and_then(|s| s.parse::<c_int>().ok())
        {
            Some(fd) if fd >= 0 => {
                if fd <= 2 && !STDIO_SAFE.load(Ordering::SeqCst) {
                    report("stdin is not available for reading password", libc::EINVAL);
                    return -1;
                }
                password_from_fd(fd).map_err(|e| format!("reading password from fd {fd}: {e}"))
            }
            _ => Err(format!(
                "password: could not parse file descriptor: {}",
                String::from_utf8_lossy(fd)
            )),
        },
        [b'+', file @ ..] => {
            let name = CString::new(file).unwrap_or_default();
            let fd = libc::open(name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                Err(format!(
                    "open {}: {}",
                    String::from_utf8_lossy(file),
                    std::io::Error::last_os_error()
                ))
            } else {
                password_from_fd(fd).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(file)))
            }
        }
        literal => Ok(literal.to_vec()),
    };
    match got {
        Ok(p) => {
            *password = malloc_string(&p);
            0
        }
        Err(m) => {
            report(m, libc::EIO);
            -1
        }
    }
}

// ---- the current connection ---------------------------------------

fn no_connection(what: &str) {
    report(
        format!("{what}: no connection in this thread"),
        libc::ENOTCONN,
    );
}

#[no_mangle]
pub extern "C" fn nbdkit_export_name() -> *const c_char {
    match context::with_connection(|c| c.map(|c| c.export_name.clone())) {
        Some(name) => context::intern(CString::new(name).unwrap_or_default()),
        None => {
            no_connection("nbdkit_export_name");
            std::ptr::null()
        }
    }
}

#[no_mangle]
pub extern "C" fn nbdkit_is_tls() -> c_int {
    match context::with_connection(|c| c.map(|c| c.tls)) {
        Some(t) => t as c_int,
        None => {
            no_connection("nbdkit_is_tls");
            -1
        }
    }
}

fn current_peer() -> Option<Peer> {
    context::with_connection(|c| c.map(|c| c.peer.clone()))
}

/// Copies `sa` (of `len` bytes) into the caller's buffer as
/// getpeername(2) does: truncated to its size, with the full size back.
unsafe fn copy_sockaddr<T>(sa: &T, addr: *mut libc::sockaddr, addrlen: *mut libc::socklen_t) {
    let len = std::mem::size_of::<T>();
    let n = len.min(*addrlen as usize);
    std::ptr::copy_nonoverlapping(sa as *const T as *const u8, addr as *mut u8, n);
    *addrlen = len as libc::socklen_t;
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_peer_name(
    addr: *mut libc::sockaddr,
    addrlen: *mut libc::socklen_t,
) -> c_int {
    if addr.is_null() || addrlen.is_null() {
        report("nbdkit_peer_name: NULL address", libc::EINVAL);
        return -1;
    }
    match current_peer() {
        None => {
            no_connection("nbdkit_peer_name");
            -1
        }
        Some(Peer::Tcp(std::net::SocketAddr::V4(a))) => {
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            copy_sockaddr(&sa, addr, addrlen);
            0
        }
        Some(Peer::Tcp(std::net::SocketAddr::V6(a))) => {
            let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            sa.sin6_flowinfo = a.flowinfo();
            sa.sin6_scope_id = a.scope_id();
            copy_sockaddr(&sa, addr, addrlen);
            0
        }
        Some(Peer::Unix { .. }) => {
            // An unnamed client socket: the family alone.
            let family = libc::AF_UNIX as libc::sa_family_t;
            copy_sockaddr(&family, addr, addrlen);
            0
        }
        Some(Peer::Vsock { cid, port }) => {
            let mut sa: libc::sockaddr_vm = std::mem::zeroed();
            sa.svm_family = libc::AF_VSOCK as libc::sa_family_t;
            sa.svm_cid = cid;
            sa.svm_port = port;
            copy_sockaddr(&sa, addr, addrlen);
            0
        }
        Some(Peer::Other) => {
            report(
                "getpeername: Socket operation on non-socket",
                libc::ENOTSOCK,
            );
            -1
        }
    }
}

/// The peer's credentials (Unix sockets only), as nbdkit_peer_pid/uid/gid.
fn peer_cred(
    what: &str,
    pick: impl Fn(Option<i32>, Option<u32>, Option<u32>) -> Option<i64>,
) -> i64 {
    match current_peer() {
        None => {
            no_connection(what);
            -1
        }
        Some(Peer::Unix { pid, uid, gid }) => pick(pid, uid, gid).unwrap_or_else(|| {
            report(
                format!("{what}: credentials are not available"),
                libc::ENOTSUP,
            );
            -1
        }),
        Some(_) => {
            report(
                format!("{what}: not supported on this socket"),
                libc::ENOTSUP,
            );
            -1
        }
    }
}

#[no_mangle]
pub extern "C" fn nbdkit_peer_pid() -> i64 {
    peer_cred("nbdkit_peer_pid", |p, _, _| p.map(i64::from))
}
#[no_mangle]
pub extern "C" fn nbdkit_peer_uid() -> i64 {
    peer_cred("nbdkit_peer_uid", |_, u, _| u.map(i64::from))
}
#[no_mangle]
pub extern "C" fn nbdkit_peer_gid() -> i64 {
    peer_cred("nbdkit_peer_gid", |_, _, g| g.map(i64::from))
}

// ---- the server ---------------------------------------------------

#[no_mangle]
pub extern "C" fn nbdkit_shutdown() {
    crate::process::shutdown::request();
}

/// Sleeps; fails with ESHUTDOWN when the server is shutting down or the
/// client of this thread's connection hangs up, as nbdkit's does.
#[no_mangle]
pub extern "C" fn nbdkit_nanosleep(sec: c_uint, nsec: c_uint) -> c_int {
    let total =
        std::time::Duration::new(sec as u64, 0) + std::time::Duration::from_nanos(nsec as u64);
    match crate::hangup::sleep(total) {
        Ok(()) => 0,
        Err(crate::hangup::CutShort::Shutdown) => {
            report("nbdkit_nanosleep: interrupted by shutdown", libc::ESHUTDOWN);
            -1
        }
        Err(crate::hangup::CutShort::HungUp) => {
            report("nbdkit_nanosleep: the client hung up", libc::ESHUTDOWN);
            -1
        }
    }
}

#[no_mangle]
pub extern "C" fn nbdkit_stdio_safe() -> c_int {
    STDIO_SAFE.load(Ordering::SeqCst) as c_int
}

// ---- interned strings ---------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nbdkit_strdup_intern(s: *const c_char) -> *const c_char {
    if s.is_null() {
        report("nbdkit_strdup_intern: no string given", libc::EINVAL);
        return std::ptr::null();
    }
    context::intern(CStr::from_ptr(s).to_owned())
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_strndup_intern(s: *const c_char, n: usize) -> *const c_char {
    if s.is_null() {
        report("nbdkit_strndup_intern: no string given", libc::EINVAL);
        return std::ptr::null();
    }
    let len = libc::strnlen(s, n);
    let bytes = std::slice::from_raw_parts(s as *const u8, len);
    context::intern(CString::new(bytes).unwrap_or_default())
}

// ---- extents lists ------------------------------------------------

#[no_mangle]
pub extern "C" fn nbdkit_extents_new(start: u64, end: u64) -> *mut c_void {
    match ExtentsList::new(start, end) {
        Ok(l) => Box::into_raw(Box::new(l)) as *mut c_void,
        Err(m) => {
            report(m, libc::ERANGE);
            std::ptr::null_mut()
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_extents_free(e: *mut c_void) {
    if !e.is_null() {
        drop(Box::from_raw(e as *mut ExtentsList));
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_extents_count(e: *const c_void) -> usize {
    (*(e as *const ExtentsList)).list.len()
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_get_extent(e: *const c_void, i: usize) -> Extent {
    let x = (&(*(e as *const ExtentsList)).list)[i];
    Extent {
        offset: x.offset,
        length: x.length,
        type_: x.kind,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_add_extent(
    e: *mut c_void,
    offset: u64,
    length: u64,
    kind: u32,
) -> c_int {
    match (*(e as *mut ExtentsList)).add(offset, length, kind) {
        Ok(()) => 0,
        Err(m) => {
            report(m, libc::ERANGE);
            -1
        }
    }
}

// ---- exports lists ------------------------------------------------

#[no_mangle]
pub extern "C" fn nbdkit_exports_new() -> *mut c_void {
    Box::into_raw(Box::<ExportsList>::default()) as *mut c_void
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_exports_free(x: *mut c_void) {
    if !x.is_null() {
        drop(Box::from_raw(x as *mut ExportsList));
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_exports_count(x: *const c_void) -> usize {
    (*(x as *const ExportsList)).list.len()
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_get_export(x: *const c_void, i: usize) -> Export {
    let (n, d) = &(&(*(x as *const ExportsList)).list)[i];
    Export {
        name: n.as_ptr() as *mut c_char,
        description: d
            .as_ref()
            .map_or(std::ptr::null_mut(), |d| d.as_ptr() as *mut c_char),
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_add_export(
    x: *mut c_void,
    name: *const c_char,
    description: *const c_char,
) -> c_int {
    if name.is_null() {
        report("nbdkit_add_export: export name is NULL", libc::EINVAL);
        return -1;
    }
    let d = (!description.is_null()).then(|| CStr::from_ptr(description).to_bytes());
    match (*(x as *mut ExportsList)).add(CStr::from_ptr(name).to_bytes(), d) {
        Ok(()) => 0,
        Err(m) => {
            report(m, libc::ERANGE);
            -1
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn nbdkit_use_default_export(x: *mut c_void) -> c_int {
    (*(x as *mut ExportsList)).use_default = true;
    0
}
