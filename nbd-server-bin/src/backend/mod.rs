//! Plugins: the bottom layer of a backend stack. One file per plugin.
//!
//! Parameters follow nbdkit: `key=value`, plus one bare value that goes to
//! the plugin's "magic" key (`file` for file, `size` for memory).

/// Capabilities a backend always has: `supports!(can_write, can_flush)`
/// writes `fn can_write(&self) -> Result<bool> { Ok(true) }` and so on.
/// A capability that depends on the backend's state is written out.
macro_rules! supports {
    ($($cap:ident),* $(,)?) => {
        $(
            fn $cap(&self) -> nbd_core::server::backend::Result<bool> {
                Ok(true)
            }
        )*
    };
}

pub mod curl;
pub mod data;
pub mod file;
pub mod filters;
pub mod memory;
pub mod nbd;
pub mod random;
pub mod shutdown;
pub mod simple;
pub mod split;

use std::sync::Arc;

use nbd_core::server::Backend;

/// Parameters of one layer as (key, value) pairs, in command-line order.
pub struct Params {
    name: String,
    pairs: Vec<(String, String)>,
}

/// nbdkit's rule for the key of `key=value`: a letter, then letters,
/// digits, `_`, `.` or `-`. Anything else (`/tmp/a=b`) is a bare value.
pub fn is_config_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

/// Splits command-line parameters into (key, value) pairs. A bare value
/// (no `key=`, or a key nbdkit would not accept, like `/tmp/a=b`) goes to
/// the plugin's magic key, as in nbdkit (`split f1 f2 f3`); a plugin
/// without one refuses it.
pub fn split_params(
    plugin: &str,
    magic: Option<&str>,
    args: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if is_config_key(k) => pairs.push((k.to_string(), v.to_string())),
            _ => match magic {
                None => {
                    return Err(format!(
                        "{plugin}: expecting key=value on the command line but got: {a}"
                    ))
                }
                Some(m) => pairs.push((m.to_string(), a.clone())),
            },
        }
    }
    Ok(pairs)
}

impl Params {
    pub fn new(name: &str, pairs: Vec<(String, String)>) -> Params {
        Params {
            name: name.to_string(),
            pairs,
        }
    }

    /// Splits `args` as the plugin `plugin` with magic key `magic` would.
    #[cfg(test)]
    pub fn parse(plugin: &str, magic: &str, args: &[String]) -> Result<Params, String> {
        Ok(Params::new(
            plugin,
            split_params(plugin, Some(magic), args)?,
        ))
    }

    /// Takes the last value of `key`.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.take_all(key).pop()
    }

    /// Takes every value of `key`, in order.
    pub fn take_all(&mut self, key: &str) -> Vec<String> {
        let mut v = Vec::new();
        self.pairs.retain(|(k, val)| {
            if k == key {
                v.push(val.clone());
                false
            } else {
                true
            }
        });
        v
    }

    /// Takes and parses `key` with `f`; errors are prefixed with the
    /// layer's name and the key.
    pub fn take_with<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => f(&v)
                .map(Some)
                .map_err(|e| format!("{}: {key}: {e}", self.name)),
        }
    }

    /// A size (nbdkit_parse_size).
    pub fn take_size(&mut self, key: &str) -> Result<Option<u64>, String> {
        self.take_with(key, parse_size)
    }

    /// A boolean as nbdkit_parse_bool: 1/true/yes/on, 0/false/no/off.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        self.take_with(key, parse_bool)
    }

    /// One of the listed words.
    pub fn take_enum(&mut self, key: &str, choices: &[&str]) -> Result<Option<String>, String> {
        self.take_with(key, |v| {
            if choices.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "unknown value '{v}' (expecting one of: {})",
                    choices.join(", ")
                ))
            }
        })
    }

    /// An error naming this layer.
    pub fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{}: {msg}", self.name)
    }

    /// Fails on any key left over, in nbdkit's words (its plugins' config
    /// callbacks say "unknown parameter 'KEY'", without the plugin's name).
    pub fn finish(self) -> Result<(), String> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown parameter '{k}'")),
        }
    }
}

pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("could not decipher boolean ({v})")),
    }
}

/// A declared parameter: its key and a one-line description.
pub type Param = (&'static str, &'static str);

/// A plugin's constructor: its parameters and whether the server is `-r`.
type OpenPlugin = fn(&mut Params, bool) -> Result<Arc<dyn Backend>, String>;

/// A plugin: its magic key, the keys it takes (each with a one-line
/// description) and how to open it from its parameters.
struct PluginSpec {
    name: &'static str,
    magic: Option<&'static str>,
    keys: &'static [Param],
    open: OpenPlugin,
}

fn arc<B: Backend + 'static>(r: Result<B, String>) -> Result<Arc<dyn Backend>, String> {
    r.map(|b| Arc::new(b) as Arc<dyn Backend>)
}

const PLUGINS: &[PluginSpec] = &[
    PluginSpec {
        name: "file",
        magic: Some("file"),
        keys: &[
            ("file", "the file or block device to serve"),
            (
                "dir",
                "a directory whose regular files and block devices are the exports",
            ),
            ("cache", "page cache use: default or none"),
            (
                "fadvise",
                "access pattern hint: normal, random or sequential",
            ),
        ],
        open: |p, ro| file::open(p, ro),
    },
    PluginSpec {
        name: "memory",
        magic: Some("size"),
        keys: &[
            ("size", "the size of the RAM disk"),
            ("allocator", "how the RAM is allocated (sparse)"),
        ],
        open: |p, _| arc(memory::Memory::open(p)),
    },
    PluginSpec {
        name: "null",
        magic: Some("size"),
        keys: &[(
            "size",
            "the size of the disk that reads as zeroes and discards writes",
        )],
        open: |p, _| arc(simple::Null::open(p)),
    },
    PluginSpec {
        name: "zero",
        magic: None,
        keys: &[],
        open: |_, _| arc(Ok(simple::Null::new(0))),
    },
    PluginSpec {
        name: "full",
        magic: Some("size"),
        keys: &[("size", "the size of the disk whose writes fail with ENOSPC")],
        open: |p, _| arc(simple::Full::open(p)),
    },
    PluginSpec {
        name: "pattern",
        magic: Some("size"),
        keys: &[("size", "the size of the disk that reads as its own offsets")],
        open: |p, _| arc(simple::Pattern::open(p)),
    },
    PluginSpec {
        name: "random",
        magic: Some("size"),
        keys: &[
            ("size", "the size of the random disk"),
            ("seed", "the seed of the random data"),
        ],
        open: |p, _| arc(random::Random::open(p)),
    },
    PluginSpec {
        name: "sparse-random",
        magic: Some("size"),
        keys: &[
            ("size", "the size of the disk"),
            ("seed", "the seed of the random data"),
            ("percent", "the share of the disk that holds data"),
            ("runlength", "the mean length of a run of data"),
            (
                "random-content",
                "fill the data with random bytes instead of 1s",
            ),
        ],
        open: |p, _| arc(random::SparseRandom::open(p)),
    },
    PluginSpec {
        name: "data",
        magic: Some("data"),
        keys: &[
            ("data", "the disk's content in nbdkit's data format"),
            ("raw", "the disk's content as literal bytes"),
            ("base64", "the disk's content in base64"),
            (
                "size",
                "the size of the disk (default: the end of the data)",
            ),
            ("allocator", "how the RAM is allocated (sparse)"),
        ],
        open: |p, _| arc(data::open(p)),
    },
    PluginSpec {
        name: "split",
        magic: Some("file"),
        keys: &[(
            "file",
            "one of the files concatenated into the disk, in order",
        )],
        open: |p, ro| arc(split::Split::open(p, ro)),
    },
    PluginSpec {
        name: "nbd",
        magic: Some("uri"),
        keys: &[
            ("uri", "the NBD URI of the server to forward to"),
            ("socket", "the Unix socket of the server"),
            ("hostname", "the host name of the server"),
            ("port", "the TCP port of the server"),
            ("export", "the export name to ask for"),
            (
                "tls",
                "whether to use TLS with the server (only off is supported)",
            ),
        ],
        open: |p, ro| arc(nbd::NbdPlugin::open(p, ro)),
    },
    PluginSpec {
        name: "curl",
        magic: Some("url"),
        keys: &[
            ("url", "the HTTP, HTTPS or FTP URL of the disk"),
            ("header", "an extra request header (may be repeated)"),
            ("user", "the user name to log in with"),
            ("password", "the password to log in with"),
            ("proxy", "the proxy to go through"),
            ("cainfo", "the CA certificate file"),
            ("capath", "the directory of CA certificates"),
            (
                "unix-socket-path",
                "a Unix socket to connect to instead of the URL's host",
            ),
            ("sslverify", "whether to check the server's certificate"),
            ("followlocation", "whether to follow redirects"),
            ("tcp-nodelay", "whether to set TCP_NODELAY"),
            ("timeout", "the timeout of a transfer, in seconds"),
        ],
        open: |p, _| arc(curl::CurlPlugin::open(p)),
    },
];

