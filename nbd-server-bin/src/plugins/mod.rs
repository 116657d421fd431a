//! The plugins built into our nbdkit, one file per plugin, named as
//! nbdkit names them (`memory.rs` is nbdkit-memory-plugin(1)).
//!
//! Each file declares its plugin once, as a `PLUGIN` [`PluginSpec`]: its
//! name, its magic key (where a bare command-line value goes: `file` for
//! file, `size` for memory), every key it takes with a one-line
//! description, and how to make it from its parameters. [`PLUGINS`] lists
//! them; a test checks each file's declared keys against the keys its
//! code takes. Helpers shared by several plugins live in files named for
//! what they do (`prng.rs`).

/// Capabilities a plugin always has: `supports!(can_write, can_flush)`
/// writes `fn can_write(&self) -> Result<bool> { Ok(true) }` and so on.
/// A capability that depends on the plugin's state is written out.
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
mod disk_command;
pub mod file;
pub mod floppy;
pub mod full;
pub mod info;
pub mod iso;
pub mod linuxdisk;
mod made_image;
pub mod memory;
pub mod nbd;
mod nbd_connect;
mod nbd_tls;
pub mod null;
pub mod ondemand;
mod one_partition;
pub mod partitioning;
pub mod pattern;
mod prng;
pub mod random;
pub mod sh;
pub mod sparse_random;
pub mod split;
pub mod ssh;
pub mod tmpdisk;
pub mod zero;

use std::sync::Arc;

use crate::chain::Plugin;
use crate::params::{Param, Params};

/// How a plugin is made from its parameters, given whether the server is
/// read-only (`-r`).
pub type OpenPlugin = fn(&mut Params, bool) -> Result<Arc<dyn Plugin>, String>;

/// A plugin's declaration.
pub struct PluginSpec {
    pub name: &'static str,
    /// Where a bare command-line value goes.
    pub magic: Option<&'static str>,
    /// Every key the plugin takes, with a one-line description.
    pub params: &'static [Param],
    pub open: OpenPlugin,
}

/// Every built-in plugin.
pub const PLUGINS: &[PluginSpec] = &[
    file::PLUGIN,
    memory::PLUGIN,
    null::PLUGIN,
    zero::PLUGIN,
    full::PLUGIN,
    pattern::PLUGIN,
    random::PLUGIN,
    sparse_random::PLUGIN,
    data::PLUGIN,
    split::PLUGIN,
    nbd::PLUGIN,
    curl::PLUGIN,
    info::PLUGIN,
    tmpdisk::PLUGIN,
    ondemand::PLUGIN,
    partitioning::PLUGIN,
    iso::PLUGIN,
    linuxdisk::PLUGIN,
    floppy::PLUGIN,
    ssh::PLUGIN,
    sh::SH,
    sh::EVAL,
];

/// The plugin called `name`, or nbdkit-style words for its absence.
pub fn find(name: &str) -> Result<&'static PluginSpec, String> {
    PLUGINS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PLUGINS.iter().map(|p| p.name).collect();
        format!(
            "cannot open plugin \"{name}\": this nbdkit supports only the plugins: {}",
            names.join(", ")
        )
    })
}

/// A plugin's declared parameters: its magic key and each key with its
/// one-line description (for `--help`-style listings and man pages).
pub fn plugin_params(name: &str) -> Option<(Option<&'static str>, &'static [Param])> {
    PLUGINS
        .iter()
        .find(|p| p.name == name)
        .map(|p| (p.magic, p.params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::literal_keys;

    /// Each plugin declares every key its code takes, and nothing else:
    /// compared per source file (a file may hold several plugins).
    #[test]
    fn plugin_keys_declared() {
        let sources: &[(&str, &str, &[&str])] = &[
            ("file.rs", include_str!("file.rs"), &["file"]),
            ("memory.rs", include_str!("memory.rs"), &["memory"]),
            // The shared size parameter is taken in params.rs.
            ("null.rs", include_str!("null.rs"), &["null"]),
            ("zero.rs", include_str!("zero.rs"), &["zero"]),
            ("full.rs", include_str!("full.rs"), &["full"]),
            ("pattern.rs", include_str!("pattern.rs"), &["pattern"]),
            // The seed is taken in prng.rs.
            ("random.rs", include_str!("random.rs"), &["random"]),
            (
                "sparse_random.rs",
                include_str!("sparse_random.rs"),
                &["sparse-random"],
            ),
            ("data.rs", include_str!("data.rs"), &["data"]),
            ("split.rs", include_str!("split.rs"), &["split"]),
            (
                "nbd.rs",
                concat!(include_str!("nbd.rs"), include_str!("nbd_tls.rs")),
                &["nbd"],
            ),
            ("curl/mod.rs", include_str!("curl/mod.rs"), &["curl"]),
            ("info.rs", include_str!("info.rs"), &["info"]),
            ("tmpdisk.rs", include_str!("tmpdisk.rs"), &["tmpdisk"]),
            ("ondemand.rs", include_str!("ondemand.rs"), &["ondemand"]),
            (
                "partitioning.rs",
                include_str!("partitioning.rs"),
                &["partitioning"],
            ),
            ("iso.rs", include_str!("iso.rs"), &["iso"]),
            ("linuxdisk.rs", include_str!("linuxdisk.rs"), &["linuxdisk"]),
            ("floppy.rs", include_str!("floppy.rs"), &["floppy"]),
            ("ssh/mod.rs", include_str!("ssh/mod.rs"), &["ssh"]),
            ("sh/mod.rs", include_str!("sh/mod.rs"), &["sh", "eval"]),
        ];
        let mut seen = Vec::new();
        for (file, src, names) in sources {
            let mut taken = literal_keys(src);
            // sh's `script` is its first pair, and eval's keys are its
            // method names: taken in command-line order with the rest,
            // which go to the script's config method.
            if *file == "sh/mod.rs" {
                taken.insert("script".into());
                taken.extend(sh::EVAL.params.iter().map(|(k, _)| k.to_string()));
            }
            let mut declared = std::collections::BTreeSet::new();
            for n in *names {
                let spec = PLUGINS.iter().find(|p| p.name == *n).unwrap();
                for (k, help) in spec.params {
                    assert!(!help.is_empty(), "{n}: {k} has no description");
                    declared.insert(k.to_string());
                }
                if let Some(m) = spec.magic {
                    assert!(
                        spec.params.iter().any(|(k, _)| *k == m),
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
}
