//! The hand-written bodies of the API calls, a module per group. Each body
//! has the name of its call without `nbd_` and is called by the generated
//! wrapper in `generated/exports.rs` once the handle, the pointers and the
//! handle's state have been checked.

pub mod aio;
pub mod aio_connect;
pub mod connect;
pub mod data;
pub mod handle;
pub mod info;
pub mod opt;
pub mod settings;
pub mod stats;
pub mod tls;
pub mod uri;