/// A plugin's declared parameters: its magic key and each key with its
/// one-line description (for `--help`-style listings and man pages).
pub fn plugin_params(name: &str) -> Option<(Option<&'static str>, &'static [Param])> {
    PLUGINS
        .iter()
        .find(|p| p.name == name)
        .map(|p| (p.magic, p.keys))
}

fn plugin_names() -> String {
    PLUGINS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds a plugin with its filters on top, as nbdkit does:
/// `filters` in command-line order, the first one outermost. Each
/// `key=value` goes to the outermost filter that knows the key, else to the
/// plugin (the first parameter may be bare: it goes to the plugin's magic
/// key, and a filter of the same key would take it, as in nbdkit). A key
/// nobody knows is an error from the plugin.
pub fn open_stack(
    plugin: &str,
    filters: &[String],
    args: &[String],
    readonly: bool,
) -> Result<Arc<dyn Backend>, String> {
    let spec = PLUGINS.iter().find(|p| p.name == plugin).ok_or_else(|| {
        format!(
            "cannot open plugin \"{plugin}\": this nbdkit supports only the plugins: {}",
            plugin_names()
        )
    })?;
    let fspecs = filters
        .iter()
        .map(|f| filters::find(f))
        .collect::<Result<Vec<_>, _>>()?;
    if spec.keys.is_empty() && !args.is_empty() && filters.is_empty() {
        // nbdkit's words for a plugin without a config callback.
        return Err(format!(
            "{plugin}: this plugin does not need command line configuration"
        ));
    }
    let pairs = split_params(plugin, spec.magic, args)?;
    let mut layer_pairs: Vec<Vec<(String, String)>> = vec![Vec::new(); fspecs.len() + 1];
    for (k, v) in pairs {
        let i = fspecs
            .iter()
            .position(|f| f.knows(&k))
            .unwrap_or(fspecs.len());
        layer_pairs[i].push((k, v));
    }
    filters::tls_fallback::check_thread_model(fspecs.iter().map(|f| f.name).zip(&layer_pairs))?;
    let mut p = Params::new(spec.name, layer_pairs.pop().unwrap_or_default());
    let plugin_b = (spec.open)(&mut p, readonly)?;
    p.finish()?;
    let layers: Vec<Layer> = fspecs.into_iter().zip(layer_pairs).collect();
    let multi = plugin_b
        .list_exports()
        .map_err(|e| e.to_string())?
        .is_some();
    if multi && !layers.is_empty() {
        // The filters are built per export; build them once now over the
        // default export (if any) so that bad parameters fail at startup.
        if let Some(def) = plugin_b.default_export().map_err(|e| e.to_string())? {
            if let Some(b) = plugin_b.open_export(&def).map_err(|e| e.to_string())? {
                wrap(b, &layers, readonly)?;
            }
        }
        // tls-fallback answers plain-text clients by itself: they get the
        // filters down to it over nothing, and the plugin opens no export.
        let plain = match layers.iter().position(|(f, _)| f.name == "tls-fallback") {
            Some(i) => Some(wrap(
                Arc::new(filters::tls_fallback::Unopened),
                &layers[..=i],
                readonly,
            )?),
            None => None,
        };
        return Ok(Arc::new(MultiExport {
            plugin: plugin_b,
            layers,
            readonly,
            plain,
        }));
    }
    wrap(plugin_b, &layers, readonly)
}

/// A filter and the parameters it took.
type Layer = (&'static filters::FilterSpec, Vec<(String, String)>);

/// Puts `layers` (outermost first) over `b`.
fn wrap(
    mut b: Arc<dyn Backend>,
    layers: &[Layer],
    readonly: bool,
) -> Result<Arc<dyn Backend>, String> {
    for (f, pairs) in layers.iter().rev() {
        let mut p = Params::new(f.name, pairs.clone());
        b = (f.open)(&mut p, b, readonly)?;
        p.finish()?;
    }
    Ok(b)
}

/// A plugin with several exports (file `dir=`) under filters: each export
/// gets its own filter stack over the plugin's backend for that export,
/// built from the same parameters (as nbdkit opens filters per
/// connection). Listing and the connection hooks go to the plugin; filters
/// that act on connections (limit, ip, ...) therefore see them only per
/// export stack, through the export's backend.
struct MultiExport {
    plugin: Arc<dyn Backend>,
    layers: Vec<Layer>,
    readonly: bool,
    /// With the tls-fallback filter: the stack plain-text clients get.
    plain: Option<Arc<dyn Backend>>,
}

impl MultiExport {
    /// The plain-text stack, if this connection needs it.
    fn plain(&self) -> Option<&Arc<dyn Backend>> {
        self.plain.as_ref().filter(|_| !crate::conn::is_tls())
    }
}

impl Backend for MultiExport {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.plugin)
    }
    fn list_exports(&self) -> nbd_core::server::backend::Result<Option<Vec<(String, String)>>> {
        self.plain().map_or(&self.plugin, |p| p).list_exports()
    }
    fn default_export(&self) -> nbd_core::server::backend::Result<Option<String>> {
        self.plain().map_or(&self.plugin, |p| p).default_export()
    }
    fn open_export(
        &self,
        name: &str,
    ) -> nbd_core::server::backend::Result<Option<Arc<dyn Backend>>> {
        if let Some(p) = self.plain() {
            return Ok(Some(Arc::clone(p)));
        }
        match self.plugin.open_export(name)? {
            None => Ok(None),
            Some(b) => wrap(b, &self.layers, self.readonly)
                .map(Some)
                .map_err(|e| nbd_core::server::backend::Error::new(libc::EINVAL, e)),
        }
    }
}

