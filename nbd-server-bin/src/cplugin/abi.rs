//! The C structure a plugin's `plugin_init` returns, field by field as
//! nbdkit 1.32's `nbdkit-plugin.h` lays it out, and the constants of
//! `nbdkit-common.h` the callbacks use.
//!
//! The header compiles some slots differently by API version: where an
//! API 1 plugin has `pread(h, buf, count, offset)`, an API 2 plugin has
//! `_pread_v1` (unused, NULL) there and its own `pread` with flags
//! further down. The struct below is the API 2 view, which names both;
//! an API 1 plugin fills the `*_v1` slots and leaves the flag-taking ones
//! NULL (the header calls them `_unused1..5`).
//!
//! A plugin built against an older header has a shorter struct (its
//! `_struct_size`): the callbacks past its end do not exist. The loader
//! copies only `_struct_size` bytes into a zeroed [`PluginStruct`], so
//! missing callbacks read as NULL.

use std::os::raw::{c_char, c_int, c_void};

pub const THREAD_MODEL_SERIALIZE_CONNECTIONS: c_int = 0;
pub const THREAD_MODEL_SERIALIZE_ALL_REQUESTS: c_int = 1;
pub const THREAD_MODEL_SERIALIZE_REQUESTS: c_int = 2;
pub const THREAD_MODEL_PARALLEL: c_int = 3;

/// nbdkit's words for a thread model (`--dump-plugin`, debug messages).
pub fn thread_model_name(m: c_int) -> &'static str {
    match m {
        THREAD_MODEL_SERIALIZE_CONNECTIONS => "serialize_connections",
        THREAD_MODEL_SERIALIZE_ALL_REQUESTS => "serialize_all_requests",
        THREAD_MODEL_SERIALIZE_REQUESTS => "serialize_requests",
        _ => "parallel",
    }
}

pub const FLAG_MAY_TRIM: u32 = 1 << 0;
pub const FLAG_FUA: u32 = 1 << 1;
pub const FLAG_REQ_ONE: u32 = 1 << 2;
pub const FLAG_FAST_ZERO: u32 = 1 << 3;

/// `can_fua` and `can_cache` answer with one of three levels.
pub const LEVEL_NONE: c_int = 0;
pub const LEVEL_EMULATE: c_int = 1;
pub const LEVEL_NATIVE: c_int = 2;

type H = *mut c_void;

/// `struct nbdkit_plugin`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PluginStruct {
    pub _struct_size: u64,
    pub _api_version: c_int,
    pub _thread_model: c_int,

    pub name: *const c_char,
    pub longname: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,

    pub load: Option<unsafe extern "C" fn()>,
    pub unload: Option<unsafe extern "C" fn()>,

    pub config: Option<unsafe extern "C" fn(*const c_char, *const c_char) -> c_int>,
    pub config_complete: Option<unsafe extern "C" fn() -> c_int>,
    pub config_help: *const c_char,

    pub open: Option<unsafe extern "C" fn(c_int) -> H>,
    pub close: Option<unsafe extern "C" fn(H)>,

    pub get_size: Option<unsafe extern "C" fn(H) -> i64>,

    pub can_write: Option<unsafe extern "C" fn(H) -> c_int>,
    pub can_flush: Option<unsafe extern "C" fn(H) -> c_int>,
    pub is_rotational: Option<unsafe extern "C" fn(H) -> c_int>,
    pub can_trim: Option<unsafe extern "C" fn(H) -> c_int>,

    // API 1's data callbacks (NULL in an API 2 plugin).
    pub pread_v1: Option<unsafe extern "C" fn(H, *mut c_void, u32, u64) -> c_int>,
    pub pwrite_v1: Option<unsafe extern "C" fn(H, *const c_void, u32, u64) -> c_int>,
    pub flush_v1: Option<unsafe extern "C" fn(H) -> c_int>,
    pub trim_v1: Option<unsafe extern "C" fn(H, u32, u64) -> c_int>,
    pub zero_v1: Option<unsafe extern "C" fn(H, u32, u64, c_int) -> c_int>,

    pub errno_is_preserved: c_int,

    pub dump_plugin: Option<unsafe extern "C" fn()>,

    pub can_zero: Option<unsafe extern "C" fn(H) -> c_int>,
    pub can_fua: Option<unsafe extern "C" fn(H) -> c_int>,

    // API 2's data callbacks, with flags (NULL in an API 1 plugin).
    pub pread: Option<unsafe extern "C" fn(H, *mut c_void, u32, u64, u32) -> c_int>,
    pub pwrite: Option<unsafe extern "C" fn(H, *const c_void, u32, u64, u32) -> c_int>,
    pub flush: Option<unsafe extern "C" fn(H, u32) -> c_int>,
    pub trim: Option<unsafe extern "C" fn(H, u32, u64, u32) -> c_int>,
    pub zero: Option<unsafe extern "C" fn(H, u32, u64, u32) -> c_int>,

    pub magic_config_key: *const c_char,

    pub can_multi_conn: Option<unsafe extern "C" fn(H) -> c_int>,

    pub can_extents: Option<unsafe extern "C" fn(H) -> c_int>,
    pub extents: Option<unsafe extern "C" fn(H, u32, u64, u32, *mut c_void) -> c_int>,
    pub can_cache: Option<unsafe extern "C" fn(H) -> c_int>,
    pub cache: Option<unsafe extern "C" fn(H, u32, u64, u32) -> c_int>,

    pub thread_model: Option<unsafe extern "C" fn() -> c_int>,

    pub can_fast_zero: Option<unsafe extern "C" fn(H) -> c_int>,

    pub preconnect: Option<unsafe extern "C" fn(c_int) -> c_int>,

    pub get_ready: Option<unsafe extern "C" fn() -> c_int>,
    pub after_fork: Option<unsafe extern "C" fn() -> c_int>,

    pub list_exports: Option<unsafe extern "C" fn(c_int, c_int, *mut c_void) -> c_int>,
    pub default_export: Option<unsafe extern "C" fn(c_int, c_int) -> *const c_char>,
    pub export_description: Option<unsafe extern "C" fn(H) -> *const c_char>,

    pub cleanup: Option<unsafe extern "C" fn()>,

    pub block_size: Option<unsafe extern "C" fn(H, *mut u32, *mut u32, *mut u32) -> c_int>,
}

