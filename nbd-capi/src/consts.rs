//! The constants and callback types of libnbd.h. cbindgen writes them into
//! `include/libnbd.h`: the `u32` ones as unsigned literals (libnbd's `U`
//! suffix), the `c_int` ones as plain ints, as in libnbd 1.14's header.
//! The string constants cbindgen cannot express (the meta context
//! namespaces and names) are in `after_includes` of `cbindgen.toml`.

use std::os::raw::{c_char, c_int, c_uint, c_void};

pub const LIBNBD_TLS_DISABLE: c_int = 0;
pub const LIBNBD_TLS_ALLOW: c_int = 1;
pub const LIBNBD_TLS_REQUIRE: c_int = 2;

pub const LIBNBD_SIZE_MINIMUM: c_int = 0;
pub const LIBNBD_SIZE_PREFERRED: c_int = 1;
pub const LIBNBD_SIZE_MAXIMUM: c_int = 2;
/// libnbd 1.24's: not advertised by the server but the largest write
/// payload this handle sends (see `nbd_core::client::ExportInfo::payload_maximum`).
pub const LIBNBD_SIZE_PAYLOAD: c_int = 3;

pub const LIBNBD_CMD_FLAG_FUA: u32 = 0x01u32;
pub const LIBNBD_CMD_FLAG_NO_HOLE: u32 = 0x02u32;
pub const LIBNBD_CMD_FLAG_DF: u32 = 0x04u32;
pub const LIBNBD_CMD_FLAG_REQ_ONE: u32 = 0x08u32;
pub const LIBNBD_CMD_FLAG_FAST_ZERO: u32 = 0x10u32;
/// libnbd 1.18's (extended headers); in the mask since then, as in 1.24.
pub const LIBNBD_CMD_FLAG_PAYLOAD_LEN: u32 = 0x20u32;
pub const LIBNBD_CMD_FLAG_MASK: u32 = 0x3fu32;

pub const LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE: u32 = 0x01u32;
pub const LIBNBD_HANDSHAKE_FLAG_NO_ZEROES: u32 = 0x02u32;
pub const LIBNBD_HANDSHAKE_FLAG_MASK: u32 = 0x03u32;

pub const LIBNBD_STRICT_COMMANDS: u32 = 0x01u32;
pub const LIBNBD_STRICT_FLAGS: u32 = 0x02u32;
pub const LIBNBD_STRICT_BOUNDS: u32 = 0x04u32;
pub const LIBNBD_STRICT_ZERO_SIZE: u32 = 0x08u32;
pub const LIBNBD_STRICT_ALIGN: u32 = 0x10u32;
/// libnbd 1.24's: refuse a write larger than LIBNBD_SIZE_PAYLOAD.
pub const LIBNBD_STRICT_PAYLOAD: u32 = 0x20u32;
/// libnbd 1.24's: set or clear LIBNBD_CMD_FLAG_PAYLOAD_LEN on the wire as
/// the negotiated headers need, whatever the caller passed.
pub const LIBNBD_STRICT_AUTO_FLAG: u32 = 0x40u32;
pub const LIBNBD_STRICT_MASK: u32 = 0x7fu32;

pub const LIBNBD_ALLOW_TRANSPORT_TCP: u32 = 0x01u32;
pub const LIBNBD_ALLOW_TRANSPORT_UNIX: u32 = 0x02u32;
pub const LIBNBD_ALLOW_TRANSPORT_VSOCK: u32 = 0x04u32;
pub const LIBNBD_ALLOW_TRANSPORT_SSH: u32 = 0x08u32;
pub const LIBNBD_ALLOW_TRANSPORT_MASK: u32 = 0x0fu32;

pub const LIBNBD_SHUTDOWN_ABANDON_PENDING: u32 = 0x10000u32;
pub const LIBNBD_SHUTDOWN_MASK: u32 = 0x10000u32;

pub const LIBNBD_AIO_DIRECTION_READ: c_int = 1;
pub const LIBNBD_AIO_DIRECTION_WRITE: c_int = 2;
pub const LIBNBD_AIO_DIRECTION_BOTH: c_int = 3;

pub const LIBNBD_READ_DATA: c_int = 1;
pub const LIBNBD_READ_HOLE: c_int = 2;
pub const LIBNBD_READ_ERROR: c_int = 3;

pub const LIBNBD_STATE_HOLE: c_int = 1;
pub const LIBNBD_STATE_ZERO: c_int = 2;

/// "qemu:dirty-bitmap:" contexts: the block changed since the bitmap began.
pub const LIBNBD_STATE_DIRTY: c_int = 1;

/// Callback parameters are passed by value: a function, its user data and
/// a function to free the user data (see CALLBACKS in libnbd(3)).
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nbd_chunk_callback {
    pub callback: Option<
        unsafe extern "C" fn(*mut c_void, *const c_void, usize, u64, c_uint, *mut c_int) -> c_int,
    >,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
}

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nbd_completion_callback {
    pub callback: Option<unsafe extern "C" fn(*mut c_void, *mut c_int) -> c_int>,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
}

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nbd_debug_callback {
    pub callback: Option<unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int>,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
}

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nbd_extent_callback {
    pub callback: Option<
        unsafe extern "C" fn(*mut c_void, *const c_char, u64, *mut u32, usize, *mut c_int) -> c_int,
    >,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
}

/// One extent as nbd_block_status_64's callback sees it (libnbd 1.18).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct nbd_extent {
    pub length: u64,
    pub flags: u64,
}

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nbd_extent64_callback {
    pub callback: Option<
        unsafe extern "C" fn(
            *mut c_void,
            *const c_char,
            u64,
            *mut nbd_extent,
            usize,
            *mut c_int,
        ) -> c_int,
    >,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
}

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nbd_list_callback {
    pub callback: Option<unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int>,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
}

#[repr(C)]
#[allow(non_camel_case_types)]
pub struct nbd_context_callback {
    pub callback: Option<unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int>,
    pub user_data: *mut c_void,
    pub free: Option<unsafe extern "C" fn(*mut c_void)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_structs_are_24_bytes() {
        assert_eq!(std::mem::size_of::<nbd_completion_callback>(), 24);
        assert_eq!(std::mem::size_of::<nbd_chunk_callback>(), 24);
        assert_eq!(std::mem::size_of::<nbd_extent_callback>(), 24);
        assert_eq!(std::mem::size_of::<nbd_debug_callback>(), 24);
        assert_eq!(std::mem::size_of::<nbd_list_callback>(), 24);
        assert_eq!(std::mem::size_of::<nbd_context_callback>(), 24);
    }

    #[test]
    fn cmd_flags_match_the_wire() {
        use nbd_core::wire::consts::cmd_flags;
        assert_eq!(LIBNBD_CMD_FLAG_FUA, cmd_flags::FUA as u32);
        assert_eq!(LIBNBD_CMD_FLAG_NO_HOLE, cmd_flags::NO_HOLE as u32);
        assert_eq!(LIBNBD_CMD_FLAG_DF, cmd_flags::DF as u32);
        assert_eq!(LIBNBD_CMD_FLAG_REQ_ONE, cmd_flags::REQ_ONE as u32);
        assert_eq!(LIBNBD_CMD_FLAG_FAST_ZERO, cmd_flags::FAST_ZERO as u32);
        assert_eq!(LIBNBD_CMD_FLAG_PAYLOAD_LEN, cmd_flags::PAYLOAD_LEN as u32);
        assert_eq!(LIBNBD_CMD_FLAG_MASK, cmd_flags::ALL as u32);
    }
}
