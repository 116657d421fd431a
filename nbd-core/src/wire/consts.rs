//! Numbers fixed by proto.md. Grouped by where they appear on the wire.

/// "NBDMAGIC": the first eight bytes every server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle servers follow NBDMAGIC with it, and clients start
/// every option with it.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Oldstyle servers follow NBDMAGIC with this instead.
pub const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Starts every reply to an option.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Starts every request in the transmission phase.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Starts a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Starts a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Starts every request once extended headers are negotiated (32 bytes,
/// with a 64-bit length).
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Starts every reply chunk once extended headers are negotiated (32
/// bytes: the request's offset and a 64-bit payload length).
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// Handshake flags (server to client, 16 bits).
pub mod handshake_flags {
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    pub const NO_ZEROES: u16 = 1 << 1;
    pub const ALL: u16 = FIXED_NEWSTYLE | NO_ZEROES;
}

/// Client flags (client to server, 32 bits), the echo of the handshake flags.
pub mod client_flags {
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    pub const NO_ZEROES: u32 = 1 << 1;
    pub const ALL: u32 = FIXED_NEWSTYLE | NO_ZEROES;
}

/// Transmission flags (16 bits): what the export supports.
pub mod tx_flags {
    pub const HAS_FLAGS: u16 = 1 << 0;
    pub const READ_ONLY: u16 = 1 << 1;
    pub const SEND_FLUSH: u16 = 1 << 2;
    pub const SEND_FUA: u16 = 1 << 3;
    pub const ROTATIONAL: u16 = 1 << 4;
    pub const SEND_TRIM: u16 = 1 << 5;
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    pub const SEND_DF: u16 = 1 << 7;
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    pub const SEND_RESIZE: u16 = 1 << 9;
    pub const SEND_CACHE: u16 = 1 << 10;
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
    /// BLOCK_STATUS may carry a payload naming the contexts to report
    /// (extended headers only).
    pub const BLOCK_STATUS_PAYLOAD: u16 = 1 << 12;
}

/// Option codes.
pub mod opt {
    pub const EXPORT_NAME: u32 = 1;
    pub const ABORT: u32 = 2;
    pub const LIST: u32 = 3;
    pub const PEEK_EXPORT: u32 = 4;
    pub const STARTTLS: u32 = 5;
    pub const INFO: u32 = 6;
    pub const GO: u32 = 7;
    pub const STRUCTURED_REPLY: u32 = 8;
    pub const LIST_META_CONTEXT: u32 = 9;
    pub const SET_META_CONTEXT: u32 = 10;
    pub const EXTENDED_HEADERS: u32 = 11;
}

/// Option reply types. Errors have bit 31 set.
pub mod rep {
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    pub const META_CONTEXT: u32 = 4;
    pub const ERR_BIT: u32 = 1 << 31;
    pub const ERR_UNSUP: u32 = ERR_BIT | 1;
    pub const ERR_POLICY: u32 = ERR_BIT | 2;
    pub const ERR_INVALID: u32 = ERR_BIT | 3;
    pub const ERR_PLATFORM: u32 = ERR_BIT | 4;
    pub const ERR_TLS_REQD: u32 = ERR_BIT | 5;
    pub const ERR_UNKNOWN: u32 = ERR_BIT | 6;
    pub const ERR_SHUTDOWN: u32 = ERR_BIT | 7;
    pub const ERR_BLOCK_SIZE_REQD: u32 = ERR_BIT | 8;
    pub const ERR_TOO_BIG: u32 = ERR_BIT | 9;
    pub const ERR_EXT_HEADER_REQD: u32 = ERR_BIT | 10;

    /// Whether a reply type is an error.
    pub const fn is_error(t: u32) -> bool {
        t & ERR_BIT != 0
    }
}

/// Information types carried by NBD_REP_INFO and requested in INFO and GO.
pub mod info {
    pub const EXPORT: u16 = 0;
    pub const NAME: u16 = 1;
    pub const DESCRIPTION: u16 = 2;
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command types.
pub mod cmd {
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const DISC: u16 = 2;
    pub const FLUSH: u16 = 3;
    pub const TRIM: u16 = 4;
    pub const CACHE: u16 = 5;
    pub const WRITE_ZEROES: u16 = 6;
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags (16 bits).
pub mod cmd_flags {
    pub const FUA: u16 = 1 << 0;
    pub const NO_HOLE: u16 = 1 << 1;
    pub const DF: u16 = 1 << 2;
    pub const REQ_ONE: u16 = 1 << 3;
    pub const FAST_ZERO: u16 = 1 << 4;
    /// The header's length is the payload's length (extended headers only).
    pub const PAYLOAD_LEN: u16 = 1 << 5;
    pub const ALL: u16 = FUA | NO_HOLE | DF | REQ_ONE | FAST_ZERO | PAYLOAD_LEN;
}

/// Structured reply chunk flags and types.
pub mod chunk {
    pub const FLAG_DONE: u16 = 1 << 0;

    pub const NONE: u16 = 0;
    pub const OFFSET_DATA: u16 = 1;
    pub const OFFSET_HOLE: u16 = 2;
    pub const BLOCK_STATUS: u16 = 5;
    /// Block status with 64-bit lengths and flags (extended headers only).
    pub const BLOCK_STATUS_EXT: u16 = 6;
    pub const ERROR: u16 = (1 << 15) + 1;
    pub const ERROR_OFFSET: u16 = (1 << 15) + 2;

    /// Whether a chunk type is an error chunk (bit 15 set).
    pub const fn is_error(t: u16) -> bool {
        t & (1 << 15) != 0
    }
}

/// Flags of the base:allocation meta context.
pub mod allocation {
    pub const HOLE: u32 = 1 << 0;
    pub const ZERO: u32 = 1 << 1;
}

/// The meta context every server that does block status offers.
pub const CONTEXT_BASE_ALLOCATION: &str = "base:allocation";

/// The default TCP port.
pub const DEFAULT_PORT: u16 = 10809;
