//! Option mode's single steps (libnbd 1.16): nbd_opt_structured_reply,
//! nbd_opt_set_meta_context(_queries), nbd_opt_list_meta_context_queries,
//! nbd_set_request_meta_context and their AIO forms, against Debian's
//! nbdkit.

mod common;

use common::*;
use nbd::*;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Mutex;

macro_rules! need_nbdkit {
    () => {
        if !have_nbdkit() {
            eprintln!("skipped: {NBDKIT} is not installed");
            return;
        }
    };
}

/// What the context callback saw, and whether its free ran.
#[derive(Default)]
struct Seen {
    names: Mutex<Vec<String>>,
    freed: Mutex<u32>,
    completed: Mutex<Option<c_int>>,
}

unsafe extern "C" fn on_context(p: *mut c_void, name: *const c_char) -> c_int {
    let seen = &*(p as *const Seen);
    let name = CStr::from_ptr(name).to_string_lossy().into_owned();
    seen.names.lock().unwrap().push(name);
    0
}

unsafe extern "C" fn on_free(p: *mut c_void) {
    *(*(p as *const Seen)).freed.lock().unwrap() += 1;
}

unsafe extern "C" fn on_complete(p: *mut c_void, error: *mut c_int) -> c_int {
    *(*(p as *const Seen)).completed.lock().unwrap() = Some(*error);
    1
}

fn context_cb(seen: &Seen) -> nbd_context_callback {
    nbd_context_callback {
        callback: Some(on_context),
        user_data: seen as *const Seen as *mut c_void,
        free: Some(on_free),
    }
}

fn completion_cb(seen: &Seen) -> nbd_completion_callback {
    nbd_completion_callback {
        callback: Some(on_complete),
        user_data: seen as *const Seen as *mut c_void,
        free: None,
    }
}

/// A NULL-terminated `char **` over `v`.
fn argv(v: &[CString]) -> Vec<*mut c_char> {
    let mut p: Vec<*mut c_char> = v.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    p.push(std::ptr::null_mut());
    p
}

/// A handle in option mode, not asking for structured replies by itself,
/// negotiating with `nbdkit -s memory 1M`.
fn negotiating(request_sr: bool) -> Conn {
    let h = unsafe { nbd_create() };
    assert!(!h.is_null());
    unsafe {
        assert_eq!(nbd_set_opt_mode(h, true), 0);
        assert_eq!(nbd_set_request_structured_replies(h, request_sr), 0);
    }
    let c = Conn(h);
    let args: Vec<CString> = [NBDKIT, "-s", "--exit-with-parent", "memory", "1M"]
        .iter()
        .map(|a| cstring(a))
        .collect();
    let mut p = argv(&args);
    let r = unsafe { nbd_connect_command(h, p.as_mut_ptr()) };
    assert_eq!(r, 0, "{}", last_error());
    unsafe { assert_eq!(nbd_aio_is_negotiating(h), 1) };
    c
}

#[test]
fn structured_reply_then_meta_contexts_by_hand() {
    need_nbdkit!();
    let c = negotiating(false);
    let h = c.0;
    unsafe {
        assert_eq!(nbd_get_structured_replies_negotiated(h), 0);
        // Without structured replies there are no meta contexts.
        let seen = Seen::default();
        assert_eq!(nbd_opt_set_meta_context(h, context_cb(&seen)), -1);
        assert_eq!(errno(), libc::ENOTSUP);
        assert_eq!(
            *seen.freed.lock().unwrap(),
            1,
            "freed once, even on failure"
        );

        assert_eq!(nbd_opt_structured_reply(h), 1, "{}", last_error());
        assert_eq!(nbd_get_structured_replies_negotiated(h), 1);

        // The implicit query list: nbd_add_meta_context's.
        assert_eq!(
            nbd_add_meta_context(h, cstring("base:allocation").as_ptr()),
            0
        );
        let seen = Seen::default();
        assert_eq!(
            nbd_opt_set_meta_context(h, context_cb(&seen)),
            1,
            "{}",
            last_error()
        );
        assert_eq!(*seen.names.lock().unwrap(), vec!["base:allocation"]);
        assert_eq!(*seen.freed.lock().unwrap(), 1);

        // An explicit list: a context nbdkit does not have selects none.
        let q = [cstring("x-nosuch:context")];
        let seen = Seen::default();
        let n = nbd_opt_set_meta_context_queries(h, argv(&q).as_mut_ptr(), context_cb(&seen));
        assert_eq!(n, 0, "{}", last_error());
        assert!(seen.names.lock().unwrap().is_empty());

        // Listing by namespace with an explicit list.
        let q = [cstring("base:")];
        let seen = Seen::default();
        let n = nbd_opt_list_meta_context_queries(h, argv(&q).as_mut_ptr(), context_cb(&seen));
        assert!(n >= 1, "{n}: {}", last_error());
        assert!(seen
            .names
            .lock()
            .unwrap()
            .contains(&"base:allocation".to_string()));

        // An explicit list again, this time of a context nbdkit has.
        let q = [cstring("base:allocation")];
        let seen = Seen::default();
        let n = nbd_opt_set_meta_context_queries(h, argv(&q).as_mut_ptr(), context_cb(&seen));
        assert_eq!(n, 1, "{}", last_error());
        assert_eq!(*seen.names.lock().unwrap(), vec!["base:allocation"]);

        // With request_meta_context off, GO keeps that selection instead of
        // asking again: the handle's own list is now something nbdkit
        // does not have, so asking again would select nothing.
        assert_eq!(nbd_get_request_meta_context(h), 1);
        assert_eq!(nbd_set_request_meta_context(h, false), 0);
        assert_eq!(nbd_get_request_meta_context(h), 0);
        assert_eq!(nbd_clear_meta_contexts(h), 0);
        assert_eq!(
            nbd_add_meta_context(h, cstring("x-nosuch:context").as_ptr()),
            0
        );
        assert_eq!(nbd_opt_go(h), 0, "{}", last_error());
        assert_eq!(
            nbd_can_meta_context(h, cstring("base:allocation").as_ptr()),
            1
        );
        // And the setter is refused once connected.
        assert_eq!(nbd_set_request_meta_context(h, true), -1);
    }
}

