//! Helpers for the integration tests: they call the exported C functions
//! directly, as a C program would.
#![allow(dead_code)]

use nbd::*;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

pub const NBDKIT: &str = "/usr/bin/nbdkit";

pub fn have_nbdkit() -> bool {
    Path::new(NBDKIT).exists()
}

pub fn last_error() -> String {
    let p = unsafe { nbd_get_error() };
    if p.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub fn errno() -> i32 {
    unsafe { nbd_get_errno() }
}

/// A handle connected to `nbdkit -s ARGS...` through nbd_connect_command.
pub struct Conn(pub *mut nbd_handle);

impl Conn {
    pub fn command(args: &[&str]) -> Conn {
        let h = unsafe { nbd_create() };
        assert!(!h.is_null());
        let c = Conn(h);
        let argv: Vec<CString> = args.iter().map(|a| CString::new(*a).unwrap()).collect();
        let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr() as *mut c_char).collect();
        ptrs.push(std::ptr::null_mut());
        let r = unsafe { nbd_connect_command(h, ptrs.as_mut_ptr()) };
        assert_eq!(r, 0, "connect_command: {}", last_error());
        c
    }

    /// `nbdkit -s --exit-with-parent memory SIZE`.
    pub fn memory(size: &str) -> Conn {
        Conn::command(&[NBDKIT, "-s", "--exit-with-parent", "memory", size])
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        unsafe { nbd_close(self.0) };
    }
}

/// Debian's `nbdkit -f --exit-with-parent -U SOCK memory 1M`, once its
/// socket is there (or after 5 s; the caller's connect then says why).
pub fn nbdkit_memory_on(sock: &Path) -> Child {
    let server = Command::new(NBDKIT)
        .args(["-f", "--exit-with-parent", "-U"])
        .arg(sock)
        .args(["memory", "1M"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    server
}

pub fn cstring(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Our nbdkit: $OUR_NBDKIT (as `make check` sets it), else the
/// workspace's debug build, built first if missing (this test belongs to
/// nbd-capi, so cargo does not build it for us).
pub fn our_nbdkit() -> PathBuf {
    if let Some(p) = std::env::var_os("OUR_NBDKIT") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/debug/nbdkit");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "nbd-server-bin", "--bin", "nbdkit"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(ok.success(), "building our nbdkit failed");
    }
    bin
}

/// The debug messages a handle sent to its callback, as (context, message).
#[derive(Default)]
pub struct DebugLog(pub Mutex<Vec<(String, String)>>);

impl DebugLog {
    /// Turns debugging on for `h`, its messages to this log.
    ///
    /// # Safety
    /// `h` is a live handle, and the log outlives it.
    pub unsafe fn attach(&self, h: *mut nbd_handle) {
        assert_eq!(unsafe { nbd_set_debug(h, true) }, 0);
        let cb = nbd_debug_callback {
            callback: Some(on_debug),
            user_data: self as *const DebugLog as *mut c_void,
            free: None,
        };
        assert_eq!(unsafe { nbd_set_debug_callback(h, cb) }, 0);
    }

    /// The messages so far.
    pub fn messages(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }
}

unsafe extern "C" fn on_debug(p: *mut c_void, context: *const c_char, msg: *const c_char) -> c_int {
    let s = |p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    (*(p as *const DebugLog))
        .0
        .lock()
        .unwrap()
        .push((s(context), s(msg)));
    0
}
