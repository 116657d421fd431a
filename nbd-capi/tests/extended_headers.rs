//! Extended headers through the C API (libnbd 1.18's calls) against real
//! servers: qemu-nbd 10 and our nbdkit speak them, Debian 12's nbdkit 1.32
//! does not, and with them turned off in our nbdkit the client must fall
//! back to structured replies. Each test proves which protocol was used
//! with nbd_get_extended_headers_negotiated, then runs a command only that
//! protocol can carry: a zero of more than 4 GiB in one request, and block
//! status with 64-bit extents.

mod common;

use common::*;
use nbd::*;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

const GIB: u64 = 1 << 30;
/// base:allocation's flags of a hole that reads as zeroes.
const HOLE_ZERO: u64 = (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO) as u64;

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nbd-ext-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn handle(request_extended: bool) -> Conn {
    let h = unsafe { nbd_create() };
    assert!(!h.is_null());
    let base = cstring("base:allocation");
    unsafe {
        assert_eq!(nbd_add_meta_context(h, base.as_ptr()), 0);
        assert_eq!(nbd_get_request_extended_headers(h), 1, "on by default");
        assert_eq!(
            nbd_set_request_extended_headers(h, request_extended),
            0,
            "{}",
            last_error()
        );
    }
    Conn(h)
}

fn connect_command(c: &Conn, args: &[&str]) {
    let argv: Vec<CString> = args.iter().map(|a| cstring(a)).collect();
    let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let r = unsafe { nbd_connect_command(c.0, ptrs.as_mut_ptr()) };
    assert_eq!(r, 0, "connect_command {args:?}: {}", last_error());
}

/// qemu-nbd serving `file`, started by socket activation.
fn connect_qemu_nbd(c: &Conn, file: &Path) {
    let argv: Vec<CString> = [
        "qemu-nbd",
        "-f",
        "raw",
        "--discard=unmap",
        file.to_str().unwrap(),
    ]
    .iter()
    .map(|a| cstring(a))
    .collect();
    let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let r = unsafe { nbd_connect_systemd_socket_activation(c.0, ptrs.as_mut_ptr()) };
    assert_eq!(r, 0, "qemu-nbd: {}", last_error());
}

/// What the 64-bit callback saw: (context, offset, extents).
type Seen64 = Vec<(String, u64, Vec<(u64, u64)>)>;

extern "C" fn collect64(
    user: *mut c_void,
    ctx: *const c_char,
    offset: u64,
    entries: *mut nbd_extent,
    n: usize,
    _error: *mut c_int,
) -> c_int {
    let seen = unsafe { &mut *(user as *mut Seen64) };
    let ctx = unsafe { CStr::from_ptr(ctx) }
        .to_string_lossy()
        .into_owned();
    let list = unsafe { std::slice::from_raw_parts(entries, n) };
    seen.push((
        ctx,
        offset,
        list.iter().map(|e| (e.length, e.flags)).collect(),
    ));
    0
}

fn block_status_64(c: &Conn, count: u64, offset: u64) -> Seen64 {
    let mut seen: Seen64 = Vec::new();
    let cb = nbd_extent64_callback {
        callback: Some(collect64),
        user_data: &mut seen as *mut Seen64 as *mut c_void,
        free: None,
    };
    let r = unsafe { nbd_block_status_64(c.0, count, offset, cb, 0) };
    assert_eq!(r, 0, "block_status_64: {}", last_error());
    seen
}

/// What the 32-bit callback saw: the flat (length, flags) array.
extern "C" fn collect32(
    user: *mut c_void,
    _ctx: *const c_char,
    _offset: u64,
    entries: *mut u32,
    n: usize,
    _error: *mut c_int,
) -> c_int {
    let seen = unsafe { &mut *(user as *mut Vec<u32>) };
    seen.extend_from_slice(unsafe { std::slice::from_raw_parts(entries, n) });
    0
}

fn block_status_32(c: &Conn, count: u64, offset: u64) -> Vec<u32> {
    let mut seen: Vec<u32> = Vec::new();
    let cb = nbd_extent_callback {
        callback: Some(collect32),
        user_data: &mut seen as *mut Vec<u32> as *mut c_void,
        free: None,
    };
    let r = unsafe { nbd_block_status(c.0, count, offset, cb, 0) };
    assert_eq!(r, 0, "block_status: {}", last_error());
    seen
}

fn negotiated(c: &Conn) -> (c_int, c_int) {
    unsafe {
        (
            nbd_get_extended_headers_negotiated(c.0),
            nbd_get_structured_replies_negotiated(c.0),
        )
    }
}

