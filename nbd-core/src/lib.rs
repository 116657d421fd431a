//! The Network Block Device protocol, for clients and servers, without I/O.
//!
//! This crate owns no socket, thread or clock. Its contract, in the manner of
//! quinn-proto and rustls:
//!
//! - [`wire`] turns protocol messages into bytes and back. Parsers never
//!   panic: short input is `None` or an error, never an index out of range.
//!   Its vocabulary (commands, flags, options, reply and chunk types) is
//!   typed, one table each, in [`wire::vocab`].
//! - [`errno`] is the one errno policy: the NBD error a server sends for a
//!   backend's errno, and the errno a client reports for an NBD error.
//! - [`client`] is the client as a state machine: it is fed the bytes the
//!   server sent, it is asked for the bytes to send, and it says which way it
//!   wants to go next. The C API (sync and AIO) drives it.
//! - [`server`] is the server's side of a connection: handshake and option
//!   negotiation as a state machine of the same shape, then request
//!   validation and reply encoding for whichever server binary does the I/O.
//! - [`uri`] parses and builds NBD URIs (`nbd://`, `nbds+unix://`, ...).
//! - [`spin`] holds the rules for a short busy-poll before a blocking wait
//!   (back-off and a per-process limit); the polling is the callers'.
//!
//! The protocol is NetworkBlockDevice/nbd's doc/proto.md; section names in
//! comments refer to it.
#![forbid(unsafe_code)]

pub mod client;
pub mod errno;
pub mod limits;
pub mod server;
pub mod spin;
pub mod uri;
pub mod wire;
