//! What crossed the connection so far, counted as libnbd counts it
//! (nbd_stats_bytes_sent(3) and friends).
//!
//! - Bytes are the NBD protocol's plaintext bytes: every byte handed to
//!   the driver to send, every byte the driver fed back as received. With
//!   TLS this is less than what went over the socket (records, the TLS
//!   handshake itself are not counted).
//! - A chunk is a unit that starts with a magic number and cannot be split
//!   further. Sent: each option and each request (a WRITE with its
//!   payload is one). Received: the greeting, and each simple reply or
//!   structured reply chunk. The client flags and the server's option
//!   replies are not counted, as in libnbd.

/// The four counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub chunks_sent: u64,
    pub chunks_received: u64,
}
