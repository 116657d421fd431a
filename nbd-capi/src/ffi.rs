//! Every pointer that comes from C passes through here: NULL checks (EFAULT,
//! as libnbd(3) promises, even where libnbd 1.14.2 itself crashes), C
//! strings, string lists and caller buffers. No other module dereferences a
//! pointer from C.

use crate::errors::{err, Error};
use crate::handle::nbd_handle;
use std::ffi::CStr;
use std::os::raw::{c_char, c_void};

fn null(what: &str) -> Error {
    err(libc::EFAULT, format!("{what} cannot be NULL"))
}

/// A slice longer than isize::MAX bytes cannot exist, so making one from
/// the caller's count would be undefined behaviour before any other check
/// ran. No export is that large (sizes stop at 2^63-1), so such a count is
/// out of bounds: EINVAL, the answer libnbd's bounds check (which comes
/// first) gives.
fn check_count(count: usize) -> Result<(), Error> {
    if count > isize::MAX as usize {
        return Err(err(libc::EINVAL, "request out of bounds"));
    }
    Ok(())
}

/// The handle behind `h`.
///
/// # Safety
/// `h` is NULL or a pointer nbd_create returned and nbd_close has not freed.
pub unsafe fn handle<'a>(h: *mut nbd_handle) -> Result<&'a nbd_handle, Error> {
    if crate::handle::held_by_this_thread(h) {
        // Inside one of this handle's callbacks: its lock is held by this
        // very thread. libnbd would deadlock; we refuse.
        return Err(err(
            libc::EDEADLK,
            "cannot call libnbd on a handle from inside its own callback",
        ));
    }
    // SAFETY: per the contract above.
    unsafe { h.as_ref() }.ok_or_else(|| null("handle"))
}

/// Takes back ownership of a handle to free it.
///
/// # Safety
/// `h` is non-NULL, came from [`into_raw`] and is not used again.
pub unsafe fn from_raw(h: *mut nbd_handle) -> Box<nbd_handle> {
    // SAFETY: per the contract above.
    unsafe { Box::from_raw(h) }
}

/// Hands a new handle to C.
pub fn into_raw(h: Box<nbd_handle>) -> *mut nbd_handle {
    Box::into_raw(h)
}

/// A C string argument.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string that outlives `'a`.
pub unsafe fn cstr<'a>(s: *const c_char, what: &str) -> Result<&'a CStr, Error> {
    if s.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    Ok(unsafe { CStr::from_ptr(s) })
}

/// A NULL-terminated list of C strings (argv).
///
/// # Safety
/// `list` is NULL or points to an array of string pointers ending with NULL,
/// each valid for `'a`.
pub unsafe fn string_list<'a>(list: *mut *mut c_char, what: &str) -> Result<Vec<&'a CStr>, Error> {
    if list.is_null() {
        return Err(null(what));
    }
    let mut v = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: the array is NULL-terminated, and we stop at the NULL.
        let p = unsafe { *list.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: each element is a NUL-terminated string.
        v.push(unsafe { CStr::from_ptr(p) });
        i += 1;
    }
    Ok(v)
}

/// A caller's buffer to send from.
///
/// # Safety
/// `buf` is NULL or readable for `count` bytes during `'a`.
pub unsafe fn bytes_in<'a>(
    buf: *const c_void,
    count: usize,
    what: &str,
) -> Result<&'a [u8], Error> {
    if buf.is_null() {
        return Err(null(what));
    }
    check_count(count)?;
    // SAFETY: non-NULL, readable for count bytes per the contract, and
    // count fits a slice (checked above).
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), count) })
}

/// A caller's buffer to receive into.
///
/// # Safety
/// `buf` is NULL or writable for `count` bytes during `'a`, and nothing
/// else accesses it meanwhile.
pub unsafe fn bytes_out<'a>(
    buf: *mut c_void,
    count: usize,
    what: &str,
) -> Result<&'a mut [u8], Error> {
    if buf.is_null() {
        return Err(null(what));
    }
    check_count(count)?;
    // SAFETY: non-NULL, writable for count bytes per the contract, and
    // count fits a slice (checked above).
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), count) })
}

/// A socket address argument: the pointer (checked non-NULL) and length.
pub fn sockaddr(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    what: &str,
) -> Result<(*const libc::sockaddr, libc::socklen_t), Error> {
    if addr.is_null() {
        return Err(null(what));
    }
    Ok((addr, len))
}

/// A copy of `s` in memory from malloc(3), which the C caller frees with
/// free(3). NULL (and ENOMEM) if malloc fails.
pub fn malloc_cstring(s: &CStr) -> Result<*mut c_char, Error> {
    let bytes = s.to_bytes_with_nul();
    // SAFETY: malloc of a non-zero size; the result is checked.
    let p = unsafe { libc::malloc(bytes.len()) }.cast::<u8>();
    if p.is_null() {
        return Err(err(libc::ENOMEM, "malloc"));
    }
    // SAFETY: p is writable for bytes.len() bytes and does not overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    Ok(p.cast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn nulls_are_efault() {
        unsafe {
            assert_eq!(
                handle(std::ptr::null_mut()).err().unwrap().errno,
                libc::EFAULT
            );
            let e = cstr(std::ptr::null(), "unixsocket").unwrap_err();
            assert_eq!(e.errno, libc::EFAULT);
            assert_eq!(e.message, "unixsocket cannot be NULL");
            assert!(string_list(std::ptr::null_mut(), "argv").is_err());
            assert!(bytes_in(std::ptr::null(), 1, "buf").is_err());
            assert!(bytes_out(std::ptr::null_mut(), 0, "buf").is_err());
            // A count no slice can have is refused before one is made.
            let mut b = [0u8; 1];
            let e = bytes_out(b.as_mut_ptr().cast(), usize::MAX, "buf").unwrap_err();
            assert_eq!(e.errno, libc::EINVAL);
            assert!(bytes_in(b.as_ptr().cast(), usize::MAX, "buf").is_err());
        }
    }

    #[test]
    fn lists_and_buffers() {
        let a = CString::new("nbdkit").unwrap();
        let b = CString::new("-s").unwrap();
        let mut argv = [
            a.as_ptr() as *mut c_char,
            b.as_ptr() as *mut c_char,
            std::ptr::null_mut(),
        ];
        let v = unsafe { string_list(argv.as_mut_ptr(), "argv") }.unwrap();
        assert_eq!(v, vec![a.as_c_str(), b.as_c_str()]);
        let mut data = [1u8, 2, 3];
        let s = unsafe { bytes_out(data.as_mut_ptr().cast(), 3, "buf") }.unwrap();
        s[0] = 9;
        assert_eq!(data, [9, 2, 3]);
        let p = malloc_cstring(&a).unwrap();
        assert_eq!(unsafe { CStr::from_ptr(p) }, a.as_c_str());
        unsafe { libc::free(p.cast()) };
    }
}