/// Writes a pattern at 1 GiB, zeroes 6 GiB from 0 in one request, and
/// checks both the zeroes and the data beyond them.
fn big_zero_round_trip(c: &Conn) {
    let pattern: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 + 1).collect();
    let after = 6 * GIB + 4096;
    unsafe {
        for off in [GIB, after] {
            let r = nbd_pwrite(c.0, pattern.as_ptr().cast(), pattern.len(), off, 0);
            assert_eq!(r, 0, "pwrite: {}", last_error());
        }
        let r = nbd_zero(c.0, 6 * GIB, 0, 0);
        assert_eq!(r, 0, "zero 6 GiB: {}", last_error());
        let mut buf = vec![0xffu8; pattern.len()];
        assert_eq!(
            nbd_pread(c.0, buf.as_mut_ptr().cast(), buf.len(), GIB, 0),
            0
        );
        assert!(buf.iter().all(|&b| b == 0), "zeroed range reads back zero");
        assert_eq!(
            nbd_pread(c.0, buf.as_mut_ptr().cast(), buf.len(), after, 0),
            0
        );
        assert_eq!(buf, pattern, "data past the zeroed range is kept");
    }
}

#[test]
fn our_nbdkit_speaks_extended_headers() {
    let nbdkit = our_nbdkit();
    let c = handle(true);
    connect_command(&c, &[nbdkit.to_str().unwrap(), "-s", "memory", "8G"]);
    assert_eq!(negotiated(&c), (1, 1), "extended headers imply structured");
    big_zero_round_trip(&c);
    // The whole export in one query: the zeroed 6 GiB are one hole,
    // reported as one 64-bit extent, then the data.
    let seen = block_status_64(&c, 8 * GIB, 0);
    assert_eq!(seen.len(), 1);
    let (ctx, off, ext) = &seen[0];
    assert_eq!((ctx.as_str(), *off), ("base:allocation", 0));
    let hole = HOLE_ZERO;
    assert!(ext[0].0 >= 6 * GIB && ext[0].0 <= 6 * GIB + 4096, "{ext:?}");
    assert_eq!(ext[0].1, hole, "{ext:?}");
    assert_eq!(ext[1].1, 0, "{ext:?}");
    // The 32-bit callback gets the same extent cut below 4 GiB, and
    // nothing after it (libnbd's rule).
    let narrow = block_status_32(&c, 8 * GIB, 0);
    assert_eq!(narrow.len(), 2, "{narrow:?}");
    assert_eq!(u64::from(narrow[0]), 4 * GIB - 512);
    assert_eq!(narrow[1], hole as u32);
    // Trim over 4 GiB in one request too.
    assert_eq!(
        unsafe { nbd_trim(c.0, 5 * GIB, GIB, 0) },
        0,
        "{}",
        last_error()
    );
}

#[test]
fn our_nbdkit_without_extended_headers_gives_structured_replies() {
    let nbdkit = our_nbdkit();
    let nbdkit = nbdkit.to_str().unwrap();
    // The environment variable goes through env(1), so no other test's
    // server sees it.
    for (how, argv) in [
        ("--no-eh", vec![nbdkit, "-s", "--no-eh", "memory", "8G"]),
        (
            "env",
            vec![
                "env",
                "NBD_NO_EXTENDED_HEADERS=1",
                nbdkit,
                "-s",
                "memory",
                "8G",
            ],
        ),
    ] {
        let c = handle(true);
        connect_command(&c, &argv);
        assert_eq!(negotiated(&c), (0, 1), "{how}");
        // Over 4 GiB cannot be said without extended headers.
        assert_eq!(unsafe { nbd_zero(c.0, 6 * GIB, 0, 0) }, -1);
        assert_eq!(errno(), libc::ERANGE, "{}", last_error());
        let seen = block_status_64(&c, 4 * GIB - 512, 0);
        assert_eq!(seen[0].2[0].0, 4 * GIB - 512);
    }
}

#[test]
fn client_can_choose_structured_replies() {
    let c = handle(false);
    connect_command(&c, &[our_nbdkit().to_str().unwrap(), "-s", "memory", "1M"]);
    assert_eq!(negotiated(&c), (0, 1));
}

#[test]
fn debian_nbdkit_falls_back_to_structured_replies() {
    if !have_nbdkit() {
        panic!("{NBDKIT} missing: install nbdkit");
    }
    let c = handle(true);
    connect_command(&c, &[NBDKIT, "-s", "--exit-with-parent", "memory", "8G"]);
    assert_eq!(negotiated(&c), (0, 1));
    let pattern = vec![7u8; 4096];
    unsafe {
        assert_eq!(nbd_pwrite(c.0, pattern.as_ptr().cast(), 4096, GIB, 0), 0);
    }
    let seen = block_status_64(&c, 2 * GIB, 0);
    assert_eq!(seen[0].2[0], (GIB, HOLE_ZERO));
}

