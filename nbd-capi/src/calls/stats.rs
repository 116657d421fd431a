//! nbd_stats_*: what crossed the connection so far, as the core counts it
//! (`nbd_core::client::Stats`: plaintext protocol bytes; chunks as libnbd
//! counts them). Before connecting every counter is 0; after the
//! connection ends they keep their last values.

use crate::errors::Error;
use crate::handle::{nbd_handle, Held};
use nbd_core::client::Stats;

fn stats(g: &Held<'_>) -> Stats {
    g.conn
        .as_ref()
        .map(|c| c.client.stats())
        .unwrap_or_default()
}

pub fn stats_bytes_sent(_h: &nbd_handle, g: &mut Held<'_>) -> Result<u64, Error> {
    Ok(stats(g).bytes_sent)
}

pub fn stats_chunks_sent(_h: &nbd_handle, g: &mut Held<'_>) -> Result<u64, Error> {
    Ok(stats(g).chunks_sent)
}

pub fn stats_bytes_received(_h: &nbd_handle, g: &mut Held<'_>) -> Result<u64, Error> {
    Ok(stats(g).bytes_received)
}

pub fn stats_chunks_received(_h: &nbd_handle, g: &mut Held<'_>) -> Result<u64, Error> {
    Ok(stats(g).chunks_received)
}
