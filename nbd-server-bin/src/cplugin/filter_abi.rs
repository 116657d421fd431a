//! The C structures of a filter written against nbdkit 1.32's
//! `nbdkit-filter.h`: `struct nbdkit_filter` (what `filter_init` returns)
//! and `struct nbdkit_next_ops` (the next layer's operations, which the
//! filter calls through the `nbdkit_next *` it is handed), field by field.
//!
//! Unlike plugins, filters have no ABI guarantee across nbdkit releases:
//! the server checks `_api_version` and that `_version` is its own.

use std::os::raw::{c_char, c_int, c_void};

/// `NBDKIT_FILTER_API_VERSION`.
pub const FILTER_API_VERSION: c_int = 6;

/// `NBDKIT_ZERO_*`: what a layer's `can_zero` answers.
pub const ZERO_NONE: c_int = 0;
pub const ZERO_NATIVE: c_int = 2;

type H = *mut c_void;
/// `nbdkit_next *`: a pointer to the next layer's [`NextOps`].
type N = *mut NextOps;
/// `nbdkit_backend *` and `nbdkit_context *`: opaque to the filter.
type B = *mut c_void;

pub type NextConfig = unsafe extern "C" fn(B, *const c_char, *const c_char) -> c_int;
pub type NextConfigComplete = unsafe extern "C" fn(B) -> c_int;
pub type NextPreconnect = unsafe extern "C" fn(B, c_int) -> c_int;
pub type NextListExports = unsafe extern "C" fn(B, c_int, *mut c_void) -> c_int;
pub type NextDefaultExport = unsafe extern "C" fn(B, c_int) -> *const c_char;
pub type NextOpen = unsafe extern "C" fn(B, c_int, *const c_char) -> c_int;

/// `struct nbdkit_next_ops`. The server's object starts with this struct
/// and carries its own data after it (the header says so: filters use the
/// pointer they are given, never a copy).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NextOps {
    pub prepare: unsafe extern "C" fn(N) -> c_int,
    pub finalize: unsafe extern "C" fn(N) -> c_int,

    pub get_size: unsafe extern "C" fn(N) -> i64,
    pub export_description: unsafe extern "C" fn(N) -> *const c_char,
    pub block_size: unsafe extern "C" fn(N, *mut u32, *mut u32, *mut u32) -> c_int,

    pub can_write: unsafe extern "C" fn(N) -> c_int,
    pub can_flush: unsafe extern "C" fn(N) -> c_int,
    pub is_rotational: unsafe extern "C" fn(N) -> c_int,
    pub can_trim: unsafe extern "C" fn(N) -> c_int,
    pub can_zero: unsafe extern "C" fn(N) -> c_int,
    pub can_fast_zero: unsafe extern "C" fn(N) -> c_int,
    pub can_extents: unsafe extern "C" fn(N) -> c_int,
    pub can_fua: unsafe extern "C" fn(N) -> c_int,
    pub can_multi_conn: unsafe extern "C" fn(N) -> c_int,
    pub can_cache: unsafe extern "C" fn(N) -> c_int,

    pub pread: unsafe extern "C" fn(N, *mut c_void, u32, u64, u32, *mut c_int) -> c_int,
    pub pwrite: unsafe extern "C" fn(N, *const c_void, u32, u64, u32, *mut c_int) -> c_int,
    pub flush: unsafe extern "C" fn(N, u32, *mut c_int) -> c_int,
    pub trim: unsafe extern "C" fn(N, u32, u64, u32, *mut c_int) -> c_int,
    pub zero: unsafe extern "C" fn(N, u32, u64, u32, *mut c_int) -> c_int,
    pub extents: unsafe extern "C" fn(N, u32, u64, u32, *mut c_void, *mut c_int) -> c_int,
    pub cache: unsafe extern "C" fn(N, u32, u64, u32, *mut c_int) -> c_int,
}

