//! What the fuzz targets share: cutting a byte stream into pieces, the
//! scripted client of `client_replies`, and the checker of
//! `server_stream`. Each target in `fuzz_targets/` is a thin wrapper.

pub mod client_script;
pub mod server_check;
pub mod splits;
