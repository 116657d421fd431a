//! The C API against Debian's nbdkit, through the exported functions.

mod common;

use common::*;
use nbd::*;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};

const MIB: u64 = 1024 * 1024;

macro_rules! need_nbdkit {
    () => {
        if !have_nbdkit() {
            eprintln!("skipped: {NBDKIT} is not installed");
            return;
        }
    };
}

#[test]
fn pattern_round_trip() {
    need_nbdkit!();
    let c = Conn::memory("64M");
    let h = c.0;
    unsafe {
        assert_eq!(nbd_get_size(h), 64 * MIB as i64);
        assert_eq!(nbd_is_read_only(h), 0);
        assert_eq!(nbd_can_flush(h), 1);
        assert_eq!(nbd_can_trim(h), 1);
        assert_eq!(nbd_can_zero(h), 1);
        assert_eq!(nbd_can_multi_conn(h), 1);
        let proto = CStr::from_ptr(nbd_get_protocol(h));
        assert_eq!(proto.to_str().unwrap(), "newstyle-fixed");
        let len = 4 * MIB as usize;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        assert_eq!(
            nbd_pwrite(h, data.as_ptr().cast(), len, MIB, 0),
            0,
            "{}",
            last_error()
        );
        let mut back = vec![0u8; len];
        assert_eq!(
            nbd_pread(h, back.as_mut_ptr().cast(), len, MIB, 0),
            0,
            "{}",
            last_error()
        );
        assert!(back == data);
        // Small reads at odd offsets.
        let mut small = [0u8; 17];
        assert_eq!(nbd_pread(h, small.as_mut_ptr().cast(), 17, MIB + 5, 0), 0);
        assert_eq!(&small[..], &data[5..22]);
        assert_eq!(nbd_flush(h, 0), 0, "{}", last_error());
        if nbd_can_fua(h) == 1 {
            assert_eq!(
                nbd_pwrite(h, data.as_ptr().cast(), 512, 0, LIBNBD_CMD_FLAG_FUA),
                0
            );
        }
        assert_eq!(nbd_zero(h, 4096, MIB, 0), 0, "{}", last_error());
        assert_eq!(nbd_trim(h, 4096, MIB + 4096, 0), 0, "{}", last_error());
        assert_eq!(nbd_pread(h, back.as_mut_ptr().cast(), 8192, MIB, 0), 0);
        assert!(back[..8192].iter().all(|b| *b == 0));
        assert_eq!(nbd_shutdown(h, 0), 0, "{}", last_error());
        // The size is still known after shutdown.
        assert_eq!(nbd_get_size(h), 64 * MIB as i64);
    }
}

