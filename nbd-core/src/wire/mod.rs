//! The NBD wire format: constants, a bounds-checked reader, and one module
//! per message family. Every multi-byte number is big-endian (network order).

pub mod codec;
pub mod consts;
pub mod handshake;
pub mod option;
pub mod reply;
pub mod request;
pub mod vocab;

pub use codec::{Reader, WireError};
pub use vocab::{ChunkType, CmdFlags, Command, OptionCode, ReplyType};
