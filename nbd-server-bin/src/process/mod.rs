//! The server process, shared by `nbdkit` and `xnbd-server`: which
//! signals it takes and how (`signals`), going into the background
//! (`daemon`) and the pid file (`pidfile`). Binding and accepting are
//! `crate::listen`.

pub mod daemon;
pub mod pidfile;
pub mod signals;
