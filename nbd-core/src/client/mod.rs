//! The NBD client as a sans-IO state machine.
//!
//! A [`Client`] is fed what the server sent and asked what to send. It owns
//! no socket: the driver (the C API's sync and AIO calls) moves the bytes.
//!
//! ```text
//!   driver                         Client
//!   ------                         ------
//!   if wants_write():  writev(send_bufs())  -> send_done(n)
//!   if wants_read():   recv(recv_buf())     -> recv_done(n)   (n = 0: EOF)
//!   submit(command, ctx)                    -> cookie
//!   poll_event()                            -> Completed { cookie, ctx, result }
//! ```
//!
//! Zero copy: each command carries a driver-chosen context `C` implementing
//! [`CommandBuffer`]. A READ's data is received straight into
//! `ctx.read_buf()` whenever a large payload is outstanding, and a WRITE's
//! payload is handed to the driver's vectored write straight from
//! `ctx.write_buf()`. Small replies are batched through an internal buffer
//! so one `recv` can carry many of them.
//!
//! Negotiation (fixed newstyle, with oldstyle recognised) runs the options
//! STARTTLS (when [`Config::tls`] asks for it), EXTENDED_HEADERS (falling
//! back to STRUCTURED_REPLY when refused),
//! SET_META_CONTEXT and GO (falling back to EXPORT_NAME
//! when the server does not know GO) before the client becomes ready.

mod commands;
mod negotiate;
mod receive;
mod state;
mod stats;
#[cfg(test)]
mod tests;
mod trace;

pub use negotiate::UserOption;
pub use state::TlsState;
pub use state::{Client, CookieHasher, CookieMap};
pub use stats::Stats;

use crate::limits::MAX_CLIENT_REQUEST_LEN;
use std::fmt;

/// Where a command's data lives. The driver decides: the C API wraps the
/// caller's buffer, tests use a `Vec<u8>`.
pub trait CommandBuffer {
    /// Where a READ's data goes; its length is the request's length.
    /// Other commands return an empty slice.
    fn read_buf(&mut self) -> &mut [u8];
    /// A WRITE's payload; its length is the request's length.
    /// Other commands return an empty slice.
    fn write_buf(&self) -> &[u8];
}

impl CommandBuffer for Vec<u8> {
    fn read_buf(&mut self) -> &mut [u8] {
        self
    }
    fn write_buf(&self) -> &[u8] {
        self
    }
}

impl CommandBuffer for () {
    fn read_buf(&mut self) -> &mut [u8] {
        &mut []
    }
    fn write_buf(&self) -> &[u8] {
        &[]
    }
}

/// What the client asks for during negotiation. Mirrors libnbd's setters.
#[derive(Clone, Debug)]
pub struct Config {
    pub export_name: Vec<u8>,
    /// Ask for structured replies (nbd_set_request_structured_replies).
    pub request_structured_replies: bool,
    /// Ask for extended headers first (nbd_set_request_extended_headers).
    /// As in libnbd, ignored when structured replies are not asked for.
    pub request_extended_headers: bool,
    /// Meta contexts to ask for with SET_META_CONTEXT (nbd_add_meta_context).
    pub meta_contexts: Vec<Vec<u8>>,
    /// Client flags we are willing to send (LIBNBD_HANDSHAKE_FLAG_*, which
    /// equal NBD_FLAG_C_*): intersected with the server's handshake flags.
    pub handshake_flags: u32,
    /// Ask for the canonical name and description too (nbd_set_full_info).
    pub full_info: bool,
    /// Ask for block size constraints (nbd_set_request_block_size).
    pub request_block_size: bool,
    /// Send SET_META_CONTEXT before GO or INFO by ourselves
    /// (nbd_set_request_meta_context). Off, only an explicit
    /// [`UserOption::SetMetaContext`] selects contexts.
    pub request_meta_context: bool,
    /// Pause after the handshake flags (and structured replies) for the
    /// caller's options (nbd_set_opt_mode). No effect on oldstyle servers.
    pub opt_mode: bool,
    /// Which client-side checks [`Client::submit`] makes
    /// (nbd_set_strict_mode): the `strict` bits, equal to LIBNBD_STRICT_*.
    pub strict: u32,
    /// Whether to upgrade the connection to TLS with NBD_OPT_STARTTLS
    /// (nbd_set_tls). The core only negotiates; the driver runs the TLS
    /// handshake and record layer when [`Client::tls_handshake_wanted`]
    /// says so.
    pub tls: Tls,
}

/// nbd_set_tls's modes (LIBNBD_TLS_DISABLE, _ALLOW, _REQUIRE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    /// Never send NBD_OPT_STARTTLS.
    #[default]
    Disable,
    /// Try STARTTLS first; a server that refuses it is used in plain text.
    Allow,
    /// Send STARTTLS before anything else; a refusal (or a server that
    /// cannot negotiate options at all) is fatal, and nothing but STARTTLS
    /// is ever sent in plain text.
    Require,
}

/// The bits of [`Config::strict`], as libnbd's LIBNBD_STRICT_*.
pub mod strict {
    /// Refuse commands and flags the server did not advertise.
    pub const COMMANDS: u32 = 0x01;
    /// Refuse flags the command does not take.
    pub const FLAGS: u32 = 0x02;
    /// Refuse requests past the end of the export.
    pub const BOUNDS: u32 = 0x04;
    /// Refuse zero-length requests.
    pub const ZERO_SIZE: u32 = 0x08;
    /// Refuse requests not aligned to the server's minimum block size.
    pub const ALIGN: u32 = 0x10;
    /// Refuse writes larger than [`super::ExportInfo::payload_maximum`].
    pub const PAYLOAD: u32 = 0x20;
    /// Set or clear NBD_CMD_FLAG_PAYLOAD_LEN on writes and filtered block
    /// status as the negotiated headers need, whatever the caller passed.
    pub const AUTO_FLAG: u32 = 0x40;
    pub const ALL: u32 = 0x7f;
}

