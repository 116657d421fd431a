//! Filters: backends wrapping a backend, as nbdkit's filters.
//!
//! Each filter has a name, the parameter keys it takes (so that
//! [`super::open_stack`] can hand every `key=value` to the layer that
//! knows it) and a constructor over the layer below. A filter overrides
//! only what it changes; everything else delegates through
//! [`Backend::next`]. Filters that pass data through unchanged also pass
//! zero-copy reads ([`Backend::pread_lend`]) through.

pub mod conn;
pub mod cow;
pub mod flags;
pub mod inject;
pub mod observe;
pub mod tls_fallback;
pub mod window;
pub mod xnbd_cache;

use std::sync::Arc;

use nbd_core::server::backend::{Backend, Extents, Result};

use super::Params;

pub type Open =
    fn(&mut Params, Arc<dyn Backend>, bool) -> std::result::Result<Arc<dyn Backend>, String>;

pub struct FilterSpec {
    pub name: &'static str,
    /// Keys taken; an entry ending in '*' is a prefix.
    pub keys: &'static [&'static str],
    pub open: Open,
}

impl FilterSpec {
    pub fn knows(&self, key: &str) -> bool {
        self.keys.iter().any(|k| match k.strip_suffix('*') {
            Some(p) => key.starts_with(p),
            None => *k == key,
        })
    }
}

fn arc<B: Backend + 'static>(
    r: std::result::Result<B, String>,
) -> std::result::Result<Arc<dyn Backend>, String> {
    r.map(|b| Arc::new(b) as Arc<dyn Backend>)
}

pub const FILTERS: &[FilterSpec] = &[
    FilterSpec {
        name: "offset",
        keys: &["offset", "range"],
        open: |p, n, _| arc(window::Window::offset(p, n)),
    },
    FilterSpec {
        name: "truncate",
        keys: &["truncate", "round-up", "round-down"],
        open: |p, n, _| arc(window::Truncate::open(p, n)),
    },
    FilterSpec {
        name: "partition",
        keys: &["partition"],
        open: |p, n, _| arc(window::Window::partition(p, n)),
    },
    FilterSpec {
        name: "tar",
        keys: &["tar-entry", "tar-limit"],
        open: |p, n, _| arc(window::Window::tar(p, n)),
    },
    FilterSpec {
        name: "cow",
        keys: &["cow-block-size", "cow-on-cache", "cow-on-read"],
        open: |p, n, _| arc(cow::Cow::open(p, n)),
    },
    FilterSpec {
        name: "cache",
        keys: &[
            "cache",
            "cache-max-size",
            "cache-high-threshold",
            "cache-low-threshold",
            "cache-on-read",
            "cache-min-block-size",
        ],
        open: |p, n, _| arc(cow::Cache::open(p, n)),
    },
    FilterSpec {
        name: "nozero",
        keys: &["zeromode", "fastzeromode"],
        open: |p, n, _| arc(flags::NoZero::open(p, n)),
    },
    FilterSpec {
        name: "nocache",
        keys: &["cachemode"],
        open: |p, n, _| arc(flags::NoCache::open(p, n)),
    },
    FilterSpec {
        name: "noextents",
        keys: &[],
        open: |_, n, _| arc(Ok(flags::NoExtents(n))),
    },
    FilterSpec {
        name: "noparallel",
        keys: &["serialize", "serialise"],
        open: |p, n, _| arc(flags::NoParallel::open(p, n)),
    },
    FilterSpec {
        name: "multi-conn",
        keys: &[
            "multi-conn-mode",
            "multi-conn-track-dirty",
            "multi-conn-exportname",
        ],
        open: |p, n, _| arc(flags::MultiConn::open(p, n)),
    },
    FilterSpec {
        name: "fua",
        keys: &["fuamode"],
        open: |p, n, _| arc(flags::Fua::open(p, n)),
    },
    FilterSpec {
        name: "blocksize",
        keys: &["minblock", "maxdata", "maxlen"],
        open: |p, n, _| arc(flags::BlockSize::open(p, n)),
    },
    FilterSpec {
        name: "blocksize-policy",
        keys: &["blocksize-*"],
        open: |p, n, _| arc(flags::BlockSizePolicy::open(p, n)),
    },
    FilterSpec {
        name: "protect",
        keys: &["protect"],
        open: |p, n, _| arc(flags::Protect::open(p, n)),
    },
    FilterSpec {
        name: "readahead",
        keys: &[],
        open: |_, n, _| arc(Ok(cow::Readahead::new(n))),
    },
    FilterSpec {
        name: "error",
        keys: &["error*"],
        open: |p, n, _| arc(inject::ErrorFilter::open(p, n)),
    },
    FilterSpec {
        name: "delay",
        keys: &["rdelay", "wdelay", "delay-*"],
        open: |p, n, _| arc(inject::Delay::open(p, n)),
    },
    FilterSpec {
        name: "retry",
        keys: &[
            "retries",
            "retry-delay",
            "retry-exponential",
            "retry-readonly",
        ],
        open: |p, n, _| arc(inject::Retry::open(p, n)),
    },
    FilterSpec {
        name: "log",
        keys: &["logfile", "logappend", "logscript"],
        open: |p, n, _| arc(observe::Log::open(p, n)),
    },
    FilterSpec {
        name: "stats",
        keys: &["statsfile", "statsappend", "statsthreshold"],
        open: |p, n, _| arc(observe::Stats::open(p, n)),
    },
    FilterSpec {
        name: "limit",
        keys: &["limit"],
        open: |p, n, _| arc(conn::Limit::open(p, n)),
    },
    FilterSpec {
        name: "exitlast",
        keys: &[],
        open: |_, n, _| arc(Ok(conn::ExitLast::new(n))),
    },
    FilterSpec {
        name: "exitwhen",
        keys: &["exit-when-*"],
        open: |p, n, _| arc(conn::ExitWhen::open(p, n)),
    },
    FilterSpec {
        name: "xnbd-cache",
        keys: &["cache", "bitmap", "clear-bitmap", "fetch-on-read"],
        open: |p, n, _| arc(xnbd_cache::XnbdCache::open(p, n)),
    },
    FilterSpec {
        name: "ip",
        keys: &["allow", "deny", "ip-rules"],
        open: |p, n, _| arc(conn::Ip::open(p, n)),
    },
    FilterSpec {
        name: "tls-fallback",
        keys: &["tlsreadme"],
        open: |p, n, _| arc(tls_fallback::TlsFallback::open(p, n)),
    },
];

