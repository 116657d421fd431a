//! The server's shared parts, used by the `nbdkit` binary (`main.rs`) and
//! by the xnbd tools (`xnbd-server`, `xnbd-bgctl`, see `xnbd/`): the
//! command line of nbdkit, the backend chain with its plugins and filters,
//! serving a connection, listeners, messages and the process.

pub mod chain;
pub mod cli;
pub mod conn;
pub mod cplugin;
pub mod filters;
pub mod hangup;
pub mod listen;
pub mod log;
pub mod manpage;
pub mod manual;
pub mod params;
pub mod password;
pub mod payload_pool;
pub mod plugins;
pub mod process;
pub mod reply_batch;
pub mod scratch;
pub mod sendfile;
pub mod spin;
pub mod tls;
pub mod xnbd;
