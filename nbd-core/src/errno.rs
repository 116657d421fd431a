//! Error codes as the NBD protocol carries them, and the one errno policy:
//! which NBD error a server sends for a backend's errno, and which errno a
//! client reports for an NBD error. Both directions live here, side by side,
//! and nowhere else.
//!
//! proto.md fixes the wire values (they are Linux's); we keep them as a
//! type so that no other module passes a raw number around.
//!
//! | backend errno (server sends)        | wire      | client reports |
//! |-------------------------------------|-----------|----------------|
//! | 0                                   | 0         | success        |
//! | EPERM, EACCES, EROFS                | EPERM     | EPERM          |
//! | EIO                                 | EIO       | EIO            |
//! | ENOMEM                              | ENOMEM    | ENOMEM         |
//! | EINVAL, ERANGE                      | EINVAL    | EINVAL         |
//! | ENOSPC, EDQUOT, EFBIG               | ENOSPC    | ENOSPC         |
//! | EOVERFLOW, with DF / without        | EOVERFLOW / EINVAL | EOVERFLOW |
//! | ENOTSUP, ENOSYS, with FAST_ZERO / without | ENOTSUP / EINVAL | ENOTSUP |
//! | ESHUTDOWN                           | ESHUTDOWN | ESHUTDOWN      |
//! | anything else                       | EIO       | —              |
//! | (unknown wire value)                | —         | EINVAL         |
//!
//! Choices, against proto.md ("Error values"), nbdkit's `nbd_errno`
//! (server/protocol.c) and libnbd's `nbd_internal_errno_of_nbd_error`:
//!
//! - ENOTSUP only answers a FAST_ZERO request and EOVERFLOW only a DF read
//!   (proto.md: SHOULD NOT otherwise); both become EINVAL elsewhere, as in
//!   nbdkit. ENOSYS ("not implemented") is treated as ENOTSUP.
//! - EACCES is a permission error, so EPERM (nbdkit lets it fall through to
//!   EINVAL, which tells the client its request was malformed: it was not).
//! - An errno the protocol cannot carry becomes EIO, not nbdkit's EINVAL:
//!   the request was fine, the storage failed.
//! - The client reports each known wire value as the same errno, and an
//!   unknown one as EINVAL, as proto.md asks and libnbd does.

use crate::wire::consts::cmd_flags;

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
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EFAULT: i32 = 14;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const ERANGE: i32 = 34;
    pub const ENOSYS: i32 = 38;
    pub const EPROTO: i32 = 71;
    pub const EOVERFLOW: i32 = 75;
    pub const ENOTSUP: i32 = 95;
    pub const ECONNRESET: i32 = 104;
    pub const ENOTCONN: i32 = 107;
    pub const ESHUTDOWN: i32 = 108;
    pub const EDQUOT: i32 = 122;
}

/// Every error with its wire value; the errno a client reports is the same
/// number (they are Linux's).
const TABLE: [(NbdError, u32); 8] = [
    (NbdError::Perm, 1),
    (NbdError::Io, 5),
    (NbdError::NoMem, 12),
    (NbdError::Inval, 22),
    (NbdError::NoSpc, 28),
    (NbdError::Overflow, 75),
    (NbdError::NotSup, 95),
    (NbdError::Shutdown, 108),
];

impl NbdError {
    /// The value on the wire.
    pub fn to_wire(self) -> u32 {
        TABLE
            .iter()
            .find(|(e, _)| *e == self)
            .map_or(host::EIO as u32, |&(_, w)| w)
    }

    /// Client direction: a wire value from a server. proto.md says unknown
    /// values are to be treated as EINVAL; zero is not an error at all.
    pub fn from_wire(v: u32) -> Option<NbdError> {
        if v == 0 {
            return None;
        }
        Some(
            TABLE
                .iter()
                .find(|&&(_, w)| w == v)
                .map_or(NbdError::Inval, |&(e, _)| e),
        )
    }