#[test]
fn option_mode_asks_for_extended_headers() {
    let c = handle(true);
    unsafe { assert_eq!(nbd_set_opt_mode(c.0, true), 0) };
    connect_command(&c, &[our_nbdkit().to_str().unwrap(), "-s", "memory", "1M"]);
    unsafe {
        // Asked for by default before pausing; a second request is a
        // duplicate the server refuses, and the setting stays on.
        assert_eq!(nbd_get_extended_headers_negotiated(c.0), 1);
        assert_eq!(nbd_opt_extended_headers(c.0), 0, "{}", last_error());
        assert_eq!(nbd_get_extended_headers_negotiated(c.0), 1);
        assert_eq!(nbd_opt_go(c.0), 0, "{}", last_error());
    }
    assert_eq!(negotiated(&c), (1, 1));
    let c = handle(false);
    unsafe { assert_eq!(nbd_set_opt_mode(c.0, true), 0) };
    connect_command(&c, &[our_nbdkit().to_str().unwrap(), "-s", "memory", "1M"]);
    unsafe {
        assert_eq!(nbd_get_extended_headers_negotiated(c.0), 0);
        assert_eq!(nbd_opt_extended_headers(c.0), 1, "{}", last_error());
        assert_eq!(nbd_opt_go(c.0), 0, "{}", last_error());
    }
    assert_eq!(negotiated(&c), (1, 1));
}

#[test]
fn qemu_nbd_speaks_extended_headers() {
    let dir = scratch("qemu");
    let file = dir.join("disk.raw");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(8 * GIB)
        .unwrap();
    let c = handle(true);
    connect_qemu_nbd(&c, &file);
    assert_eq!(negotiated(&c), (1, 1));
    big_zero_round_trip(&c);
    let seen = block_status_64(&c, 8 * GIB, 0);
    let (ctx, _, ext) = &seen[0];
    assert_eq!(ctx, "base:allocation");
    // The sparse file's hole up to the data at 6 GiB: more than 4 GiB in
    // one extent, which only BLOCK_STATUS_EXT can carry.
    assert!(ext[0].0 > 4 * GIB, "{ext:?}");
    assert_eq!(
        ext[0].1 & (LIBNBD_STATE_ZERO as u64),
        (LIBNBD_STATE_ZERO as u64)
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

fn block_status_filter(c: &Conn, count: u64, contexts: &[&str]) -> Result<Seen64, i32> {
    let names: Vec<CString> = contexts.iter().map(|n| cstring(n)).collect();
    let mut ptrs: Vec<*mut c_char> = names.iter().map(|n| n.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let mut seen: Seen64 = Vec::new();
    let cb = nbd_extent64_callback {
        callback: Some(collect64),
        user_data: &mut seen as *mut Seen64 as *mut c_void,
        free: None,
    };
    let r = unsafe { nbd_block_status_filter(c.0, count, 0, ptrs.as_mut_ptr(), cb, 0) };
    if r == 0 {
        Ok(seen)
    } else {
        Err(errno())
    }
}

#[test]
fn filtered_block_status_with_qemu_nbd_and_our_nbdkit() {
    // qemu-nbd -A offers qemu:allocation-depth besides base:allocation:
    // the filter picks one of the two.
    let dir = scratch("filter");
    let file = dir.join("disk.raw");
    std::fs::File::create(&file).unwrap().set_len(GIB).unwrap();
    let c = handle(true);
    let depth = cstring("qemu:allocation-depth");
    unsafe { assert_eq!(nbd_add_meta_context(c.0, depth.as_ptr()), 0) };
    let argv: Vec<CString> = ["qemu-nbd", "-A", "-f", "raw", file.to_str().unwrap()]
        .iter()
        .map(|a| cstring(a))
        .collect();
    let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let r = unsafe { nbd_connect_systemd_socket_activation(c.0, ptrs.as_mut_ptr()) };
    assert_eq!(r, 0, "qemu-nbd: {}", last_error());
    assert_eq!(unsafe { nbd_can_block_status_payload(c.0) }, 1);
    let all = block_status_64(&c, GIB, 0);
    assert_eq!(all.len(), 2, "{all:?}");
    let only = block_status_filter(&c, GIB, &["qemu:allocation-depth"]).unwrap();
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0].0, "qemu:allocation-depth");
    let only = block_status_filter(&c, GIB, &["base:allocation"]).unwrap();
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0].0, "base:allocation");
    assert_eq!(
        block_status_filter(&c, GIB, &["base:nonesuch"]),
        Err(libc::EINVAL)
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);

    // Our nbdkit: one context, so the filter can only keep it.
    let c = handle(true);
    connect_command(&c, &[our_nbdkit().to_str().unwrap(), "-s", "memory", "8G"]);
    assert_eq!(unsafe { nbd_can_block_status_payload(c.0) }, 1);
    let only = block_status_filter(&c, 8 * GIB, &["base:allocation"]).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].2, vec![(8 * GIB, HOLE_ZERO)]);

    // Without extended headers there is nothing to filter with.
    let c = handle(false);
    connect_command(&c, &[our_nbdkit().to_str().unwrap(), "-s", "memory", "8G"]);
    assert_eq!(unsafe { nbd_can_block_status_payload(c.0) }, 0);
    assert_eq!(
        block_status_filter(&c, GIB, &["base:allocation"]),
        Err(libc::ENOTSUP)
    );
}

