//! AIO bookkeeping and strict mode through the exported functions, against
//! Debian's nbdkit: every free function runs exactly once, in libnbd's
//! order, whatever happens to the command.

mod common;

use common::*;
use nbd::*;
use std::os::raw::{c_int, c_void};
use std::sync::Mutex;

macro_rules! need_nbdkit {
    () => {
        if !have_nbdkit() {
            eprintln!("skipped: {NBDKIT} is not installed");
            return;
        }
    };
}

/// What happened to one callback struct, in order.
#[derive(Default)]
struct Log(Mutex<Vec<&'static str>>);

impl Log {
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

unsafe extern "C" fn on_complete(p: *mut c_void, _error: *mut c_int) -> c_int {
    (*(p as *const Log)).0.lock().unwrap().push("complete");
    1
}

unsafe extern "C" fn free_completion(p: *mut c_void) {
    (*(p as *const Log))
        .0
        .lock()
        .unwrap()
        .push("free-completion");
}

unsafe extern "C" fn on_chunk(
    p: *mut c_void,
    _b: *const c_void,
    _n: usize,
    _o: u64,
    _s: u32,
    _e: *mut c_int,
) -> c_int {
    (*(p as *const Log)).0.lock().unwrap().push("chunk");
    0
}

unsafe extern "C" fn free_chunk(p: *mut c_void) {
    (*(p as *const Log)).0.lock().unwrap().push("free-chunk");
}

fn completion(log: &Log) -> nbd_completion_callback {
    nbd_completion_callback {
        callback: Some(on_complete),
        user_data: log as *const Log as *mut c_void,
        free: Some(free_completion),
    }
}

fn chunk(log: &Log) -> nbd_chunk_callback {
    nbd_chunk_callback {
        callback: Some(on_chunk),
        user_data: log as *const Log as *mut c_void,
        free: Some(free_chunk),
    }
}

fn run_until(h: *mut nbd_handle, mut done: impl FnMut() -> bool) {
    while !done() {
        assert_eq!(unsafe { nbd_poll(h, -1) }, 1, "{}", last_error());
    }
}

#[test]
fn structured_read_callbacks_then_frees_in_order() {
    need_nbdkit!();
    let c = Conn::memory("1M");
    let log = Log::default();
    let mut buf = vec![0u8; 4096];
    let cookie = unsafe {
        nbd_aio_pread_structured(
            c.0,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            chunk(&log),
            completion(&log),
            0,
        )
    };
    assert!(cookie >= 1, "{}", last_error());
    run_until(c.0, || log.0.lock().unwrap().contains(&"free-completion"));
    let events = log.take();
    assert_eq!(
        events.iter().filter(|e| **e == "free-chunk").count(),
        1,
        "{events:?}"
    );
    let pos = |e| events.iter().position(|x| *x == e).unwrap();
    assert!(pos("chunk") < pos("complete"));
    assert!(pos("complete") < pos("free-chunk"));
    assert!(pos("free-chunk") < pos("free-completion"));
    // Auto-retired.
    assert_eq!(unsafe { nbd_aio_command_completed(c.0, cookie as u64) }, 0);
}

#[test]
fn refused_and_closed_commands_free_once() {
    need_nbdkit!();
    let log = Log::default();
    let mut buf = vec![0u8; 512];
    {
        let c = Conn::memory("1M");
        // Out of bounds: refused before sending.
        let r = unsafe {
            nbd_aio_pread_structured(
                c.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                1 << 20,
                chunk(&log),
                completion(&log),
                0,
            )
        };
        assert_eq!(r, -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(log.take(), ["free-chunk", "free-completion"]);
        // In flight when the handle is closed.
        let r = unsafe {
            nbd_aio_pread(
                c.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                completion(&log),
                0,
            )
        };
        assert!(r >= 1);
    }
    let events = log.take();
    assert_eq!(
        events.iter().filter(|e| **e == "free-completion").count(),
        1,
        "{events:?}"
    );
}

#[test]
fn strict_mode_decides_who_refuses() {
    need_nbdkit!();
    let c = Conn::memory("1M");
    let h = c.0;
    let mut buf = vec![0u8; 512];
    unsafe {
        assert_eq!(nbd_get_strict_mode(h), LIBNBD_STRICT_MASK);
        // Strict: refused client-side with EINVAL, the handle is fine.
        assert_eq!(nbd_pread(h, buf.as_mut_ptr().cast(), 512, 1 << 20, 0), -1);
        assert!(last_error().contains("out of bounds"), "{}", last_error());
        // Not strict about bounds: the server refuses it instead.
        assert_eq!(
            nbd_set_strict_mode(h, LIBNBD_STRICT_MASK & !LIBNBD_STRICT_BOUNDS),
            0
        );
        assert_eq!(nbd_pread(h, buf.as_mut_ptr().cast(), 512, 1 << 20, 0), -1);
        assert!(!last_error().contains("out of bounds"), "{}", last_error());
        assert_eq!(nbd_aio_is_ready(h), 1);
        // Zero-length reads: refused only in strict mode.
        assert_eq!(nbd_pread(h, buf.as_mut_ptr().cast(), 0, 0, 0), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_set_strict_mode(h, 0), 0);
        assert_eq!(nbd_get_strict_mode(h), 0);
        // Unknown flags are refused without STRICT_FLAGS only by the server.
        assert_eq!(nbd_set_strict_mode(h, 0x80), -1);
        assert_eq!(errno(), libc::EINVAL);
        assert_eq!(nbd_pread(h, buf.as_mut_ptr().cast(), 512, 0, 0), 0);
    }
}

#[test]
fn pread_initialize_zeroes_before_checking() {
    need_nbdkit!();
    let c = Conn::memory("1M");
    let mut buf = vec![0xffu8; 512];
    unsafe {
        assert_eq!(nbd_get_pread_initialize(c.0), 1);
        assert_eq!(nbd_pread(c.0, buf.as_mut_ptr().cast(), 512, 1 << 20, 0), -1);
        assert!(buf.iter().all(|b| *b == 0));
        buf.fill(0xff);
        assert_eq!(nbd_set_pread_initialize(c.0, false), 0);
        assert_eq!(nbd_pread(c.0, buf.as_mut_ptr().cast(), 512, 1 << 20, 0), -1);
        assert!(buf.iter().all(|b| *b == 0xff));
    }
}