#[test]
fn errors_and_errnos() {
    need_nbdkit!();
    let c = Conn::memory("64M");
    let h = c.0;
    let mut buf = vec![0u8; 64 * MIB as usize + 4096];
    let p = buf.as_mut_ptr().cast::<c_void>();
    unsafe {
        libc_errno_set(4242);
        // Past the end: EINVAL for reads, ENOSPC for writes, zeroes, trims.
        assert_eq!(nbd_pread(h, p, 4096, 64 * MIB, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert!(last_error().starts_with("nbd_pread: "), "{}", last_error());
        assert_eq!(nbd_pwrite(h, p, 4096, 64 * MIB - 1, 0), -1);
        assert_eq!(errno(), libc::ENOSPC);
        assert!(last_error().starts_with("nbd_pwrite: "));
        assert_eq!(nbd_zero(h, 2, 64 * MIB - 1, 0), -1);
        assert_eq!(errno(), libc::ENOSPC);
        assert_eq!(nbd_trim(h, 2, 64 * MIB - 1, 0), -1);
        assert_eq!(errno(), libc::ENOSPC);
        // Bounds before size: a 64 MiB + 4 KiB read of a 64 MiB disk.
        assert_eq!(nbd_pread(h, p, 64 * MIB as usize + 4096, 0, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
        // C's errno is left alone.
        assert_eq!(libc_errno_get(), 4242);
        // Unknown flags.
        assert_eq!(nbd_pread(h, p, 512, 0, 0x8000_0000), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_shutdown(h, 1), -1);
        assert_eq!(errno(), libc::EINVAL);
        // A success does not clear the last error.
        assert_eq!(nbd_pread(h, p, 512, 0, 0), 0);
        assert_eq!(errno(), libc::EINVAL);
        // After shutdown: EINVAL, but the size still answers.
        assert_eq!(nbd_shutdown(h, 0), 0);
        assert_eq!(nbd_shutdown(h, 0), 0);
        assert_eq!(nbd_pread(h, p, 512, 0, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_flush(h, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_get_size(h), 64 * MIB as i64);
        // Connecting again is not allowed.
        let s = cstring("/nonexistent");
        assert_eq!(nbd_connect_unix(h, s.as_ptr()), -1);
        assert_eq!(errno(), libc::EINVAL);
    }
}

#[test]
fn over_64m_is_erange_in_bounds() {
    need_nbdkit!();
    let c = Conn::memory("128M");
    let h = c.0;
    let mut buf = vec![0u8; 64 * MIB as usize + 4096];
    unsafe {
        assert_eq!(nbd_pread(h, buf.as_mut_ptr().cast(), buf.len(), 0, 0), -1);
        assert_eq!(errno(), libc::ERANGE);
        assert_eq!(nbd_pwrite(h, buf.as_ptr().cast(), buf.len(), 0, 0), -1);
        assert_eq!(errno(), libc::ERANGE);
    }
}

#[test]
fn read_only_export() {
    need_nbdkit!();
    let c = Conn::command(&[NBDKIT, "-s", "--exit-with-parent", "-r", "memory", "1M"]);
    let h = c.0;
    let buf = [0u8; 512];
    unsafe {
        assert_eq!(nbd_is_read_only(h), 1);
        assert_eq!(nbd_pwrite(h, buf.as_ptr().cast(), 512, 0, 0), -1);
        assert_eq!(errno(), libc::EPERM);
    }
}

#[test]
fn unix_socket_and_export_name() {
    need_nbdkit!();
    let dir = std::env::temp_dir().join(format!("nbd-capi-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("sock");
    let pidfile = dir.join("pid");
    let mut server = std::process::Command::new(NBDKIT)
        .args(["-f", "-U"])
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(["memory", "1M"])
        .spawn()
        .unwrap();
    assert!(wait_for(&pidfile), "nbdkit did not start");
    unsafe {
        let h = nbd_create();
        let name = cstring("foo");
        assert_eq!(nbd_set_export_name(h, name.as_ptr()), 0);
        let got = nbd_get_export_name(h);
        assert_eq!(CStr::from_ptr(got).to_str().unwrap(), "foo");
        libc::free(got.cast());
        let path = cstring(sock.to_str().unwrap());
        assert_eq!(nbd_connect_unix(h, path.as_ptr()), 0, "{}", last_error());
        assert_eq!(nbd_get_size(h), MIB as i64);
        // The export name can no longer change.
        assert_eq!(nbd_set_export_name(h, name.as_ptr()), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_shutdown(h, 0), 0);
        nbd_close(h);
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits up to 10 s for nbdkit to write its pidfile (it does once it
/// listens).
fn wait_for(path: &std::path::Path) -> bool {
    for _ in 0..1000 {
        if std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[test]
fn tcp() {
    need_nbdkit!();
    // The test binds the port (the system picks it) and hands the listening
    // socket to nbdkit by socket activation, so no other test or process
    // can take the port between choosing it and listening on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut server = socket_activated(&listener, &format!("exec {NBDKIT} -f memory 2M"));
    drop(listener);
    unsafe {
        let h = nbd_create();
        let host = cstring("localhost");
        let p = cstring(&port.to_string());
        assert_eq!(
            nbd_connect_tcp(h, host.as_ptr(), p.as_ptr()),
            0,
            "{}",
            last_error()
        );
        assert_eq!(nbd_get_size(h), 2 * MIB as i64);
        let buf = [0x5au8; 1000];
        let mut back = [0u8; 1000];
        assert_eq!(nbd_pwrite(h, buf.as_ptr().cast(), 1000, 77, 0), 0);
        assert_eq!(nbd_pread(h, back.as_mut_ptr().cast(), 1000, 77, 0), 0);
        assert_eq!(buf, back);
        nbd_close(h);
        // A refused connection.
        let h = nbd_create();
        let bad = cstring("1");
        assert_eq!(nbd_connect_tcp(h, host.as_ptr(), bad.as_ptr()), -1);
        assert_eq!(errno(), libc::ECONNREFUSED);
        assert!(
            last_error().starts_with("nbd_connect_tcp: connect: "),
            "{}",
            last_error()
        );
        nbd_close(h);
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// Runs `sh -c SCRIPT` with `listener` as its fd 3 and LISTEN_FDS=1,
/// LISTEN_PID=its own pid (systemd's socket activation protocol).
fn socket_activated(listener: &std::net::TcpListener, script: &str) -> std::process::Child {
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("LISTEN_PID=$$ {script}"))
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_FDNAMES");
    // SAFETY: dup2 is async-signal-safe; it runs in the child between fork
    // and exec, and fd is open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself would keep close-on-exec set.
                let fl = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

#[test]
fn many_threads_one_handle() {
    need_nbdkit!();
    let c = Conn::memory("16M");
    let h = c.0 as usize;
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                let h = h as *mut nbd_handle;
                let off = u64::from(t) * 4 * MIB;
                for i in 0..200u64 {
                    let data = [t.wrapping_add(i as u8); 4096];
                    let mut back = [0u8; 4096];
                    let o = off + (i % 64) * 4096;
                    unsafe {
                        assert_eq!(nbd_pwrite(h, data.as_ptr().cast(), 4096, o, 0), 0);
                        assert_eq!(nbd_pread(h, back.as_mut_ptr().cast(), 4096, o, 0), 0);
                    }
                    assert_eq!(data, back);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn command_that_fails() {
    unsafe {
        let h = nbd_create();
        let argv = [cstring("/nonexistent/server")];
        let mut ptrs = [argv[0].as_ptr() as *mut _, std::ptr::null_mut()];
        assert_eq!(nbd_connect_command(h, ptrs.as_mut_ptr()), -1);
        assert!(errno() != 0);
        // The handle is dead now.
        let mut b = [0u8; 1];
        assert_eq!(nbd_pread(h, b.as_mut_ptr().cast(), 1, 0, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
        nbd_close(h);
        // Empty argv.
        let h = nbd_create();
        let mut empty = [std::ptr::null_mut()];
        assert_eq!(nbd_connect_command(h, empty.as_mut_ptr()), -1);
        assert_eq!(errno(), libc::EINVAL);
        nbd_close(h);
    }
}

fn libc_errno_set(v: i32) {
    unsafe { *libc::__errno_location() = v };
}

fn libc_errno_get() -> i32 {
    unsafe { *libc::__errno_location() }
}

/// What a socket-activated connection leaves lives in the handle: its
/// URI names the private socket, and closing the handle stops the server
/// and removes the directory.
#[test]
fn socket_activation_state_lives_in_the_handle() {
    need_nbdkit!();
    unsafe {
        let h = nbd_create();
        let argv: Vec<CString> = [NBDKIT, "--exit-with-parent", "memory", "1M"]
            .iter()
            .map(|a| cstring(a))
            .collect();
        let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr() as *mut c_char).collect();
        ptrs.push(std::ptr::null_mut());
        assert_eq!(
            nbd_connect_systemd_socket_activation(h, ptrs.as_mut_ptr()),
            0,
            "{}",
            last_error()
        );
        let uri = nbd_get_uri(h);
        assert!(!uri.is_null(), "{}", last_error());
        let text = CStr::from_ptr(uri).to_str().unwrap().to_owned();
        libc::free(uri.cast());
        let sock = text
            .strip_prefix("nbd+unix:///?socket=")
            .unwrap_or_else(|| panic!("{text}"));
        let dir = std::path::Path::new(sock).parent().unwrap().to_owned();
        assert!(dir.exists());
        assert_eq!(nbd_get_size(h), 1 << 20);
        nbd_close(h);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
