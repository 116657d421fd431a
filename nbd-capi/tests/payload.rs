//! libnbd 1.24's payload controls through the C API, against real
//! servers: LIBNBD_SIZE_PAYLOAD (the largest write the client sends),
//! LIBNBD_STRICT_PAYLOAD (refusing larger ones client-side with ERANGE)
//! and LIBNBD_STRICT_AUTO_FLAG (LIBNBD_CMD_FLAG_PAYLOAD_LEN on the wire as
//! the negotiated headers need it). Debian 12's nbdkit 1.32 gives
//! structured replies only and refuses flags it does not know; our nbdkit
//! gives extended headers, where writes may carry PAYLOAD_LEN.

mod common;

use common::*;
use nbd::*;
use std::ffi::{c_char, c_int, c_void};

const MIB: usize = 1 << 20;

fn has_blocksize_policy() -> bool {
    std::path::Path::new(
        "/usr/lib/x86_64-linux-gnu/nbdkit/filters/nbdkit-blocksize-policy-filter.so",
    )
    .exists()
}

/// `NBDKIT -s --filter=blocksize-policy memory 8M`, advertising
/// `maximum` as the maximum block size (none if 0).
fn memory_with_maximum(nbdkit: &str, maximum: usize) -> Conn {
    let max = format!("blocksize-maximum={maximum}");
    let mut args = vec![nbdkit, "-s", "--exit-with-parent"];
    if maximum > 0 {
        args.push("--filter=blocksize-policy");
    }
    args.extend(["memory", "8M"]);
    if maximum > 0 {
        args.extend(["blocksize-minimum=1", "blocksize-preferred=4096", &max]);
    }
    Conn::command(&args)
}

fn block_size(c: &Conn, size_type: c_int) -> i64 {
    let r = unsafe { nbd_get_block_size(c.0, size_type) };
    assert!(r >= 0, "get_block_size({size_type}): {}", last_error());
    r
}

fn pwrite(c: &Conn, buf: &[u8], flags: u32) -> Result<(), (i32, String)> {
    match unsafe { nbd_pwrite(c.0, buf.as_ptr().cast(), buf.len(), 0, flags) } {
        0 => Ok(()),
        _ => Err((errno(), last_error())),
    }
}

fn read_back(c: &Conn, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let r = unsafe { nbd_pread(c.0, buf.as_mut_ptr().cast(), len, 0, 0) };
    assert_eq!(r, 0, "pread: {}", last_error());
    buf
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8 ^ seed).collect()
}

/// The payload limit follows the server's maximum, within 1..64 MiB, and
/// STRICT_PAYLOAD decides whether a larger write leaves the client.
fn payload_limit_is_enforced(nbdkit: &str) {
    // Without the filter: Debian's memory plugin advertises no maximum,
    // ours 32 MiB; no maximum means the client's own 64 MiB.
    let c = memory_with_maximum(nbdkit, 0);
    let max = block_size(&c, LIBNBD_SIZE_MAXIMUM);
    let want = if max == 0 {
        64 << 20
    } else {
        max.clamp(1 << 20, 64 << 20)
    };
    assert_eq!(block_size(&c, LIBNBD_SIZE_PAYLOAD), want);
    // Under 1 MiB advertised: still 1 MiB.
    let c = memory_with_maximum(nbdkit, 256 * 1024);
    assert_eq!(block_size(&c, LIBNBD_SIZE_MAXIMUM), 256 * 1024);
    assert_eq!(block_size(&c, LIBNBD_SIZE_PAYLOAD), MIB as i64);

    let c = memory_with_maximum(nbdkit, 2 * MIB);
    assert_eq!(block_size(&c, LIBNBD_SIZE_MAXIMUM), 2 * MIB as i64);
    assert_eq!(block_size(&c, LIBNBD_SIZE_PAYLOAD), 2 * MIB as i64);
    let mode = unsafe { nbd_get_strict_mode(c.0) };
    assert_ne!(mode & LIBNBD_STRICT_PAYLOAD, 0, "on by default");
    let fits = pattern(2 * MIB, 1);
    assert_eq!(pwrite(&c, &fits, 0), Ok(()));
    let over = pattern(2 * MIB + 512, 2);
    let (e, msg) = pwrite(&c, &over, 0).unwrap_err();
    assert_eq!(e, libc::ERANGE, "{msg}");
    assert_eq!(read_back(&c, fits.len()), fits, "nothing was sent");
    // Off: the write goes to the server, which (blocksize-policy's
    // default error policy) takes it.
    let r = unsafe { nbd_set_strict_mode(c.0, mode & !LIBNBD_STRICT_PAYLOAD) };
    assert_eq!(r, 0);
    assert_eq!(pwrite(&c, &over, 0), Ok(()));
    assert_eq!(read_back(&c, over.len()), over);
    // The client's 64 MiB limit stays (bounds off: the export is 8M).
    let r =
        unsafe { nbd_set_strict_mode(c.0, mode & !LIBNBD_STRICT_PAYLOAD & !LIBNBD_STRICT_BOUNDS) };
    assert_eq!(r, 0);
    let huge = vec![0u8; (64 << 20) + 1];
    assert_eq!(pwrite(&c, &huge, 0).unwrap_err().0, libc::ERANGE);
}

