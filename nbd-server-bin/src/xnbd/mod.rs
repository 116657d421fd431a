//! The xnbd tools on our core: `xnbd-server` (target, copy-on-write
//! target, proxy with a persistent cache) and `xnbd-bgctl` (the proxy's
//! control client). The cache itself is the `xnbd-cache` filter.

pub mod bgctl;
pub mod control;
pub mod progress;
pub mod server;
