//! Numeric limits shared by clients and servers.
//!
//! Every loop over peer-supplied data is bounded by one of these, so a
//! hostile peer can make us do at most a fixed amount of work per message.

/// Longest string (export name, description, meta context name) the protocol
/// allows: proto.md says 4096 bytes.
pub const MAX_STRING: usize = 4096;

/// Largest option payload we accept from a client or a server. An option of
/// GO or SET_META_CONTEXT with many queries needs more than one string, so
/// this is a multiple of MAX_STRING, but still bounded.
pub const MAX_OPTION_LEN: usize = 64 * 1024;

/// An option longer than this cannot be one a client means: the server
/// hangs up at once rather than read and discard it (between
/// MAX_OPTION_LEN and this, it is discarded and refused with ERR_TOO_BIG).
pub const MAX_OPTION_DRAIN: usize = 1024 * 1024;

/// How many options a server lets a client send before it gives up on it
/// (nbdkit's MAX_NR_OPTIONS). NBD_OPT_LIST adds as many again per export
/// listed, so that a client can ask about each.
pub const MAX_OPTIONS: usize = 32;

/// Largest READ or WRITE payload our server accepts: libnbd's largest
/// request, and nbdkit's limit. It is the maximum block size we advertise.
/// A WRITE longer than this ends the connection (its payload is not read).
pub const MAX_REQUEST_LEN: u32 = 64 * 1024 * 1024;

/// Bytes of READ and WRITE data one server connection may hold at once.
/// A request that would go beyond it waits, with nothing more read from
/// that connection, until earlier ones have been answered (a request
/// alone always fits).
pub const MAX_CONN_IN_FLIGHT: u64 = 64 * 1024 * 1024;

/// Largest request the client will send: libnbd's limit is 64 MiB, and a
/// larger one fails with ERANGE before anything is sent.
pub const MAX_CLIENT_REQUEST_LEN: u64 = 64 * 1024 * 1024;

/// The export size beyond which a server's answer is nonsense: offsets are
/// carried as signed 64-bit values by every implementation we talk to.
pub const MAX_EXPORT_SIZE: u64 = i64::MAX as u64;

/// Largest structured reply chunk the client accepts whose payload it must
/// buffer itself (everything but OFFSET_DATA, which lands in the caller's
/// buffer): a block status reply for a 64 MiB request at 512-byte
/// granularity, plus headroom.
pub const MAX_BUFFERED_CHUNK: usize = 1024 * 1024;
