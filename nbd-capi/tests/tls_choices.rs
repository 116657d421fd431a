//! The TLS choices of libnbd 1.16-1.24 against Debian's nbdkit:
//! nbd_opt_starttls in option mode, nbd_set_tls_hostname (the name the
//! server's certificate must carry), nbd_set_tls_priority, and the URI's
//! tls-priority, honoured only after nbd_set_uri_allow_tls_priority.
//! Keys come fresh from scripts/gen-tls-keys.sh, one directory per test.

mod common;

use common::*;
use nbd::*;
use std::ffi::CStr;
use std::os::raw::c_char;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory of test keys, removed on drop.
struct Keys(PathBuf);

impl Keys {
    fn new() -> Option<Keys> {
        if !have_nbdkit() || !Path::new("/usr/bin/certtool").exists() {
            eprintln!("skipped: needs nbdkit and certtool/psktool (gnutls-bin)");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nbd-tls-choices-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gen-tls-keys.sh");
        let st = Command::new("bash").arg(script).arg(&dir).status().unwrap();
        assert!(st.success(), "gen-tls-keys.sh failed");
        Some(Keys(dir))
    }

    fn path(&self, p: &str) -> String {
        self.0.join(p).to_str().unwrap().to_string()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new handle (closed on drop).
fn handle() -> Conn {
    let h = unsafe { nbd_create() };
    assert!(!h.is_null());
    Conn(h)
}

/// nbd_connect_command with `nbdkit -s ARGS memory 1M`.
fn connect_nbdkit(h: *mut nbd_handle, args: &[&str]) -> i32 {
    let mut all = vec![NBDKIT, "-s", "--exit-with-parent"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["memory", "1M"]);
    let argv: Vec<_> = all.iter().map(|a| cstring(a)).collect();
    let mut p: Vec<*mut c_char> = argv.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    p.push(std::ptr::null_mut());
    unsafe { nbd_connect_command(h, p.as_mut_ptr()) }
}

fn take_string(p: *mut c_char) -> String {
    assert!(!p.is_null(), "{}", last_error());
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { libc::free(p.cast()) };
    s
}

fn read_ok(h: *mut nbd_handle) {
    let mut buf = [1u8; 512];
    let r = unsafe { nbd_pread(h, buf.as_mut_ptr().cast(), 512, 0, 0) };
    assert_eq!(r, 0, "{}", last_error());
    assert_eq!(buf, [0u8; 512]);
}

#[test]
fn starttls_by_hand_in_option_mode() {
    let Some(keys) = Keys::new() else { return };
    let psk = format!("--tls-psk={}", keys.path("keys.psk"));
    // TLS left at its default (disabled): only the caller asks for it.
    let c = handle();
    let h = c.0;
    unsafe {
        assert_eq!(nbd_set_opt_mode(h, true), 0);
        assert_eq!(
            nbd_set_tls_psk_file(h, cstring(&keys.path("keys.psk")).as_ptr()),
            0
        );
        assert_eq!(nbd_set_tls_username(h, cstring("alice").as_ptr()), 0);
    }
    assert_eq!(
        connect_nbdkit(h, &["--tls=on", &psk]),
        0,
        "{}",
        last_error()
    );
    unsafe {
        assert_eq!(nbd_get_tls_negotiated(h), 0);
        assert_eq!(nbd_opt_starttls(h), 1, "{}", last_error());
        assert_eq!(nbd_get_tls_negotiated(h), 1);
        // What was negotiated in plain text is forgotten: structured
        // replies are asked for again inside TLS.
        assert_eq!(nbd_get_structured_replies_negotiated(h), 0);
        assert_eq!(nbd_opt_structured_reply(h), 1, "{}", last_error());
        assert_eq!(nbd_opt_go(h), 0, "{}", last_error());
        assert_eq!(nbd_get_tls_negotiated(h), 1);
    }
    read_ok(h);

    // The wrong key: the handshake fails, so nbd_opt_starttls fails
    // (it does not just say "no").
    let c = handle();
    let h = c.0;
    unsafe {
        assert_eq!(nbd_set_opt_mode(h, true), 0);
        assert_eq!(
            nbd_set_tls_psk_file(h, cstring(&keys.path("wrong.psk")).as_ptr()),
            0
        );
        assert_eq!(nbd_set_tls_username(h, cstring("alice").as_ptr()), 0);
    }
    assert_eq!(
        connect_nbdkit(h, &["--tls=on", &psk]),
        0,
        "{}",
        last_error()
    );
    unsafe {
        assert_eq!(nbd_opt_starttls(h), -1);
        assert_eq!(nbd_aio_is_dead(h), 1);
    }
}

/// Connects over nbdkit's stdin (no host name of its own) to a server
/// whose certificate names wrong.example, with `hostname` set, or not.
fn connect_checking_name(keys: &Keys, hostname: Option<&str>) -> (Conn, i32) {
    let c = handle();
    let h = c.0;
    unsafe {
        assert_eq!(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
        assert_eq!(
            nbd_set_tls_certificates(h, cstring(&keys.path("pki")).as_ptr()),
            0
        );
        assert_eq!(take_string(nbd_get_tls_hostname(h)), "");
        if let Some(n) = hostname {
            assert_eq!(nbd_set_tls_hostname(h, cstring(n).as_ptr()), 0);
            assert_eq!(take_string(nbd_get_tls_hostname(h)), n);
        }
    }
    let certs = format!("--tls-certificates={}", keys.path("wrongname"));
    let r = connect_nbdkit(h, &["--tls=require", &certs]);
    (c, r)
}

#[test]
fn tls_hostname_is_what_the_certificate_is_checked_against() {
    let Some(keys) = Keys::new() else { return };
    // No name (a socket, not TCP): nothing to check it against.
    let (c, r) = connect_checking_name(&keys, None);
    assert_eq!(r, 0, "{}", last_error());
    read_ok(c.0);
    // The name on the certificate.
    let (c, r) = connect_checking_name(&keys, Some("wrong.example"));
    assert_eq!(r, 0, "{}", last_error());
    unsafe { assert_eq!(nbd_get_tls_negotiated(c.0), 1) };
    read_ok(c.0);
    // Another name: the certificate does not match it.
    let (_c, r) = connect_checking_name(&keys, Some("localhost"));
    assert_eq!(r, -1);
    // Set once connecting has begun: refused.
    let (c, _) = connect_checking_name(&keys, Some("wrong.example"));
    unsafe {
        assert_eq!(nbd_set_tls_hostname(c.0, cstring("x").as_ptr()), -1);
        assert_eq!(errno(), libc::EINVAL);
    }
}

fn connect_with_priority(keys: &Keys, priority: Option<&str>) -> (Conn, i32) {
    connect_with_priority_logged(keys, priority, None)
}

/// [`connect_with_priority`], the handle's debug messages going to `log`
/// if given (it must outlive the handle).
fn connect_with_priority_logged(
    keys: &Keys,
    priority: Option<&str>,
    log: Option<&DebugLog>,
) -> (Conn, i32) {
    let c = handle();
    let h = c.0;
    if let Some(log) = log {
        // SAFETY: h is live; the caller keeps the log past the handle.
        unsafe { log.attach(h) };
    }
    unsafe {
        assert_eq!(nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
        assert_eq!(
            nbd_set_tls_psk_file(h, cstring(&keys.path("keys.psk")).as_ptr()),
            0
        );
        assert_eq!(nbd_set_tls_username(h, cstring("alice").as_ptr()), 0);
        if let Some(p) = priority {
            assert_eq!(nbd_set_tls_priority(h, cstring(p).as_ptr()), 0);
            assert_eq!(take_string(nbd_get_tls_priority(h)), p);
        }
    }
    let psk = format!("--tls-psk={}", keys.path("keys.psk"));
    let r = connect_nbdkit(h, &["--tls=require", &psk]);
    (c, r)
}

#[test]
fn tls_priority_goes_to_gnutls() {
    let Some(keys) = Keys::new() else { return };
    let c = handle();
    let default = take_string(unsafe { nbd_get_tls_priority(c.0) });
    assert!(default.starts_with("NORMAL"), "{default}");
    // Our default, and one that still allows what nbdkit offers.
    for p in [None, Some("NORMAL:-VERS-TLS1.3")] {
        let (c, r) = connect_with_priority(&keys, p);
        assert_eq!(r, 0, "{p:?}: {}", last_error());
        read_ok(c.0);
    }
    // Not a priority string: connecting fails.
    let (c, r) = connect_with_priority(&keys, Some("NOT-A-PRIORITY"));
    assert_eq!(r, -1);
    assert!(last_error().contains("NOT-A-PRIORITY"), "{}", last_error());
    unsafe { assert_eq!(nbd_aio_is_dead(c.0), 1) };
    // Nothing both sides accept: the handshake fails.
    let (_c, r) = connect_with_priority(&keys, Some("NORMAL:-VERS-ALL"));
    assert_eq!(r, -1);
}

/// The cipher a PSK connection to Debian's nbdkit agreed on, from the
/// debug message that names it once the handshake is over.
fn psk_cipher(keys: &Keys, priority: Option<&str>) -> String {
    let log = DebugLog::default();
    let (c, r) = connect_with_priority_logged(keys, priority, Some(&log));
    assert_eq!(r, 0, "{priority:?}: {}", last_error());
    read_ok(c.0);
    drop(c);
    let msgs = log.messages();
    msgs.iter()
        .find_map(|m| m.strip_prefix("connection is using TLS: "))
        .unwrap_or_else(|| panic!("no TLS message in {msgs:#?}"))
        .to_string()
}

#[test]
fn psk_sessions_prefer_aes_gcm_where_the_cpu_has_it() {
    let Some(keys) = Keys::new() else { return };
    // Our default: AES-128-GCM ahead of ChaCha20-Poly1305 on a CPU with
    // AES instructions (nbd_gnutls::priority), even against nbdkit,
    // because GnuTLS follows the client's order.
    let ours = psk_cipher(&keys, None);
    if nbd_gnutls::priority::cpu_has_fast_aes() {
        assert!(ours.contains("AES-128-GCM"), "{ours}");
    } else {
        assert!(ours.contains("CHACHA20-POLY1305"), "{ours}");
    }
    // The same string set by the user is used as given: GnuTLS's order,
    // as libnbd gets it.
    let given = psk_cipher(&keys, Some("NORMAL:-VERS-SSL3.0"));
    assert!(given.contains("CHACHA20-POLY1305"), "{given}");
}

/// `nbdkit -U SOCKET --tls=require --tls-psk=...`, killed on drop.
struct UnixServer {
    dir: PathBuf,
    pid: i32,
}

impl UnixServer {
    fn start(keys: &Keys) -> UnixServer {
        let dir = keys.0.join("server");
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        // nbdkit forks; its parent returns once the socket is listening.
        let st = Command::new(NBDKIT)
            .arg("-U")
            .arg(dir.join("sock"))
            .arg("-P")
            .arg(&pidfile)
            .arg("--tls=require")
            .arg(format!("--tls-psk={}", keys.path("keys.psk")))
            .args(["memory", "1M"])
            .status()
            .unwrap();
        assert!(st.success());
        // The server (nbdkit's child) writes its pid file itself, maybe
        // after its parent has returned.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let pid = loop {
            let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
            if let Ok(pid) = text.trim().parse() {
                if text.ends_with('\n') {
                    break pid;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no pid in {pidfile:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        UnixServer { dir, pid }
    }

    fn uri(&self, query: &str) -> String {
        format!(
            "nbds+unix:///?socket={}&tls-username=alice{query}",
            self.dir.join("sock").display()
        )
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
    }
}

fn connect_uri(keys: &Keys, uri: &str, allow_priority: bool) -> (Conn, i32) {
    let c = handle();
    let h = c.0;
    unsafe {
        assert_eq!(
            nbd_set_tls_psk_file(h, cstring(&keys.path("keys.psk")).as_ptr()),
            0
        );
        assert_eq!(nbd_set_uri_allow_tls_priority(h, allow_priority), 0);
    }
    let r = unsafe { nbd_connect_uri(h, cstring(uri).as_ptr()) };
    (c, r)
}

#[test]
fn uri_tls_priority_only_when_allowed() {
    let Some(keys) = Keys::new() else { return };
    let server = UnixServer::start(&keys);
    // The plain URI works.
    let (c, r) = connect_uri(&keys, &server.uri(""), false);
    assert_eq!(r, 0, "{}", last_error());
    read_ok(c.0);
    // tls-priority is refused by default, before anything is tried.
    let (_c, r) = connect_uri(&keys, &server.uri("&tls-priority=NORMAL"), false);
    assert_eq!(r, -1);
    assert!(
        last_error().contains("nbd_set_uri_allow_tls_priority"),
        "{}",
        last_error()
    );
    // Allowed: it is used (a bad one makes the connection fail, a good
    // one works and is what the handle reports).
    let (_c, r) = connect_uri(&keys, &server.uri("&tls-priority=NOT-A-PRIORITY"), true);
    assert_eq!(r, -1);
    assert!(last_error().contains("NOT-A-PRIORITY"), "{}", last_error());
    let (c, r) = connect_uri(
        &keys,
        &server.uri("&tls-priority=NORMAL:-VERS-TLS1.3"),
        true,
    );
    assert_eq!(r, 0, "{}", last_error());
    read_ok(c.0);
    assert_eq!(
        take_string(unsafe { nbd_get_tls_priority(c.0) }),
        "NORMAL:-VERS-TLS1.3"
    );
}
