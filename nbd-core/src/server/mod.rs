//! The server's side of a connection, without I/O.
//!
//! - [`backend`]: a backend as one connection sees it, what requests run
//!   against.
//! - [`negotiate`]: handshake and option haggling as a state machine.
//! - [`request`]: what follows a request header, validation, execution.
//! - [`reply`]: encoding simple replies and structured chunks.
//!
//! A server binary drives [`negotiate::Negotiation`] over its socket, then
//! loops: read a 28-byte header, [`request::payload`] to know what follows,
//! [`request::validate`], [`request::execute`], [`reply::encode_reply`],
//! and one vectored write of the encoded reply plus any READ data.

pub mod backend;
pub mod negotiate;
pub mod reply;
pub mod request;

pub use backend::{Backend, ConnectionInfo, Error, Extents, Peer, Read, ZeroFlags};
pub use negotiate::{Caps, ExportDetails, Exports, Negotiated, Negotiation, Want};
pub use request::{Payload, TxContext};