#[test]
fn debian_nbdkit_payload_limit() {
    if !have_nbdkit() || !has_blocksize_policy() {
        eprintln!("skipped: {NBDKIT} or its blocksize-policy filter missing");
        return;
    }
    payload_limit_is_enforced(NBDKIT);
}

#[test]
fn our_nbdkit_payload_limit() {
    let nbdkit = our_nbdkit();
    payload_limit_is_enforced(nbdkit.to_str().unwrap());
}

#[test]
fn auto_flag_with_structured_replies() {
    if !have_nbdkit() {
        eprintln!("skipped: {NBDKIT} is not installed");
        return;
    }
    let c = Conn::memory("1M");
    unsafe {
        assert_eq!(nbd_get_extended_headers_negotiated(c.0), 0);
        assert_eq!(nbd_get_structured_replies_negotiated(c.0), 1);
    }
    let mode = unsafe { nbd_get_strict_mode(c.0) };
    assert_ne!(mode & LIBNBD_STRICT_AUTO_FLAG, 0, "on by default");
    // On: the caller's PAYLOAD_LEN is dropped, as compact headers need.
    let data = pattern(4096, 3);
    assert_eq!(pwrite(&c, &data, LIBNBD_CMD_FLAG_PAYLOAD_LEN), Ok(()));
    assert_eq!(read_back(&c, data.len()), data);
    // Off: it goes to the server as given, and nbdkit 1.32, which knows
    // no such flag, refuses the write.
    let r = unsafe { nbd_set_strict_mode(c.0, mode & !LIBNBD_STRICT_AUTO_FLAG) };
    assert_eq!(r, 0);
    let other = pattern(4096, 4);
    let (e, msg) = pwrite(&c, &other, LIBNBD_CMD_FLAG_PAYLOAD_LEN).unwrap_err();
    assert_eq!(e, libc::EINVAL, "{msg}");
    assert_eq!(pwrite(&c, &other, 0), Ok(()), "the connection is fine");
    assert_eq!(read_back(&c, other.len()), other);
}

extern "C" fn count_extents(
    user: *mut c_void,
    _metacontext: *const c_char,
    _offset: u64,
    _entries: *mut nbd_extent,
    nr: usize,
    _error: *mut c_int,
) -> c_int {
    unsafe { *(user as *mut usize) += nr };
    0
}

fn filtered_block_status(c: &Conn) -> Result<usize, i32> {
    let mut seen = 0usize;
    let name = cstring("base:allocation");
    let mut list = [name.as_ptr() as *mut c_char, std::ptr::null_mut()];
    let cb = nbd_extent64_callback {
        callback: Some(count_extents),
        user_data: (&mut seen as *mut usize).cast(),
        free: None,
    };
    let r = unsafe { nbd_block_status_filter(c.0, 4096, 0, list.as_mut_ptr(), cb, 0) };
    if r == 0 {
        Ok(seen)
    } else {
        Err(errno())
    }
}

#[test]
fn auto_flag_with_extended_headers() {
    let nbdkit = our_nbdkit();
    let h = unsafe { nbd_create() };
    let c = Conn(h);
    let base = cstring("base:allocation");
    assert_eq!(unsafe { nbd_add_meta_context(h, base.as_ptr()) }, 0);
    let argv: Vec<_> = [nbdkit.to_str().unwrap(), "-s", "memory", "1M"]
        .iter()
        .map(|a| cstring(a))
        .collect();
    let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let r = unsafe { nbd_connect_command(h, ptrs.as_mut_ptr()) };
    assert_eq!(r, 0, "{}", last_error());
    assert_eq!(unsafe { nbd_get_extended_headers_negotiated(h) }, 1);
    // Writes go through with or without the caller's PAYLOAD_LEN, with
    // the flag managed (on) and as given (both valid with extended
    // headers).
    let mode = unsafe { nbd_get_strict_mode(h) };
    for m in [mode, mode & !LIBNBD_STRICT_AUTO_FLAG] {
        assert_eq!(unsafe { nbd_set_strict_mode(h, m) }, 0);
        for (seed, flags) in [(5, 0), (6, LIBNBD_CMD_FLAG_PAYLOAD_LEN)] {
            let data = pattern(8192, seed);
            assert_eq!(pwrite(&c, &data, flags), Ok(()), "mode {m:#x}");
            assert_eq!(read_back(&c, data.len()), data);
        }
    }
    // A filtered block status carries a payload: the managed flag says so
    // even though the caller passed none.
    assert_eq!(unsafe { nbd_set_strict_mode(h, mode) }, 0);
    assert!(filtered_block_status(&c).unwrap() > 0);
    // Left to the caller, no flag means the server answers a plain block
    // status and takes the payload for the start of the next request,
    // which it then cannot parse: that request fails.
    assert_eq!(
        unsafe { nbd_set_strict_mode(h, mode & !LIBNBD_STRICT_AUTO_FLAG) },
        0
    );
    let _ = filtered_block_status(&c);
    let mut buf = vec![0u8; 512];
    let r = unsafe { nbd_pread(h, buf.as_mut_ptr().cast(), 512, 0, 0) };
    assert_eq!(r, -1, "the payload was sent without PAYLOAD_LEN");
}
