//! The protocol's vocabulary as types: commands, command flags, options,
//! option reply types and structured reply chunk types. Each has ONE table
//! (the `vocab!` invocation below) giving its variants, wire values and
//! names; the numeric constants in [`super::consts`] are the same numbers,
//! kept for the C API and for encoders.
//!
//! Decoding never fails: a value outside the table becomes `Unknown(v)`, so
//! a server can still answer an unknown command with EINVAL and a client can
//! still report an unknown reply type as a protocol error.

use super::consts::{chunk, cmd, cmd_flags, opt, rep};

/// Declares an enum with an `Unknown` variant, its wire conversions and its
/// name table.
macro_rules! vocab {
    (
        $(#[$meta:meta])*
        $name:ident: $repr:ty, unknown = $unknown:literal {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr, $wire_name:literal;)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value outside proto.md's table, kept as received.
            Unknown($repr),
        }

        impl $name {
            /// Every known variant, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value on the wire.
            pub const fn to_wire(self) -> $repr {
                match self {
                    $($name::$variant => $value,)*
                    $name::Unknown(v) => v,
                }
            }

            /// Decodes a wire value; unknown values are kept.
            pub const fn from_wire(v: $repr) -> Self {
                $(if v == $value { return $name::$variant; })*
                $name::Unknown(v)
            }

            /// proto.md's name, for messages and debug output.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $wire_name,)*
                    $name::Unknown(_) => $unknown,
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                $name::from_wire(v)
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> Self {
                v.to_wire()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

vocab! {
    /// A command of the transmission phase (`NBD_CMD_*`).
    Command: u16, unknown = "unknown command" {
        Read = cmd::READ, "NBD_CMD_READ";
        Write = cmd::WRITE, "NBD_CMD_WRITE";
        Disc = cmd::DISC, "NBD_CMD_DISC";
        Flush = cmd::FLUSH, "NBD_CMD_FLUSH";
        Trim = cmd::TRIM, "NBD_CMD_TRIM";
        Cache = cmd::CACHE, "NBD_CMD_CACHE";
        WriteZeroes = cmd::WRITE_ZEROES, "NBD_CMD_WRITE_ZEROES";
        BlockStatus = cmd::BLOCK_STATUS, "NBD_CMD_BLOCK_STATUS";
    }
}

impl Command {
    /// The short name libnbd uses in its messages ("pread: command
    /// failed" and so on): the C call's name without `nbd_`.
    pub const fn short_name(self) -> &'static str {
        match self {
            Command::Read => "read",
            Command::Write => "write",
            Command::Flush => "flush",
            Command::Trim => "trim",
            Command::Cache => "cache",
            Command::WriteZeroes => "zero",
            Command::BlockStatus => "block-status",
            Command::Disc | Command::Unknown(_) => "command",
        }
    }

    /// Whether the command changes the export's contents.
    pub const fn writes(self) -> bool {
        matches!(self, Command::Write | Command::Trim | Command::WriteZeroes)
    }
}

vocab! {
    /// An option of the negotiation phase (`NBD_OPT_*`).
    OptionCode: u32, unknown = "unknown option" {
        ExportName = opt::EXPORT_NAME, "NBD_OPT_EXPORT_NAME";
        Abort = opt::ABORT, "NBD_OPT_ABORT";
        List = opt::LIST, "NBD_OPT_LIST";
        PeekExport = opt::PEEK_EXPORT, "NBD_OPT_PEEK_EXPORT";
        StartTls = opt::STARTTLS, "NBD_OPT_STARTTLS";
        Info = opt::INFO, "NBD_OPT_INFO";
        Go = opt::GO, "NBD_OPT_GO";
        StructuredReply = opt::STRUCTURED_REPLY, "NBD_OPT_STRUCTURED_REPLY";
        ListMetaContext = opt::LIST_META_CONTEXT, "NBD_OPT_LIST_META_CONTEXT";
        SetMetaContext = opt::SET_META_CONTEXT, "NBD_OPT_SET_META_CONTEXT";
        ExtendedHeaders = opt::EXTENDED_HEADERS, "NBD_OPT_EXTENDED_HEADERS";
    }
}

vocab! {
    /// The type of a reply to an option (`NBD_REP_*`). Errors have bit 31
    /// set; an unknown error is still an error ([`ReplyType::is_error`]).
    ReplyType: u32, unknown = "unknown reply" {
        Ack = rep::ACK, "NBD_REP_ACK";
        Server = rep::SERVER, "NBD_REP_SERVER";
        Info = rep::INFO, "NBD_REP_INFO";
        MetaContext = rep::META_CONTEXT, "NBD_REP_META_CONTEXT";
        ErrUnsup = rep::ERR_UNSUP, "NBD_REP_ERR_UNSUP";
        ErrPolicy = rep::ERR_POLICY, "NBD_REP_ERR_POLICY";
        ErrInvalid = rep::ERR_INVALID, "NBD_REP_ERR_INVALID";
        ErrPlatform = rep::ERR_PLATFORM, "NBD_REP_ERR_PLATFORM";
        ErrTlsReqd = rep::ERR_TLS_REQD, "NBD_REP_ERR_TLS_REQD";
        ErrUnknown = rep::ERR_UNKNOWN, "NBD_REP_ERR_UNKNOWN";
        ErrShutdown = rep::ERR_SHUTDOWN, "NBD_REP_ERR_SHUTDOWN";
        ErrBlockSizeReqd = rep::ERR_BLOCK_SIZE_REQD, "NBD_REP_ERR_BLOCK_SIZE_REQD";
        ErrTooBig = rep::ERR_TOO_BIG, "NBD_REP_ERR_TOO_BIG";
        ErrExtHeaderReqd = rep::ERR_EXT_HEADER_REQD, "NBD_REP_ERR_EXT_HEADER_REQD";
    }
}

impl ReplyType {
    /// Whether the type is an error (bit 31), known or not.
    pub const fn is_error(self) -> bool {
        rep::is_error(self.to_wire())
    }
}

vocab! {
    /// The type of a structured reply chunk (`NBD_REPLY_TYPE_*`). Errors
    /// have bit 15 set; an unknown error is still an error.
    ChunkType: u16, unknown = "unknown chunk type" {
        None = chunk::NONE, "NBD_REPLY_TYPE_NONE";
        OffsetData = chunk::OFFSET_DATA, "NBD_REPLY_TYPE_OFFSET_DATA";
        OffsetHole = chunk::OFFSET_HOLE, "NBD_REPLY_TYPE_OFFSET_HOLE";
        BlockStatus = chunk::BLOCK_STATUS, "NBD_REPLY_TYPE_BLOCK_STATUS";
        BlockStatusExt = chunk::BLOCK_STATUS_EXT, "NBD_REPLY_TYPE_BLOCK_STATUS_EXT";
        Error = chunk::ERROR, "NBD_REPLY_TYPE_ERROR";
        ErrorOffset = chunk::ERROR_OFFSET, "NBD_REPLY_TYPE_ERROR_OFFSET";
    }
}

impl ChunkType {
    /// Whether the type is an error (bit 15), known or not.
    pub const fn is_error(self) -> bool {
        chunk::is_error(self.to_wire())
    }
}

/// Command flags (`NBD_CMD_FLAG_*`): a set of bits, unknown ones kept so
/// that a server can refuse them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CmdFlags(pub u16);

impl CmdFlags {
    pub const FUA: CmdFlags = CmdFlags(cmd_flags::FUA);
    pub const NO_HOLE: CmdFlags = CmdFlags(cmd_flags::NO_HOLE);
    pub const DF: CmdFlags = CmdFlags(cmd_flags::DF);
    pub const REQ_ONE: CmdFlags = CmdFlags(cmd_flags::REQ_ONE);
    pub const FAST_ZERO: CmdFlags = CmdFlags(cmd_flags::FAST_ZERO);
    pub const PAYLOAD_LEN: CmdFlags = CmdFlags(cmd_flags::PAYLOAD_LEN);
    /// Every flag proto.md defines.
    pub const ALL: CmdFlags = CmdFlags(cmd_flags::ALL);

    /// The flags' one name table.
    const NAMES: [(CmdFlags, &'static str); 6] = [
        (CmdFlags::FUA, "NBD_CMD_FLAG_FUA"),
        (CmdFlags::NO_HOLE, "NBD_CMD_FLAG_NO_HOLE"),
        (CmdFlags::DF, "NBD_CMD_FLAG_DF"),
        (CmdFlags::REQ_ONE, "NBD_CMD_FLAG_REQ_ONE"),
        (CmdFlags::FAST_ZERO, "NBD_CMD_FLAG_FAST_ZERO"),
        (CmdFlags::PAYLOAD_LEN, "NBD_CMD_FLAG_PAYLOAD_LEN"),
    ];

    pub const fn empty() -> Self {
        CmdFlags(0)
    }
    pub const fn bits(self) -> u16 {
        self.0
    }
    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: CmdFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: CmdFlags) -> bool {
        self.0 & other.0 != 0
    }
    /// The bits proto.md does not define.
    pub const fn unknown(self) -> CmdFlags {
        CmdFlags(self.0 & !cmd_flags::ALL)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The names of the flags set, unknown bits as one hex number.
    pub fn names(self) -> Vec<String> {
        let mut v: Vec<String> = Self::NAMES
            .iter()
            .filter(|(f, _)| self.contains(*f))
            .map(|(_, n)| (*n).to_string())
            .collect();
        if !self.unknown().is_empty() {
            v.push(format!("{:#x}", self.unknown().0));
        }
        v
    }
}

impl std::ops::BitOr for CmdFlags {
    type Output = CmdFlags;
    fn bitor(self, o: CmdFlags) -> CmdFlags {
        CmdFlags(self.0 | o.0)
    }
}

impl std::ops::BitAnd for CmdFlags {
    type Output = CmdFlags;
    fn bitand(self, o: CmdFlags) -> CmdFlags {
        CmdFlags(self.0 & o.0)
    }
}

impl std::ops::Not for CmdFlags {
    type Output = CmdFlags;
    fn not(self) -> CmdFlags {
        CmdFlags(!self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_keep_unknown_values() {
        for &c in Command::ALL {
            assert_eq!(Command::from_wire(c.to_wire()), c);
            assert!(c.name().starts_with("NBD_CMD_"));
        }
        assert_eq!(Command::ALL.len(), 8);
        assert_eq!(Command::from_wire(6), Command::WriteZeroes);
        assert_eq!(Command::from_wire(99), Command::Unknown(99));
        assert_eq!(Command::Unknown(99).to_wire(), 99);
        assert_eq!(Command::Unknown(99).name(), "unknown command");
        assert_eq!(Command::WriteZeroes.short_name(), "zero");
        assert_eq!(Command::BlockStatus.to_string(), "NBD_CMD_BLOCK_STATUS");
    }

    #[test]
    fn options_replies_chunks_round_trip() {
        for &o in OptionCode::ALL {
            assert_eq!(OptionCode::from_wire(o.to_wire()), o);
        }
        for &r in ReplyType::ALL {
            assert_eq!(ReplyType::from_wire(r.to_wire()), r);
            assert_eq!(r.is_error(), r.name().starts_with("NBD_REP_ERR_"));
        }
        for &t in ChunkType::ALL {
            assert_eq!(ChunkType::from_wire(t.to_wire()), t);
        }
        assert_eq!(OptionCode::from_wire(1000), OptionCode::Unknown(1000));
        assert!(ReplyType::from_wire(rep::ERR_BIT | 100).is_error());
        assert!(!ReplyType::from_wire(100).is_error());
        assert!(ChunkType::from_wire(0x8000 | 7).is_error());
        assert!(!ChunkType::from_wire(7).is_error());
    }

    #[test]
    fn flags() {
        let f = CmdFlags::FUA | CmdFlags::FAST_ZERO | CmdFlags(0x400);
        assert!(f.contains(CmdFlags::FUA));
        assert!(!f.contains(CmdFlags::DF));
        assert_eq!(f.unknown(), CmdFlags(0x400));
        assert_eq!(
            f.names(),
            vec!["NBD_CMD_FLAG_FUA", "NBD_CMD_FLAG_FAST_ZERO", "0x400"]
        );
        assert!((CmdFlags::ALL & CmdFlags(0x400)).is_empty());
    }
}