#[test]
fn extended_headers_are_negotiated_again_inside_tls() {
    // Everything said before STARTTLS is forgotten on both sides; the
    // client asks again inside TLS and the server agrees again.
    let dir = scratch("tls");
    let keys = dir.join("keys.psk");
    std::fs::write(&keys, "alice:0123456789abcdef0123456789abcdef\n").unwrap();
    let psk = format!("--tls-psk={}", keys.display());
    let c = handle(true);
    unsafe {
        assert_eq!(nbd_set_tls(c.0, LIBNBD_TLS_REQUIRE), 0);
        let k = cstring(keys.to_str().unwrap());
        assert_eq!(nbd_set_tls_psk_file(c.0, k.as_ptr()), 0);
        let u = cstring("alice");
        assert_eq!(nbd_set_tls_username(c.0, u.as_ptr()), 0);
    }
    let nbdkit = our_nbdkit();
    let argv = [
        nbdkit.to_str().unwrap(),
        "-s",
        "--tls=require",
        psk.as_str(),
        "memory",
        "8G",
    ];
    connect_command(&c, &argv);
    assert_eq!(unsafe { nbd_get_tls_negotiated(c.0) }, 1);
    assert_eq!(negotiated(&c), (1, 1));
    big_zero_round_trip(&c);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

extern "C" fn note_completion(user: *mut c_void, error: *mut c_int) -> c_int {
    let seen = unsafe { &mut *(user as *mut Vec<c_int>) };
    seen.push(unsafe { *error });
    1
}

#[test]
fn aio_forms_of_the_extended_calls() {
    let nbdkit = our_nbdkit();
    // nbd_aio_opt_extended_headers in option mode, with its completion.
    let c = handle(false);
    unsafe { assert_eq!(nbd_set_opt_mode(c.0, true), 0) };
    connect_command(&c, &[nbdkit.to_str().unwrap(), "-s", "memory", "8G"]);
    let mut done: Vec<c_int> = Vec::new();
    let completion = nbd_completion_callback {
        callback: Some(note_completion),
        user_data: &mut done as *mut Vec<c_int> as *mut c_void,
        free: None,
    };
    unsafe {
        assert_eq!(
            nbd_aio_opt_extended_headers(c.0, completion),
            0,
            "{}",
            last_error()
        );
        while done.is_empty() {
            assert_eq!(nbd_poll(c.0, -1), 1, "{}", last_error());
        }
        assert_eq!(done, vec![0]);
        assert_eq!(nbd_get_extended_headers_negotiated(c.0), 1);
        assert_eq!(nbd_opt_go(c.0), 0, "{}", last_error());
    }
    // nbd_aio_block_status_64 and nbd_aio_block_status_filter over 8 GiB.
    let names = [cstring("base:allocation")];
    let mut ptrs: Vec<*mut c_char> = names.iter().map(|n| n.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    for filtered in [false, true] {
        let mut seen: Seen64 = Vec::new();
        let cb = nbd_extent64_callback {
            callback: Some(collect64),
            user_data: &mut seen as *mut Seen64 as *mut c_void,
            free: None,
        };
        let none = nbd_completion_callback {
            callback: None,
            user_data: std::ptr::null_mut(),
            free: None,
        };
        let cookie = unsafe {
            if filtered {
                nbd_aio_block_status_filter(c.0, 8 * GIB, 0, ptrs.as_mut_ptr(), cb, none, 0)
            } else {
                nbd_aio_block_status_64(c.0, 8 * GIB, 0, cb, none, 0)
            }
        };
        assert!(cookie > 0, "{}", last_error());
        while unsafe { nbd_aio_command_completed(c.0, cookie as u64) } == 0 {
            assert_eq!(unsafe { nbd_poll(c.0, -1) }, 1, "{}", last_error());
        }
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].2, vec![(8 * GIB, HOLE_ZERO)], "filtered {filtered}");
    }
}
