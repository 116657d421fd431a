//! Error codes as the NBD protocol carries them, and their mapping to and
//! from the host's errno values.
//!
//! proto.md fixes the wire values (they are Linux's); we keep them as a
//! type so that no other module passes a raw number around.

/// An error a server may send in a simple reply or an ERROR chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NbdError {
    Perm,
    Io,
    NoMem,
    Inval,
    NoSpc,
    Overflow,
    NotSup,
    Shutdown,
}

/// Host errno values we map onto. The numbers are Linux's, which are also
/// the wire values; the core must not depend on libc, so they live here.
pub mod host {
    pub const EPERM: i32 = 1;
    pub const EIO: i32 = 5;
    pub const ENOMEM: i32 = 12;
    pub const EFAULT: i32 = 14;
    pub const EINVAL: i32 = 22;
    pub const ENOSPC: i32 = 28;
    pub const ERANGE: i32 = 34;
    pub const EPROTO: i32 = 71;
    pub const EOVERFLOW: i32 = 75;
    pub const ENOTSUP: i32 = 95;
    pub const ESHUTDOWN: i32 = 108;
    pub const ECONNRESET: i32 = 104;
    pub const ENOTCONN: i32 = 107;
    pub const ENOENT: i32 = 2;
}

impl NbdError {
    /// The value on the wire.
    pub fn to_wire(self) -> u32 {
        match self {
            NbdError::Perm => 1,
            NbdError::Io => 5,
            NbdError::NoMem => 12,
            NbdError::Inval => 22,
            NbdError::NoSpc => 28,
            NbdError::Overflow => 75,
            NbdError::NotSup => 95,
            NbdError::Shutdown => 108,
        }
    }

    /// A wire value from a server. proto.md says unknown values are to be
    /// treated as EINVAL; zero is not an error at all.
    pub fn from_wire(v: u32) -> Option<NbdError> {
        Some(match v {
            0 => return None,
            1 => NbdError::Perm,
            5 => NbdError::Io,
            12 => NbdError::NoMem,
            28 => NbdError::NoSpc,
            75 => NbdError::Overflow,
            95 => NbdError::NotSup,
            108 => NbdError::Shutdown,
            _ => NbdError::Inval,
        })
    }

    /// The errno a client reports for it.
    pub fn to_errno(self) -> i32 {
        self.to_wire() as i32
    }

    /// What a server sends for a backend's errno. Errors the protocol cannot
    /// carry become EIO, except the few with an obvious counterpart.
    pub fn from_errno(e: i32) -> NbdError {
        match e {
            1 | 13 | 30 => NbdError::Perm, // EPERM, EACCES, EROFS
            12 => NbdError::NoMem,
            22 | 34 => NbdError::Inval,       // EINVAL, ERANGE
            28 | 27 | 122 => NbdError::NoSpc, // ENOSPC, EFBIG, EDQUOT
            75 => NbdError::Overflow,
            95 | 38 => NbdError::NotSup, // EOPNOTSUPP, ENOSYS
            108 => NbdError::Shutdown,
            _ => NbdError::Io,
        }
    }
}