impl Default for Config {
    fn default() -> Self {
        Config {
            export_name: Vec::new(),
            request_structured_replies: true,
            request_extended_headers: true,
            meta_contexts: Vec::new(),
            handshake_flags: crate::wire::consts::client_flags::ALL,
            full_info: false,
            request_block_size: true,
            request_meta_context: true,
            opt_mode: false,
            strict: strict::ALL,
            tls: Tls::Disable,
        }
    }
}

/// Where the connection stands, as libnbd's state predicates see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Handshake under way: greeting, flags, options the client runs by
    /// itself or one the caller asked for (nbd_aio_is_connecting).
    Connecting,
    /// Option mode: paused, waiting for the caller's next option
    /// (nbd_aio_is_negotiating).
    Negotiating,
    /// Transmission, nothing in flight (nbd_aio_is_ready).
    Ready,
    /// Transmission, commands in flight (nbd_aio_is_processing).
    Processing,
    /// A fatal error happened; see [`Client::fatal_error`].
    Dead,
    /// Disconnected cleanly.
    Closed,
}

/// Which protocol the server spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Oldstyle,
    Newstyle,
    FixedNewstyle,
}

impl Protocol {
    /// The string nbd_get_protocol returns.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Oldstyle => "oldstyle",
            Protocol::Newstyle => "newstyle",
            Protocol::FixedNewstyle => "newstyle-fixed",
        }
    }
}

/// What negotiation learnt about the export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportInfo {
    pub size: u64,
    /// Transmission flags (NBD_FLAG_*).
    pub flags: u16,
    /// (minimum, preferred, maximum) from NBD_INFO_BLOCK_SIZE.
    pub block_size: Option<(u32, u32, u32)>,
    pub canonical_name: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    pub structured_replies: bool,
    /// Whether 32-byte headers are in use (they imply structured replies).
    pub extended_headers: bool,
    /// Contexts the server agreed to, as (id, name).
    pub meta_contexts: Vec<(u32, Vec<u8>)>,
}

impl ExportInfo {
    pub fn has_flag(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// The largest write payload the client sends with strict::PAYLOAD on
    /// (libnbd 1.24's LIBNBD_SIZE_PAYLOAD): the server's maximum block
    /// size, clamped as libnbd 1.24 documents it: never under 1 MiB,
    /// never over the client's own 64 MiB limit; 64 MiB when no maximum was advertised.
    pub fn payload_maximum(&self) -> u64 {
        const FLOOR: u64 = 1024 * 1024;
        match self.block_size {
            Some((_, _, max)) if max > 0 => u64::from(max).clamp(FLOOR, MAX_CLIENT_REQUEST_LEN),
            _ => MAX_CLIENT_REQUEST_LEN,
        }
    }
}

/// A command to send. `kind` and `flags` are the wire values
/// (`wire::consts::cmd`, `wire::consts::cmd_flags`). `length` is 64-bit
/// because the C API takes 64-bit counts: [`Client::submit`] checks it
/// against the export and the protocol in the order libnbd does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    pub kind: u16,
    pub flags: u16,
    pub offset: u64,
    pub length: u64,
    /// Report each structured READ chunk as an [`Event::ReadChunk`]
    /// (nbd_pread_structured); plain reads need not pay for the events.
    pub report_chunks: bool,
}

impl Command {
    pub fn new(kind: u16, flags: u16, offset: u64, length: u64) -> Self {
        Command {
            kind,
            flags,
            offset,
            length,
            report_chunks: false,
        }
    }
}

/// An error with the errno libnbd would report and a message for
/// nbd_get_error. Used both for the connection (fatal) and for one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub errno: i32,
    pub message: String,
}

impl Error {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Error {
            errno,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// What the client tells its driver, in the order it happened.
#[derive(Debug)]
pub enum Event<C> {
    /// A command is finished. `result` is the server's error, if any, or
    /// the connection's if it died with the command in flight.
    Completed {
        cookie: u64,
        ctx: C,
        result: Result<(), Error>,
    },
    /// Part of a structured READ arrived: `len` bytes at `offset`
    /// (absolute), either data or a hole (already zeroed in the buffer).
    ReadChunk {
        cookie: u64,
        offset: u64,
        len: u32,
        hole: bool,
    },
    /// A block status chunk for a command: its context id and extents.
    BlockStatus {
        cookie: u64,
        context_id: u32,
        /// (length, flags); 64-bit only with extended headers.
        extents: Vec<(u64, u64)>,
    },
    /// Option mode: the option the caller asked for is finished. `Ok`
    /// carries the number of list entries for LIST and LIST_META_CONTEXT.
    /// After a failure the client is negotiating again (unless dead).
    OptionDone { result: Result<u32, Error> },
    /// Option mode: one export from NBD_OPT_LIST.
    ListedExport { name: Vec<u8>, description: Vec<u8> },
    /// Option mode: one context from NBD_OPT_LIST_META_CONTEXT.
    ListedMetaContext { name: Vec<u8> },
}