/// Parses a size as nbdkit_parse_size does: a non-negative integer with an
/// optional suffix b, k/K, m/M, g/G, t/T, p/P, e/E (powers of 1024),
/// optionally followed by "iB" or "B". At most 2^63-1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("could not parse size string ({s})");
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits_end].parse().map_err(|_| bad())?;
    let mut suffix = &t[digits_end..];
    let shift = match suffix.chars().next() {
        None => 0,
        Some(c) => {
            suffix = &suffix[1..];
            match c {
                'b' | 'B' if suffix.is_empty() => 0,
                'k' | 'K' => 10,
                'm' | 'M' => 20,
                'g' | 'G' => 30,
                't' | 'T' => 40,
                'p' | 'P' => 50,
                'e' | 'E' => 60,
                _ => return Err(bad()),
            }
        }
    };
    if !(suffix.is_empty() || suffix == "B" || suffix == "iB") || (shift == 0 && !suffix.is_empty())
    {
        return Err(bad());
    }
    let v = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size ({s}) exceeds maximum value"))?;
    if v > i64::MAX as u64 {
        return Err(format!("size ({s}) exceeds maximum value"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_in_nbdkits_words() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = open_stack("memory", &[], &args(&["1M", "foo=bar"]), false).err();
        assert_eq!(e.as_deref(), Some("unknown parameter 'foo'"));
        let e = open_stack("zero", &[], &args(&["foo=bar"]), false).err();
        assert_eq!(
            e.as_deref(),
            Some("zero: this plugin does not need command line configuration")
        );
    }

    /// The keys a source file takes as string literals: the first argument
    /// of `take`, `take_all`, `take_size`, `take_bool`, `take_enum`,
    /// `take_with`, and of curl's `opt(p, "...")`.
    fn literal_keys(src: &str) -> std::collections::BTreeSet<String> {
        let mut keys = std::collections::BTreeSet::new();
        for (i, _) in src.match_indices("take") {
            let rest =
                src[i + 4..].trim_start_matches(|c: char| c.is_ascii_lowercase() || c == '_');
            if let Some(r) = rest.strip_prefix('(') {
                if let Some(r) = r.trim_start().strip_prefix('"') {
                    keys.insert(r[..r.find('"').unwrap()].to_string());
                }
            }
        }
        for (i, _) in src.match_indices("opt(p, \"") {
            let r = &src[i + 8..];
            keys.insert(r[..r.find('"').unwrap()].to_string());
        }
        keys
    }

    /// Each plugin declares every key its code takes, and nothing else:
    /// compared per source file (a file may hold several plugins).
    #[test]
    fn plugin_keys_declared() {
        let sources: &[(&str, &str, &[&str])] = &[
            ("file.rs", include_str!("file.rs"), &["file"]),
            ("memory.rs", include_str!("memory.rs"), &["memory"]),
            (
                "simple.rs",
                include_str!("simple.rs"),
                &["null", "zero", "full", "pattern"],
            ),
            (
                "random.rs",
                include_str!("random.rs"),
                &["random", "sparse-random"],
            ),
            ("data.rs", include_str!("data.rs"), &["data"]),
            ("split.rs", include_str!("split.rs"), &["split"]),
            ("nbd.rs", include_str!("nbd.rs"), &["nbd"]),
            ("curl.rs", include_str!("curl.rs"), &["curl"]),
        ];
        let mut seen = Vec::new();
        for (file, src, names) in sources {
            let taken = literal_keys(src);
            let mut declared = std::collections::BTreeSet::new();
            for n in *names {
                let spec = PLUGINS.iter().find(|p| p.name == *n).unwrap();
                for (k, help) in spec.keys {
                    assert!(!help.is_empty(), "{n}: {k} has no description");
                    declared.insert(k.to_string());
                }
                if let Some(m) = spec.magic {
                    assert!(
                        spec.keys.iter().any(|(k, _)| *k == m),
                        "{n}: magic key {m} not declared"
                    );
                }
                seen.push(*n);
            }
            assert_eq!(taken, declared, "{file}: keys taken vs declared");
        }
        for p in PLUGINS {
            assert!(seen.contains(&p.name), "plugin {} not checked", p.name);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512b"), Ok(512));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("1P"), Ok(1 << 50));
        assert_eq!(parse_size("7E"), Ok(7 << 60));
        assert_eq!(parse_size("9223372036854775807"), Ok(i64::MAX as u64));
        assert!(parse_size("8E").is_err());
        assert!(parse_size("9223372036854775808").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1Gx").is_err());
    }

    #[test]
    fn params() {
        let mut p = Params::parse("m", "size", &["1G".into(), "a=b".into()]).unwrap();
        assert_eq!(p.take("size").as_deref(), Some("1G"));
        assert!(p.finish().is_err());
        let mut p = Params::parse("s", "file", &["a".into(), "b".into()]).unwrap();
        assert_eq!(p.take_all("file"), ["a", "b"]);
        assert!(split_params("zero", None, &["1G".into()]).is_err());
        let mut p = Params::parse("f", "file", &["/tmp/x=y".into()]).unwrap();
        assert_eq!(p.take("file").as_deref(), Some("/tmp/x=y"));
    }
}
