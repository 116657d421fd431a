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

/// Capabilities a filter answers itself, without asking the layers below:
/// `answers!(true: can_write, can_flush; false: can_fast_zero);` in an
/// `impl FilterHandle` writes `fn can_write(&self, _: &dyn Backend) ->
/// Result<bool> { Ok(true) }` and so on. A capability that depends on the
/// layers below or on the filter's state is written out.
macro_rules! answers {
    ($($value:literal: $($cap:ident),+);+ $(;)?) => {
        $($(
            fn $cap(
                &self,
                _: &dyn nbd_core::server::backend::Backend,
            ) -> nbd_core::server::backend::Result<bool> {
                Ok($value)
            }
        )+)+
    };
}

pub mod blocks;
pub mod blocksize;
pub mod blocksize_policy;
pub mod cache;
pub mod cacheextents;
pub mod checkwrite;
pub mod cow;
pub mod ddrescue;
pub mod delay;
pub mod error;
pub mod exitlast;
pub mod exitwhen;
pub mod exportname;
pub mod ext2;
pub mod extentlist;
pub mod extents;
pub mod fua;
pub mod gzip;
pub mod ip;
pub mod limit;
pub mod log;
pub mod luks;
pub mod multi_conn;
pub mod nocache;
pub mod noextents;
pub mod nofilter;
pub mod noparallel;
pub mod nozero;
pub mod offset;
pub mod partition;
pub mod pause;
pub mod protect;
pub mod rate;
pub mod readahead;
pub mod retry;
pub mod retry_request;
pub mod scan;
pub mod stats;
pub mod swab;
pub mod tar;
pub mod tls_fallback;
pub mod truncate;
pub mod window;
pub mod xnbd_cache;
pub mod xz;
pub mod zeroes;

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
    nozero::FILTER,
    nocache::FILTER,
    noextents::FILTER,
    noparallel::FILTER,
    multi_conn::FILTER,
    fua::FILTER,
    blocksize::FILTER,
    blocksize_policy::FILTER,
    protect::FILTER,
    readahead::FILTER,
    error::FILTER,
    delay::FILTER,
    retry::FILTER,
    log::FILTER,
    stats::FILTER,
    limit::FILTER,
    exitlast::FILTER,
    exitwhen::FILTER,
    xnbd_cache::FILTER,
    ip::FILTER,
    tls_fallback::FILTER,
    cacheextents::FILTER,
    checkwrite::FILTER,
    ddrescue::FILTER,
    exportname::FILTER,
    extentlist::FILTER,
    nofilter::FILTER,
    pause::FILTER,
    rate::FILTER,
    retry_request::FILTER,
    scan::FILTER,
    swab::FILTER,
    ext2::FILTER,
    gzip::FILTER,
    xz::FILTER,
    luks::FILTER,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::literal_keys;

    /// Each filter's source file, by filter name.
    const SOURCES: &[(&str, &str)] = &[
        ("offset", include_str!("offset.rs")),
        ("truncate", include_str!("truncate.rs")),
        ("partition", include_str!("partition.rs")),
        ("tar", include_str!("tar.rs")),
        ("cow", include_str!("cow.rs")),
        ("cache", include_str!("cache.rs")),
        ("readahead", include_str!("readahead.rs")),
        ("nozero", include_str!("nozero.rs")),
        ("nocache", include_str!("nocache.rs")),
        ("noextents", include_str!("noextents.rs")),
        ("noparallel", include_str!("noparallel.rs")),
        ("multi-conn", include_str!("multi_conn.rs")),
        ("fua", include_str!("fua.rs")),
        ("blocksize", include_str!("blocksize.rs")),
        ("blocksize-policy", include_str!("blocksize_policy.rs")),
        ("protect", include_str!("protect.rs")),
        ("error", include_str!("error.rs")),
        ("delay", include_str!("delay.rs")),
        ("retry", include_str!("retry.rs")),
        ("log", include_str!("log.rs")),
        ("stats", include_str!("stats.rs")),
        ("limit", include_str!("limit.rs")),
        ("exitlast", include_str!("exitlast.rs")),
        ("exitwhen", include_str!("exitwhen.rs")),
        ("ip", include_str!("ip.rs")),
        ("xnbd-cache", include_str!("xnbd_cache.rs")),
        ("tls-fallback", include_str!("tls_fallback.rs")),
        ("nofilter", include_str!("nofilter.rs")),
        ("swab", include_str!("swab.rs")),
        ("checkwrite", include_str!("checkwrite.rs")),
        ("cacheextents", include_str!("cacheextents.rs")),
        ("extentlist", include_str!("extentlist.rs")),
        ("exportname", include_str!("exportname.rs")),
        ("ddrescue", include_str!("ddrescue.rs")),
        ("retry-request", include_str!("retry_request.rs")),
        ("rate", include_str!("rate.rs")),
        ("pause", include_str!("pause.rs")),
        ("scan", include_str!("scan.rs")),
        ("ext2", include_str!("ext2/mod.rs")),
        ("gzip", include_str!("gzip.rs")),
        ("xz", include_str!("xz.rs")),
        ("luks", include_str!("luks.rs")),
    ];

    /// Each filter declares, with a description, every key its code
    /// takes, and takes every key it declares, each once.
    #[test]
    fn filter_keys_declared() {
        for f in FILTERS {
            let src = SOURCES
                .iter()
                .find(|(n, _)| *n == f.name)
                .unwrap_or_else(|| panic!("filter {}: source not checked", f.name))
                .1;
            let mut declared = std::collections::BTreeSet::new();
            for (k, help) in f.params {
                assert!(!help.is_empty(), "{}: {k} has no description", f.name);
                assert!(declared.insert(k.to_string()), "{}: {k} twice", f.name);
            }
            assert_eq!(
                literal_keys(src),
                declared,
                "{}: keys taken vs declared",
                f.name
            );
        }
    }

    #[test]
    fn unknown_filters_in_nbdkits_words() {
        let e = find("nosuch").err().unwrap();
        assert!(e.starts_with("cannot open filter \"nosuch\""), "{e}");
    }
}
