//! What the generated wrappers check before a body runs, as libnbd's
//! generated wrappers do: read buffers zeroed first (pread-initialize),
//! the state, enum values, and the flags each call accepts under the
//! strict mode.

mod common;

use common::*;
use nbd::*;
use std::os::raw::c_void;

macro_rules! need_nbdkit {
    () => {
        if !have_nbdkit() {
            eprintln!("skipped: {NBDKIT} is not installed");
            return;
        }
    };
}

#[test]
fn refused_read_zeroes_the_buffer_when_pread_initialize_is_on() {
    unsafe {
        let h = nbd_create();
        assert_eq!(nbd_get_pread_initialize(h), 1);
        let mut buf = [0xaau8; 512];
        let p = buf.as_mut_ptr().cast::<c_void>();
        // Not connected: ENOTCONN, and the buffer is zeroed all the same.
        assert_eq!(nbd_pread(h, p, 512, 0, 0), -1);
        assert_eq!(errno(), libc::ENOTCONN);
        assert!(last_error().starts_with("nbd_pread: "), "{}", last_error());
        assert!(buf.iter().all(|b| *b == 0));

        buf.fill(0xaa);
        let done = nbd_completion_callback {
            callback: None,
            user_data: std::ptr::null_mut(),
            free: None,
        };
        assert_eq!(nbd_aio_pread(h, p, 512, 0, done, 0), -1);
        assert_eq!(errno(), libc::ENOTCONN);
        assert!(buf.iter().all(|b| *b == 0));

        // Off: the caller's bytes are left as they were.
        assert_eq!(nbd_set_pread_initialize(h, false), 0);
        buf.fill(0xaa);
        assert_eq!(nbd_pread(h, p, 512, 0, 0), -1);
        assert_eq!(errno(), libc::ENOTCONN);
        assert!(buf.iter().all(|b| *b == 0xaa));
        nbd_close(h);
    }
}

#[test]
fn enum_out_of_range_is_einval() {
    unsafe {
        let h = nbd_create();
        assert_eq!(nbd_set_tls(h, 3), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(
            last_error(),
            "nbd_set_tls: tls: invalid value for parameter: 3: Invalid argument"
        );
        assert_eq!(nbd_set_uri_allow_tls(h, -1), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_set_uri_allow_tls(h, LIBNBD_TLS_REQUIRE), 0);
        // The state comes first, as in libnbd.
        assert_eq!(nbd_get_block_size(h, 42), -1);
        assert_eq!(errno(), libc::ENOTCONN);
        nbd_close(h);
    }
}

#[test]
fn block_size_enum_checked_by_the_wrapper() {
    need_nbdkit!();
    let c = Conn::memory("1M");
    unsafe {
        assert_eq!(nbd_get_block_size(c.0, 42), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(
            last_error(),
            "nbd_get_block_size: size_type: invalid value for parameter: 42: Invalid argument"
        );
        assert!(nbd_get_block_size(c.0, LIBNBD_SIZE_MAXIMUM) >= 0);
    }
}

#[test]
fn each_command_accepts_only_its_flags() {
    need_nbdkit!();
    let c = Conn::memory("1M");
    let h = c.0;
    let mut buf = [0u8; 512];
    let p = buf.as_mut_ptr().cast::<c_void>();
    unsafe {
        // libnbd: nbd_pread accepts no flag; DF is nbd_pread_structured's.
        assert_eq!(nbd_pread(h, p, 512, 0, LIBNBD_CMD_FLAG_DF), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(
            last_error(),
            "nbd_pread: flags: invalid value for flag: 0x4: Invalid argument"
        );
        assert_eq!(nbd_pread(h, p, 512, 0, LIBNBD_CMD_FLAG_FUA), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_flush(h, LIBNBD_CMD_FLAG_FUA), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_trim(h, 512, 0, LIBNBD_CMD_FLAG_NO_HOLE), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_pwrite(h, p, 512, 0, LIBNBD_CMD_FLAG_DF), -1);
        assert_eq!(errno(), libc::EINVAL);
        // What each accepts goes through.
        assert_eq!(
            nbd_pwrite(h, p, 512, 0, LIBNBD_CMD_FLAG_FUA),
            0,
            "{}",
            last_error()
        );
        assert_eq!(
            nbd_zero(h, 512, 0, LIBNBD_CMD_FLAG_FUA | LIBNBD_CMD_FLAG_NO_HOLE),
            0,
            "{}",
            last_error()
        );
        assert_eq!(nbd_pread(h, p, 512, 0, 0), 0, "{}", last_error());

        // Without LIBNBD_STRICT_FLAGS the wrapper lets other flags through
        // (the server judges them), except those beyond the wire's 16 bits.
        let strict = nbd_get_strict_mode(h);
        assert_eq!(nbd_set_strict_mode(h, strict & !LIBNBD_STRICT_FLAGS), 0);
        assert_eq!(nbd_pread(h, p, 512, 0, 0x1_0000), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert!(
            last_error().starts_with("nbd_pread: flags: invalid value for flag: 0x10000"),
            "{}",
            last_error()
        );
        assert_eq!(
            nbd_pread(h, p, 512, 0, LIBNBD_CMD_FLAG_FUA),
            0,
            "{}",
            last_error()
        );
    }
}

#[test]
fn other_flag_sets_are_checked_whatever_the_strict_mode() {
    unsafe {
        let h = nbd_create();
        assert_eq!(nbd_set_strict_mode(h, 0), 0);
        assert_eq!(nbd_set_handshake_flags(h, 0x80), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(
            last_error(),
            "nbd_set_handshake_flags: flags: invalid value for flag: 0x80: Invalid argument"
        );
        assert_eq!(nbd_set_uri_allow_transports(h, 0x100), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_set_strict_mode(h, 0x1000), -1);
        assert_eq!(errno(), libc::EINVAL);
        nbd_close(h);
    }
}