pub fn find(name: &str) -> std::result::Result<&'static FilterSpec, String> {
    FILTERS.iter().find(|f| f.name == name).ok_or_else(|| {
        let names: Vec<&str> = FILTERS.iter().map(|f| f.name).collect();
        format!(
            "cannot open filter \"{name}\": this nbdkit supports only the filters: {}",
            names.join(", ")
        )
    })
}

/// Asks `inner` for the extents of `count` bytes at `inner_offset` and adds
/// them to `sink` at `outer_offset` (for filters that move offsets).
pub fn extents_at(
    inner: &dyn Backend,
    count: u32,
    inner_offset: u64,
    outer_offset: u64,
    sink: &mut Extents,
) -> Result<()> {
    let mut e = Extents::new();
    e.reset(inner_offset, count, false);
    inner.extents(count, inner_offset, &mut e)?;
    let mut pos = outer_offset;
    for &(len, flags) in e.as_slice() {
        if !sink.add(pos, len, flags)? {
            return Ok(());
        }
        pos += len;
    }
    if pos < outer_offset + count as u64 {
        sink.add(pos, outer_offset + count as u64 - pos, 0)?;
    }
    Ok(())
}

/// Parses "N%" or a fraction "0.N" (or "1/N"), as nbdkit_parse_probability.
pub fn parse_probability(v: &str) -> std::result::Result<f64, String> {
    let bad = || format!("could not parse probability: {v}");
    let t = v.trim();
    let p = if let Some(pc) = t.strip_suffix('%') {
        pc.trim().parse::<f64>().map_err(|_| bad())? / 100.0
    } else if let Some((a, b)) = t.split_once('/') {
        let a: f64 = a.trim().parse().map_err(|_| bad())?;
        let b: f64 = b.trim().parse().map_err(|_| bad())?;
        if b == 0.0 {
            return Err(bad());
        }
        a / b
    } else {
        t.parse::<f64>().map_err(|_| bad())?
    };
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return Err(format!("probability out of range (0..1 or 0%..100%): {v}"));
    }
    Ok(p)
}

/// Parses a delay: seconds (fractional allowed) or with a unit suffix
/// `ms`, `us`, `ns`, `s`.
pub fn parse_duration(v: &str) -> std::result::Result<std::time::Duration, String> {
    let t = v.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(f) if f >= 0.0 && f.is_finite() => Ok(std::time::Duration::from_secs_f64(f * scale)),
        _ => Err(format!("could not parse duration: {v}")),
    }
}