/// `struct nbdkit_filter`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FilterStruct {
    pub _api_version: c_int,
    pub _version: *const c_char,

    pub name: *const c_char,
    pub longname: *const c_char,
    pub description: *const c_char,

    pub load: Option<unsafe extern "C" fn()>,
    pub unload: Option<unsafe extern "C" fn()>,

    pub config: Option<unsafe extern "C" fn(NextConfig, B, *const c_char, *const c_char) -> c_int>,
    pub config_complete: Option<unsafe extern "C" fn(NextConfigComplete, B) -> c_int>,
    pub config_help: *const c_char,
    pub thread_model: Option<unsafe extern "C" fn() -> c_int>,
    pub get_ready: Option<unsafe extern "C" fn(c_int) -> c_int>,
    pub after_fork: Option<unsafe extern "C" fn(B) -> c_int>,
    pub cleanup: Option<unsafe extern "C" fn(B)>,
    pub preconnect: Option<unsafe extern "C" fn(NextPreconnect, B, c_int) -> c_int>,
    pub list_exports:
        Option<unsafe extern "C" fn(NextListExports, B, c_int, c_int, *mut c_void) -> c_int>,
    pub default_export:
        Option<unsafe extern "C" fn(NextDefaultExport, B, c_int, c_int) -> *const c_char>,

    pub open: Option<unsafe extern "C" fn(NextOpen, B, c_int, *const c_char, c_int) -> H>,
    pub close: Option<unsafe extern "C" fn(H)>,

    pub prepare: Option<unsafe extern "C" fn(N, H, c_int) -> c_int>,
    pub finalize: Option<unsafe extern "C" fn(N, H) -> c_int>,

    pub get_size: Option<unsafe extern "C" fn(N, H) -> i64>,
    pub export_description: Option<unsafe extern "C" fn(N, H) -> *const c_char>,
    pub block_size: Option<unsafe extern "C" fn(N, H, *mut u32, *mut u32, *mut u32) -> c_int>,

    pub can_write: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_flush: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub is_rotational: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_trim: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_zero: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_fast_zero: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_extents: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_fua: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_multi_conn: Option<unsafe extern "C" fn(N, H) -> c_int>,
    pub can_cache: Option<unsafe extern "C" fn(N, H) -> c_int>,

    pub pread: Option<unsafe extern "C" fn(N, H, *mut c_void, u32, u64, u32, *mut c_int) -> c_int>,
    pub pwrite:
        Option<unsafe extern "C" fn(N, H, *const c_void, u32, u64, u32, *mut c_int) -> c_int>,
    pub flush: Option<unsafe extern "C" fn(N, H, u32, *mut c_int) -> c_int>,
    pub trim: Option<unsafe extern "C" fn(N, H, u32, u64, u32, *mut c_int) -> c_int>,
    pub zero: Option<unsafe extern "C" fn(N, H, u32, u64, u32, *mut c_int) -> c_int>,
    pub extents:
        Option<unsafe extern "C" fn(N, H, u32, u64, u32, *mut c_void, *mut c_int) -> c_int>,
    pub cache: Option<unsafe extern "C" fn(N, H, u32, u64, u32, *mut c_int) -> c_int>,
}

// Read-only after loading; its strings are static in the filter.
unsafe impl Send for FilterStruct {}
unsafe impl Sync for FilterStruct {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Our layouts against the C compiler's, for our header and for
    /// Debian's (nbdkit-plugin-dev): sizes and fields spread over both
    /// structs.
    #[test]
    fn layout_matches_nbdkit_filter_h() {
        let ours_h = concat!(env!("CARGO_MANIFEST_DIR"), "/../include");
        for include in [ours_h, "/usr/include"] {
            let dir = std::env::temp_dir().join(format!(
                "nbd-rs-filter-abi-{}-{}",
                std::process::id(),
                include.len()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let src = dir.join("layout.c");
            let exe = dir.join("layout");
            std::fs::write(
                &src,
                "#include <stdio.h>\n#include <stddef.h>\n#include <nbdkit-filter.h>\n\
                 #define F(f) printf(\"%zu \", offsetof(struct nbdkit_filter, f))\n\
                 #define N(f) printf(\"%zu \", offsetof(struct nbdkit_next_ops, f))\n\
                 int main(void) { printf(\"%zu %zu \", sizeof(struct nbdkit_filter), \
                 sizeof(struct nbdkit_next_ops)); F(_version); F(name); F(config_help); \
                 F(cleanup); F(open); F(prepare); F(get_size); F(block_size); F(can_cache); \
                 F(pread); F(extents); F(cache); N(get_size); N(block_size); N(can_cache); \
                 N(pread); N(extents); N(cache); return 0; }\n",
            )
            .unwrap();
            let st = std::process::Command::new("cc")
                .arg("-I")
                .arg(include)
                .arg("-o")
                .arg(&exe)
                .arg(&src)
                .status()
                .unwrap();
            assert!(st.success(), "{include}");
            let out = std::process::Command::new(&exe).output().unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            let c: Vec<usize> = String::from_utf8(out.stdout)
                .unwrap()
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            let ours = [
                size_of::<FilterStruct>(),
                size_of::<NextOps>(),
                offset_of!(FilterStruct, _version),
                offset_of!(FilterStruct, name),
                offset_of!(FilterStruct, config_help),
                offset_of!(FilterStruct, cleanup),
                offset_of!(FilterStruct, open),
                offset_of!(FilterStruct, prepare),
                offset_of!(FilterStruct, get_size),
                offset_of!(FilterStruct, block_size),
                offset_of!(FilterStruct, can_cache),
                offset_of!(FilterStruct, pread),
                offset_of!(FilterStruct, extents),
                offset_of!(FilterStruct, cache),
                offset_of!(NextOps, get_size),
                offset_of!(NextOps, block_size),
                offset_of!(NextOps, can_cache),
                offset_of!(NextOps, pread),
                offset_of!(NextOps, extents),
                offset_of!(NextOps, cache),
            ];
            assert_eq!(c, ours, "{include}");
        }
    }
}