// The plugin's struct is read-only after loading and its strings are
// static in the plugin: sharing it between threads is what nbdkit does.
unsafe impl Send for PluginStruct {}
unsafe impl Sync for PluginStruct {}

impl PluginStruct {
    /// A struct with every field zero (every callback absent).
    pub fn zeroed() -> PluginStruct {
        // SAFETY: every field is an integer, a raw pointer or an
        // Option<fn>, for all of which all-zero bytes are valid (0, NULL,
        // None).
        unsafe { std::mem::zeroed() }
    }
}

/// The size of the struct in nbdkit 1.32.5's header (x86_64): what a
/// plugin built against it reports as `_struct_size`.
pub const STRUCT_SIZE: usize = std::mem::size_of::<PluginStruct>();

/// `struct nbdkit_extent`, as `nbdkit_get_extent` returns it.
#[repr(C)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub type_: u32,
}

/// `struct nbdkit_export`, as `nbdkit_get_export` returns it.
#[repr(C)]
pub struct Export {
    pub name: *mut c_char,
    pub description: *mut c_char,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Our layout against the C compiler's for Debian's header: the size
    /// and the offset of fields spread over the struct (both API views
    /// of the data callbacks).
    #[test]
    fn layout_matches_nbdkit_plugin_h() {
        let header = std::path::Path::new("/usr/include/nbdkit-plugin.h");
        assert!(
            header.exists(),
            "nbdkit-plugin.h is missing: apt-get install nbdkit-plugin-dev"
        );
        let dir = std::env::temp_dir().join(format!("nbd-rs-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("layout.c");
        let exe = dir.join("layout");
        std::fs::write(
            &src,
            "#define NBDKIT_API_VERSION 2\n#include <stdio.h>\n#include <stddef.h>\n\
             #include <nbdkit-plugin.h>\n#define O(f) printf(\"%zu \", offsetof(struct nbdkit_plugin, f))\n\
             int main(void) { printf(\"%zu \", sizeof(struct nbdkit_plugin)); O(name); O(config_help); \
             O(_pread_v1); O(errno_is_preserved); O(pread); O(zero); O(magic_config_key); \
             O(extents); O(thread_model); O(list_exports); O(cleanup); O(block_size); return 0; }\n",
        )
        .unwrap();
        let st = std::process::Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
        let out = std::process::Command::new(&exe).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let c: Vec<usize> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let ours = [
            STRUCT_SIZE,
            offset_of!(PluginStruct, name),
            offset_of!(PluginStruct, config_help),
            offset_of!(PluginStruct, pread_v1),
            offset_of!(PluginStruct, errno_is_preserved),
            offset_of!(PluginStruct, pread),
            offset_of!(PluginStruct, zero),
            offset_of!(PluginStruct, magic_config_key),
            offset_of!(PluginStruct, extents),
            offset_of!(PluginStruct, thread_model),
            offset_of!(PluginStruct, list_exports),
            offset_of!(PluginStruct, cleanup),
            offset_of!(PluginStruct, block_size),
        ];
        assert_eq!(c, ours);
    }
}
