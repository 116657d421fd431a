//! The server process, shared by `nbdkit` and `xnbd-server`: which
//! signals it takes and how (`signals`), going into the background
//! (`daemon`), the pid file (`pidfile`) and a filter's request to end
//! the server (`shutdown`), `-u`/`-g`/`--swap` (`privileges`) and
//! `--selinux-label` (`selinux`). Binding and accepting are
//! `crate::listen`.

pub mod daemon;
pub mod live;
pub mod pidfile;
pub mod privileges;
pub mod selinux;
pub mod shutdown;
pub mod signals;
