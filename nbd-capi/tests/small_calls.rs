//! The small calls of libnbd 1.16-1.24: nbd_poll2, nbd_is_uri,
//! nbd_get_subprocess_pid, nbd_supports_vsock, nbd_get_version_extra,
//! nbd_get_handle_size and the socket activation name.

mod common;

use common::*;
use nbd::*;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::time::{Duration, Instant};

fn handle() -> Conn {
    let h = unsafe { nbd_create() };
    assert!(!h.is_null());
    Conn(h)
}

fn pipe() -> (c_int, c_int) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

#[test]
fn poll2_also_wakes_for_the_extra_fd() {
    if !have_nbdkit() {
        eprintln!("skipped: {NBDKIT} is not installed");
        return;
    }
    let c = Conn::memory("1M");
    let h = c.0;
    let (r, w) = pipe();
    unsafe {
        // Connected and idle: nothing arrives, so only the timeout ends it.
        let t = Instant::now();
        assert_eq!(nbd_poll2(h, r, 200), 0, "{}", last_error());
        assert!(t.elapsed() >= Duration::from_millis(150));
        // Another thread makes the pipe readable: poll2 returns with no
        // timeout at all.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(libc::write(w, b"x".as_ptr().cast(), 1), 1);
        });
        assert_eq!(nbd_poll2(h, r, -1), 1, "{}", last_error());
        writer.join().unwrap();
        // -1: just nbd_poll. A read in flight completes through it.
        let mut buf = [1u8; 512];
        let done = nbd_completion_callback {
            callback: None,
            user_data: std::ptr::null_mut(),
            free: None,
        };
        let cookie = nbd_aio_pread(h, buf.as_mut_ptr() as *mut c_void, 512, 0, done, 0);
        assert!(cookie > 0, "{}", last_error());
        while nbd_aio_command_completed(h, cookie as u64) == 0 {
            assert_eq!(nbd_poll2(h, -1, 5000), 1, "{}", last_error());
        }
        assert_eq!(buf, [0u8; 512]);
        // A negative fd other than -1 is a mistake.
        assert_eq!(nbd_poll2(h, -5, 0), -1);
        assert_eq!(errno(), libc::EBADF);
        libc::close(r);
        libc::close(w);
    }
    // Before connecting there is nothing to poll.
    let c = handle();
    unsafe { assert_eq!(nbd_poll2(c.0, -1, 0), -1) };
}

#[test]
fn is_uri_checks_the_scheme() {
    let c = handle();
    let is = |s: &str| unsafe { nbd_is_uri(c.0, cstring(s).as_ptr()) };
    for yes in [
        "nbd://example.com",
        "nbds://example.com:10810/disk",
        "nbd+unix:///?socket=/tmp/sock",
        "NBDS+UNIX:///x?socket=s",
        "nbd+vsock://2",
        "nbd+ssh://host/",
    ] {
        assert_eq!(is(yes), 1, "{yes}");
    }
    for no in [
        "",
        "disk.img",
        "/tmp/nbd://x",
        "http://example.com",
        "nbdx://example.com",
        "nbd",
        "file:nbd://x",
    ] {
        assert_eq!(is(no), 0, "{no}");
    }
    unsafe {
        assert_eq!(nbd_is_uri(c.0, std::ptr::null()), -1);
        assert_eq!(errno(), libc::EFAULT);
    }
}

#[test]
fn subprocess_pid_is_the_commands() {
    if !have_nbdkit() {
        eprintln!("skipped: {NBDKIT} is not installed");
        return;
    }
    let c = handle();
    unsafe {
        assert_eq!(nbd_get_subprocess_pid(c.0), -1);
        assert_eq!(errno(), libc::ESRCH);
    }
    // The command writes its own pid (the shell's $$), then becomes
    // nbdkit with exec, so that pid is the server's.
    let dir = std::env::temp_dir().join(format!("nbd-subpid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("pid");
    let script = format!(
        "echo $$ > {}; exec {NBDKIT} -s --exit-with-parent memory 1M",
        pidfile.display()
    );
    let argv: Vec<_> = ["/bin/sh", "-c", &script]
        .iter()
        .map(|a| cstring(a))
        .collect();
    let mut p: Vec<*mut c_char> = argv.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    p.push(std::ptr::null_mut());
    unsafe {
        assert_eq!(
            nbd_connect_command(c.0, p.as_mut_ptr()),
            0,
            "{}",
            last_error()
        );
        let pid = nbd_get_subprocess_pid(c.0);
        let written: i64 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, written);
        // It is the process nbd_kill_subprocess signals.
        assert_eq!(libc::kill(pid as i32, 0), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn about_this_library() {
    let c = handle();
    unsafe {
        assert_eq!(nbd_supports_vsock(c.0), 1);
        let extra = CStr::from_ptr(nbd_get_version_extra(c.0)).to_str().unwrap();
        assert!(!extra.is_empty(), "names this implementation");
        let idle = nbd_get_handle_size(c.0);
        assert!(idle > 0, "{idle}");
        if have_nbdkit() {
            let conn = Conn::memory("1M");
            let connected = nbd_get_handle_size(conn.0);
            assert!(
                connected > idle,
                "{connected} <= {idle}: the connection counts"
            );
        }
    }
}

#[test]
fn socket_activation_name() {
    let c = handle();
    let h = c.0;
    let get = || unsafe {
        let p = nbd_get_socket_activation_name(h);
        assert!(!p.is_null());
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        libc::free(p.cast());
        s
    };
    assert_eq!(get(), "");
    unsafe {
        assert_eq!(
            nbd_set_socket_activation_name(h, cstring("nbd-0").as_ptr()),
            0
        );
        assert_eq!(get(), "nbd-0");
        // LISTEN_FDNAMES separates names with ':'.
        assert_eq!(
            nbd_set_socket_activation_name(h, cstring("a:b").as_ptr()),
            -1
        );
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(get(), "nbd-0");
        assert_eq!(nbd_set_socket_activation_name(h, cstring("").as_ptr()), 0);
        assert_eq!(get(), "");
    }
}

/// The TLS host name in effect: the one set, else the TCP host the handle
/// connects to, else "".
#[test]
fn tls_hostname_in_effect() {
    let get = |h| unsafe {
        let p = nbd_get_tls_hostname(h);
        assert!(!p.is_null());
        let s = CStr::from_ptr(p).to_string_lossy().into_owned();
        libc::free(p.cast());
        s
    };
    let c = handle();
    assert_eq!(get(c.0), "");
    // Port 1 on the loopback: nothing listens, the connection fails, but
    // the host was chosen.
    unsafe {
        assert_eq!(
            nbd_connect_tcp(c.0, cstring("localhost").as_ptr(), cstring("1").as_ptr()),
            -1
        );
    }
    assert_eq!(get(c.0), "localhost");
    let c = handle();
    unsafe {
        assert_eq!(
            nbd_set_tls_hostname(c.0, cstring("proxied.example").as_ptr()),
            0
        );
        let _ = nbd_connect_tcp(c.0, cstring("localhost").as_ptr(), cstring("1").as_ptr());
    }
    assert_eq!(get(c.0), "proxied.example");
}
