//! `--selinux-label`: the SELinux label of the listening sockets, set
//! with setsockcreatecon_raw(3) around their creation, as nbdkit does.
//!
//! libselinux is loaded with dlopen(3), so the server does not depend on
//! it; without it the option is refused as by an nbdkit built without
//! SELinux support.

use std::ffi::{c_char, c_int, CString};

type SetSockCreateCon = unsafe extern "C" fn(*const c_char) -> c_int;

fn setsockcreatecon_raw() -> Option<SetSockCreateCon> {
    // SAFETY: dlopen and dlsym with NUL-terminated names; the symbol has
    // the type libselinux's header gives it. The library stays loaded.
    unsafe {
        let h = libc::dlopen(
            c"libselinux.so.1".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        );
        if h.is_null() {
            return None;
        }
        let p = libc::dlsym(h, c"setsockcreatecon_raw".as_ptr());
        if p.is_null() {
            return None;
        }
        Some(std::mem::transmute::<*mut libc::c_void, SetSockCreateCon>(
            p,
        ))
    }
}

/// Sets the label that sockets created from now on get. The error is
/// the whole message, without the program's name, as nbdkit prints it.
pub fn set(label: &str) -> Result<(), String> {
    let Some(f) = setsockcreatecon_raw() else {
        return Err(
            "nbdkit: --selinux-label option used, but this binary was compiled without SELinux support"
                .into(),
        );
    };
    let l = CString::new(label).map_err(|_| "selinux-label: the label contains a NUL byte")?;
    // SAFETY: a NUL-terminated string, copied by libselinux.
    if unsafe { f(l.as_ptr()) } == -1 {
        return Err(format!(
            "selinux-label: setsockcreatecon_raw: {}",
            nix::errno::Errno::last().desc()
        ));
    }
    Ok(())
}

/// Back to the default label for sockets created later (the accepted
/// connections and anything a plugin opens).
pub fn clear() -> Result<(), String> {
    let Some(f) = setsockcreatecon_raw() else {
        return Ok(());
    };
    // SAFETY: NULL resets the label.
    if unsafe { f(std::ptr::null()) } == -1 {
        return Err(format!(
            "selinux-label: setsockcreatecon_raw(NULL): {}",
            nix::errno::Errno::last().desc()
        ));
    }
    Ok(())
}