    /// Client direction: the errno a client reports for it.
    pub fn to_errno(self) -> i32 {
        self.to_wire() as i32
    }

    /// Server direction: what a server sends for a backend's `errno` in
    /// answer to a request with command flags `flags` (see the module's
    /// table). `None` for 0, which is success.
    pub fn from_errno(errno: i32, flags: u16) -> Option<NbdError> {
        use host::*;
        Some(match errno {
            0 => return None,
            EPERM | EACCES | EROFS => NbdError::Perm,
            EIO => NbdError::Io,
            ENOMEM => NbdError::NoMem,
            EINVAL | ERANGE => NbdError::Inval,
            ENOSPC | EDQUOT | EFBIG => NbdError::NoSpc,
            ESHUTDOWN => NbdError::Shutdown,
            ENOTSUP | ENOSYS if flags & cmd_flags::FAST_ZERO != 0 => NbdError::NotSup,
            EOVERFLOW if flags & cmd_flags::DF != 0 => NbdError::Overflow,
            ENOTSUP | ENOSYS | EOVERFLOW => NbdError::Inval,
            _ => NbdError::Io,
        })
    }
}

/// Server direction, as the wire value: 0 for success.
pub fn wire_of_errno(errno: i32, flags: u16) -> u32 {
    NbdError::from_errno(errno, flags).map_or(0, NbdError::to_wire)
}

#[cfg(test)]
mod tests {
    use super::host::*;
    use super::*;
    use crate::wire::consts::cmd_flags::{DF, FAST_ZERO};

    #[test]
    fn server_direction() {
        let cases: &[(i32, u16, u32)] = &[
            (0, 0, 0),
            (EPERM, 0, 1),
            (EACCES, 0, 1),
            (EROFS, 0, 1),
            (EIO, 0, 5),
            (ENOMEM, 0, 12),
            (EINVAL, 0, 22),
            (ERANGE, 0, 22),
            (ENOSPC, 0, 28),
            (EDQUOT, 0, 28),
            (EFBIG, 0, 28),
            (ESHUTDOWN, 0, 108),
            (ENOTSUP, 0, 22),
            (ENOTSUP, FAST_ZERO, 95),
            (ENOSYS, 0, 22),
            (ENOSYS, FAST_ZERO, 95),
            (EOVERFLOW, 0, 22),
            (EOVERFLOW, DF, 75),
            (EOVERFLOW, FAST_ZERO, 22),
            (4, 0, 5), // EINTR
            (ENOENT, 0, 5),
            (EPROTO, 0, 5),
        ];
        for &(errno, flags, wire) in cases {
            assert_eq!(
                wire_of_errno(errno, flags),
                wire,
                "errno {errno} flags {flags}"
            );
        }
    }

    #[test]
    fn client_direction() {
        assert_eq!(NbdError::from_wire(0), None);
        for (wire, errno) in [
            (1, EPERM),
            (5, EIO),
            (12, ENOMEM),
            (22, EINVAL),
            (28, ENOSPC),
            (75, EOVERFLOW),
            (95, ENOTSUP),
            (108, ESHUTDOWN),
            (2, EINVAL),
            (13, EINVAL),
            (0xffff_ffff, EINVAL),
        ] {
            assert_eq!(
                NbdError::from_wire(wire).map(NbdError::to_errno),
                Some(errno)
            );
        }
    }

    #[test]
    fn round_trip() {
        for &(e, w) in &TABLE {
            assert_eq!(e.to_wire(), w);
            assert_eq!(NbdError::from_wire(w), Some(e));
        }
        // Every error a server can send survives the trip to the client's
        // errno, given the flags that allow it.
        for errno in 0..200 {
            let w = wire_of_errno(errno, FAST_ZERO | DF);
            if w != 0 {
                assert_eq!(NbdError::from_wire(w).map(NbdError::to_wire), Some(w));
            }
        }
    }
}
