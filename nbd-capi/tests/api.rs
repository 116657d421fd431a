//! Calls that need no server: NULL handles and pointers, state errors,
//! settings, handle names, thread-local errors.

mod common;

use common::*;
use nbd::*;
use std::ffi::CStr;
use std::ptr::{null, null_mut};

#[test]
fn null_handle_is_efault_not_a_crash() {
    let h: *mut nbd_handle = null_mut();
    let mut b = [0u8; 8];
    unsafe {
        assert_eq!(nbd_pread(h, b.as_mut_ptr().cast(), 8, 0, 0), -1);
        assert_eq!(errno(), libc::EFAULT);
        assert_eq!(
            last_error(),
            "nbd_pread: handle cannot be NULL: Bad address"
        );
        assert_eq!(nbd_pwrite(h, b.as_ptr().cast(), 8, 0, 0), -1);
        assert_eq!(nbd_get_size(h), -1);
        assert_eq!(nbd_can_fua(h), -1);
        assert_eq!(nbd_flush(h, 0), -1);
        assert_eq!(nbd_shutdown(h, 0), -1);
        assert!(nbd_get_version(h).is_null());
        assert!(nbd_get_handle_name(h).is_null());
        assert!(nbd_get_export_name(h).is_null());
        assert_eq!(nbd_set_debug(h, true), -1);
        assert_eq!(errno(), libc::EFAULT);
        // A no-op, without even setting an error.
        nbd_close(null_mut());
    }
}

#[test]
fn null_arguments_are_efault() {
    unsafe {
        let h = nbd_create();
        assert_eq!(nbd_connect_unix(h, null()), -1);
        assert_eq!(errno(), libc::EFAULT);
        assert_eq!(
            last_error(),
            "nbd_connect_unix: unixsocket cannot be NULL: Bad address"
        );
        let host = cstring("localhost");
        assert_eq!(nbd_connect_tcp(h, host.as_ptr(), null()), -1);
        assert_eq!(errno(), libc::EFAULT);
        assert_eq!(nbd_connect_command(h, null_mut()), -1);
        assert_eq!(errno(), libc::EFAULT);
        assert_eq!(nbd_set_export_name(h, null()), -1);
        assert_eq!(errno(), libc::EFAULT);
        assert_eq!(nbd_set_handle_name(h, null()), -1);
        assert_eq!(errno(), libc::EFAULT);
        // The handle is still usable: nothing was attempted.
        assert_eq!(nbd_get_size(h), -1);
        assert_eq!(errno(), libc::ENOTCONN);
        nbd_close(h);
    }
}

#[test]
fn before_connecting_is_enotconn() {
    unsafe {
        let h = nbd_create();
        let mut b = [0u8; 8];
        libc_errno(777);
        assert_eq!(nbd_pread(h, b.as_mut_ptr().cast(), 8, 0, 0), -1);
        assert_eq!(errno(), libc::ENOTCONN);
        assert!(
            last_error().starts_with("nbd_pread: invalid state: "),
            "{}",
            last_error()
        );
        assert_eq!(*libc::__errno_location(), 777);
        for r in [
            nbd_get_size(h),
            i64::from(nbd_is_read_only(h)),
            i64::from(nbd_can_flush(h)),
            i64::from(nbd_flush(h, 0)),
            i64::from(nbd_zero(h, 1, 0, 0)),
            i64::from(nbd_trim(h, 1, 0, 0)),
            i64::from(nbd_cache(h, 1, 0, 0)),
            i64::from(nbd_shutdown(h, 0)),
        ] {
            assert_eq!(r, -1);
            assert_eq!(errno(), libc::ENOTCONN);
        }
        assert!(nbd_get_protocol(h).is_null());
        assert_eq!(errno(), libc::ENOTCONN);
        nbd_close(h);
    }
}

#[test]
fn about_the_library() {
    unsafe {
        let h = nbd_create();
        assert_eq!(
            CStr::from_ptr(nbd_get_version(h)).to_str().unwrap(),
            "1.24.4"
        );
        assert_eq!(
            CStr::from_ptr(nbd_get_package_name(h)).to_str().unwrap(),
            "libnbd"
        );
        nbd_close(h);
    }
}

#[test]
fn handle_names_and_settings() {
    unsafe {
        let a = nbd_create();
        let b = nbd_create();
        let name = |h| {
            let p = nbd_get_handle_name(h);
            let s = CStr::from_ptr(p).to_str().unwrap().to_string();
            libc::free(p.cast());
            s
        };
        let (na, nb) = (name(a), name(b));
        let num = |s: &str| s.strip_prefix("nbd").unwrap().parse::<u64>().unwrap();
        assert!(num(&nb) > num(&na), "{na} then {nb}");
        let new = cstring("mine");
        assert_eq!(nbd_set_handle_name(a, new.as_ptr()), 0);
        assert_eq!(name(a), "mine");

        assert_eq!(nbd_set_debug(a, true), 0);
        assert_eq!(nbd_get_debug(a), 1);
        assert_eq!(nbd_set_debug(a, false), 0);
        assert_eq!(nbd_get_debug(a), 0);

        let p = nbd_get_export_name(a);
        assert_eq!(CStr::from_ptr(p).to_bytes(), b"");
        libc::free(p.cast());
        let long = cstring(&"x".repeat(5000));
        assert_eq!(nbd_set_export_name(a, long.as_ptr()), -1);
        assert_eq!(errno(), libc::ENAMETOOLONG);
        nbd_close(a);
        nbd_close(b);
    }
}

#[test]
fn errors_are_per_thread() {
    unsafe {
        let h = nbd_create();
        assert_eq!(nbd_get_size(h), -1);
        assert_eq!(errno(), libc::ENOTCONN);
        let hh = h as usize;
        std::thread::spawn(move || {
            assert!(nbd_get_error().is_null());
            assert_eq!(nbd_get_errno(), 0);
            assert_eq!(nbd_connect_unix(hh as *mut nbd_handle, null()), -1);
            assert_eq!(nbd_get_errno(), libc::EFAULT);
        })
        .join()
        .unwrap();
        assert_eq!(errno(), libc::ENOTCONN);
        assert!(last_error().starts_with("nbd_get_size: "));
        nbd_close(h);
    }
}

#[test]
fn failed_unix_connect_kills_the_handle() {
    unsafe {
        let h = nbd_create();
        let p = cstring("/nonexistent/socket");
        assert_eq!(nbd_connect_unix(h, p.as_ptr()), -1);
        assert_eq!(errno(), libc::ENOENT);
        assert_eq!(
            last_error(),
            "nbd_connect_unix: connect: No such file or directory"
        );
        assert_eq!(nbd_connect_unix(h, p.as_ptr()), -1);
        assert_eq!(errno(), libc::EINVAL);
        nbd_close(h);
    }
}

fn libc_errno(v: i32) {
    unsafe { *libc::__errno_location() = v };
}
