//! The filters built into our nbdkit, one file per filter, named as
//! nbdkit names them (`cow.rs` is nbdkit-cow-filter(1), `multi_conn.rs`
//! is nbdkit-multi-conn-filter(1)).
//!
//! Each file declares its filter once, as a `FILTER` [`FilterSpec`]: its
//! name, every key it takes with a one-line description (so that the
//! chain builder can hand each `key=value` to the layer that declares it),
//! and how to make it from its parameters. A filter implements
//! [`crate::chain::Filter`] and writes only the calls it changes; the rest
//! pass to the layer below. Helpers shared by several filters live in
//! files named for what they do (`extents.rs`, `window.rs`, `blocks.rs`).

mod blocks;
pub mod cache;
pub mod cow;
pub mod extents;
pub mod offset;
pub mod partition;
pub mod readahead;
pub mod tar;
pub mod tls_fallback;
pub mod truncate;
mod window;

use std::sync::Arc;

use crate::chain::Filter;
use crate::params::{Param, Params};

/// How a filter is made from its parameters, given whether the server is
/// read-only (`-r`).
pub type OpenFilter = fn(&mut Params, bool) -> Result<Arc<dyn Filter>, String>;

/// A filter's declaration.
pub struct FilterSpec {
    pub name: &'static str,
    /// Every key the filter takes, with a one-line description.
    pub params: &'static [Param],
    pub open: OpenFilter,
}

impl FilterSpec {
    /// Whether `key` is one of this filter's.
    pub fn knows(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| *k == key)
    }
}

/// Every built-in filter.
pub const FILTERS: &[FilterSpec] = &[
    offset::FILTER,
    truncate::FILTER,
    partition::FILTER,
    tar::FILTER,
    cow::FILTER,
    cache::FILTER,
    readahead::FILTER,
    tls_fallback::FILTER,
];

/// The filter called `name`, or nbdkit-style words for its absence.
pub fn find(name: &str) -> Result<&'static FilterSpec, String> {
    FILTERS.iter().find(|f| f.name == name).ok_or_else(|| {
        let names: Vec<&str> = FILTERS.iter().map(|f| f.name).collect();
        format!(
            "cannot open filter \"{name}\": this nbdkit supports only the filters: {}",
            names.join(", ")
        )
    })
}
