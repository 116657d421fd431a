//! The server's shared parts, used by the `nbdkit` binary (`main.rs`) and
//! by the xnbd tools (`xnbd-server`, `xnbd-bgctl`, see `xnbd/`): the
//! command line of nbdkit, serving a connection, listeners, messages, and
//! the plugins and filters.

pub mod backend;
pub mod cli;
pub mod conn;
pub mod listen;
pub mod log;
pub mod process;
pub mod tls;
pub mod xnbd;