/// request_meta_context off, no explicit selection: GO selects nothing
/// even though a context was added; on (the default), it does.
#[test]
fn request_meta_context_controls_go() {
    need_nbdkit!();
    for (request, want) in [(false, 0), (true, 1)] {
        let c = negotiating(true);
        let h = c.0;
        unsafe {
            assert_eq!(
                nbd_add_meta_context(h, cstring("base:allocation").as_ptr()),
                0
            );
            assert_eq!(nbd_set_request_meta_context(h, request), 0);
            assert_eq!(nbd_opt_go(h), 0, "{}", last_error());
            assert_eq!(
                nbd_can_meta_context(h, cstring("base:allocation").as_ptr()),
                want,
                "request_meta_context={request}"
            );
        }
    }
}

/// The AIO forms report through their completion callback.
#[test]
fn aio_forms() {
    need_nbdkit!();
    let c = negotiating(false);
    let h = c.0;
    let run = |what: &str, f: &dyn Fn(&Seen) -> c_int, seen: &Seen| unsafe {
        assert_eq!(f(seen), 0, "{what}: {}", last_error());
        while seen.completed.lock().unwrap().is_none() {
            assert!(nbd_poll(h, 5000) >= 0, "{what}: {}", last_error());
        }
        assert_eq!(nbd_aio_is_negotiating(h), 1, "{what}");
        seen.completed.lock().unwrap().unwrap()
    };
    unsafe {
        let seen = Seen::default();
        let e = run(
            "aio_opt_structured_reply",
            &|s| nbd_aio_opt_structured_reply(h, completion_cb(s)),
            &seen,
        );
        assert_eq!(e, 0);
        assert_eq!(nbd_get_structured_replies_negotiated(h), 1);

        assert_eq!(
            nbd_add_meta_context(h, cstring("base:allocation").as_ptr()),
            0
        );
        let seen = Seen::default();
        let e = run(
            "aio_opt_set_meta_context",
            &|s| nbd_aio_opt_set_meta_context(h, context_cb(s), completion_cb(s)),
            &seen,
        );
        assert_eq!(e, 0);
        assert_eq!(*seen.names.lock().unwrap(), vec!["base:allocation"]);

        let q = [cstring("base:")];
        let seen = Seen::default();
        let e = run(
            "aio_opt_list_meta_context_queries",
            &|s| {
                nbd_aio_opt_list_meta_context_queries(
                    h,
                    argv(&q).as_mut_ptr(),
                    context_cb(s),
                    completion_cb(s),
                )
            },
            &seen,
        );
        assert_eq!(e, 0);
        assert!(!seen.names.lock().unwrap().is_empty());

        let q = [cstring("base:allocation")];
        let seen = Seen::default();
        let e = run(
            "aio_opt_set_meta_context_queries",
            &|s| {
                nbd_aio_opt_set_meta_context_queries(
                    h,
                    argv(&q).as_mut_ptr(),
                    context_cb(s),
                    completion_cb(s),
                )
            },
            &seen,
        );
        assert_eq!(e, 0);
        assert_eq!(*seen.names.lock().unwrap(), vec!["base:allocation"]);

        // nbdkit without TLS configured refuses STARTTLS: the completion
        // says so, and the handle goes on negotiating in plain text.
        let seen = Seen::default();
        let e = run(
            "aio_opt_starttls",
            &|s| nbd_aio_opt_starttls(h, completion_cb(s)),
            &seen,
        );
        assert_ne!(e, 0);
        assert_eq!(nbd_get_tls_negotiated(h), 0);
        // The sync form says false rather than failing.
        assert_eq!(nbd_opt_starttls(h), 0, "{}", last_error());
        assert_eq!(nbd_opt_go(h), 0, "{}", last_error());
        assert_eq!(
            nbd_can_meta_context(h, cstring("base:allocation").as_ptr()),
            1
        );
    }
}
