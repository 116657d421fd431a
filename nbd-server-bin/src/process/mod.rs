//! The server process, shared by `nbdkit` and `xnbd-server`: which
//! signals it takes and how (`signals`), going into the background
//! (`daemon`), the pid file (`pidfile`) and a filter's request to end
//! the server (`shutdown`). Binding and accepting are
//! `crate::listen`.

pub mod daemon;
pub mod live;
pub mod pidfile;
pub mod shutdown;
pub mod signals;
