//! Making a chain from the command line, as nbdkit does.

use std::sync::Arc;

use crate::cplugin;
use crate::filters;
use crate::params::{is_config_key, split_params, Params};
use crate::plugins;

use super::{Chain, Filter, Plugin};

/// Builds plugin `plugin` with `filters` over it (command-line order, the
/// first outermost). Each `key=value` of `args` goes to the outermost
/// filter that declares the key, else to the plugin (a bare first value
/// goes to the plugin's magic key, and a filter declaring that key would
/// take it, as in nbdkit). A key nobody declares is the plugin's error,
/// in nbdkit's words.
pub fn build(
    plugin: &str,
    filters: &[String],
    args: &[String],
    readonly: bool,
) -> Result<Arc<Chain>, String> {
    let bottom = Bottom::find(plugin)?;
    let mut fspecs = filters
        .iter()
        .map(|f| Layer::find(f))
        .collect::<Result<Vec<_>, _>>()?;
    if !bottom.takes_params() && !args.is_empty() && filters.is_empty() {
        // nbdkit's words for a plugin without a config callback.
        return Err(format!(
            "{plugin}: this plugin does not need command line configuration"
        ));
    }
    let args = bottom.script_arg(args);
    // Down the chain from the outermost filter: a built-in filter takes
    // the keys it declares, a C filter sees every key and passes on what
    // it does not take, as in nbdkit; the plugin gets the rest.
    let mut pending = split_params(plugin, bottom.magic().as_deref(), &args)?;
    let mut layer_pairs: Vec<Vec<(String, String)>> = Vec::with_capacity(fspecs.len());
    for f in fspecs.iter_mut() {
        match f {
            Layer::BuiltIn(spec) => {
                let (mine, rest) = pending.into_iter().partition(|(k, _)| spec.knows(k));
                layer_pairs.push(mine);
                pending = rest;
            }
            Layer::Shared(lib) => {
                pending = lib.configure(pending)?;
                layer_pairs.push(Vec::new());
            }
        }
    }
    let plugin_pairs = pending;
    let mut c_filters_model = cplugin::THREAD_MODEL_PARALLEL;
    for f in &fspecs {
        if let Layer::Shared(lib) = f {
            c_filters_model = c_filters_model.min(lib.thread_model()?);
        }
    }
    let builtins = || {
        fspecs
            .iter()
            .zip(&layer_pairs)
            .filter_map(|(f, p)| match f {
                Layer::BuiltIn(spec) => Some((spec.name, p)),
                Layer::Shared(_) => None,
            })
    };
    let (plugin, model): (Arc<dyn Plugin>, i32) = match bottom {
        Bottom::BuiltIn(spec) => {
            let mut p = Params::new(spec.name, plugin_pairs);
            let plugin = (spec.open)(&mut p, readonly)?;
            p.finish()?;
            let model = check_thread_model(plugin.thread_model().min(c_filters_model), builtins())?;
            (plugin, model)
        }
        Bottom::Shared(mut lib) => {
            cplugin::configure(&mut lib, &plugin_pairs)?;
            let own = cplugin::CPlugin::own_thread_model(&lib)?;
            let model = check_thread_model(own.min(c_filters_model), builtins())?;
            (cplugin::ready(*lib, model)?, model)
        }
        Bottom::Cc => {
            let (mut lib, pairs) = cplugin::cc::compile(plugin_pairs)?;
            cplugin::configure(&mut lib, &pairs)?;
            let own = cplugin::CPlugin::own_thread_model(&lib)?;
            let model = check_thread_model(own.min(c_filters_model), builtins())?;
            (cplugin::ready(lib, model)?, model)
        }
    };
    let mut layers: Vec<Arc<dyn Filter>> = Vec::with_capacity(fspecs.len());
    let mut shared = Vec::new();
    for (f, pairs) in fspecs.into_iter().zip(layer_pairs) {
        match f {
            Layer::BuiltIn(spec) => {
                let mut p = Params::new(spec.name, pairs);
                layers.push((spec.open)(&mut p, readonly)?);
                p.finish()?;
            }
            Layer::Shared(lib) => {
                let f = cplugin::CFilter::new(*lib, model);
                shared.push(Arc::clone(&f));
                layers.push(f);
            }
        }
    }
    // The innermost first, as nbdkit.
    for f in shared.iter().rev() {
        f.get_ready()?;
    }
    Ok(Arc::new(
        Chain::new(plugin, layers).with_thread_model(model),
    ))
}

/// A filter of the chain: one of ours, or a shared object written against
/// nbdkit-filter.h.
enum Layer {
    BuiltIn(&'static filters::FilterSpec),
    Shared(Box<cplugin::FilterLibrary>),
}

impl Layer {
    /// A built-in filter of that name first; else a path, or
    /// `nbdkit-NAME-filter.so` in our filter directory or Debian's.
    fn find(name: &str) -> Result<Layer, String> {
        match filters::find(name) {
            Ok(spec) => Ok(Layer::BuiltIn(spec)),
            Err(e) => match cplugin::find_filter(name) {
                Some(path) => {
                    cplugin::FilterLibrary::open(&path).map(|l| Layer::Shared(Box::new(l)))
                }
                None => Err(cplugin::filter_not_found(name, &e)),
            },
        }
    }
}

/// The lowest thread model of the filters `names`, before any is
/// configured (`--dump-plugin`): a C filter's `thread_model`, noparallel's
/// default for ours.
pub fn filters_thread_model(names: &[String]) -> Result<i32, String> {
    let none = Vec::new();
    let mut model = cplugin::THREAD_MODEL_PARALLEL;
    for name in names {
        model = model.min(match Layer::find(name)? {
            Layer::BuiltIn(spec) => check_thread_model(
                cplugin::THREAD_MODEL_PARALLEL,
                std::iter::once((spec.name, &none)),
            )?,
            Layer::Shared(lib) => lib.thread_model()?,
        });
    }
    Ok(model)
}

/// `--help`'s part for a filter (after the usage, before the plugin's):
/// its name (and long name), where it comes from, and its keys (a .so's
/// `config_help`).
pub fn filter_help(name: &str) -> Result<String, String> {
    match Layer::find(name)? {
        Layer::BuiltIn(spec) => {
            let mut out = format!("filter: {}\n(built in)\n", spec.name);
            for (k, help) in spec.params {
                out.push_str(&format!("{k}=...  {help}\n"));
            }
            Ok(out)
        }
        Layer::Shared(lib) => Ok(lib.help()),
    }
}

/// `nbdkit --filter=NAME --version`'s line for a filter (which must
/// exist): its name and version.
pub fn filter_version(name: &str) -> Result<String, String> {
    match Layer::find(name)? {
        Layer::BuiltIn(spec) => Ok(format!("{} {}", spec.name, cplugin::NBDKIT_VERSION)),
        Layer::Shared(lib) => Ok(lib.version_line()),
    }
}

/// The plugin at the bottom of the chain: one of ours, or a shared object
/// written against nbdkit-plugin.h, or C source that the cc plugin
/// compiles into one once it has its parameters.
enum Bottom {
    BuiltIn(&'static plugins::PluginSpec),
    Shared(Box<cplugin::Library>),
    Cc,
}

impl Bottom {
    /// A built-in plugin of that name first; else a path, or
    /// `nbdkit-NAME-plugin.so` in our plugin directory or Debian's.
    fn find(name: &str) -> Result<Bottom, String> {
        if name == "cc" {
            return Ok(Bottom::Cc);
        }
        match plugins::find(name) {
            Ok(spec) => Ok(Bottom::BuiltIn(spec)),
            Err(e) => match cplugin::find(name) {
                Some(path) => cplugin::open(&path).map(|l| Bottom::Shared(Box::new(l))),
                None => Err(cplugin::not_found(name, &e)),
            },
        }
    }

    fn takes_params(&self) -> bool {
        match self {
            Bottom::BuiltIn(spec) => !spec.params.is_empty(),
            Bottom::Shared(lib) => cplugin::has_config(lib),
            Bottom::Cc => true,
        }
    }

    /// nbdkit's rule for a loaded plugin without a magic key (sh, cc,
    /// python …): a bare first parameter is its `script`.
    fn script_arg(&self, args: &[String]) -> Vec<String> {
        let mut args = args.to_vec();
        let no_magic = match self {
            Bottom::Shared(lib) => cplugin::magic_config_key(lib).is_none(),
            Bottom::Cc => true,
            Bottom::BuiltIn(_) => false,
        };
        if let (true, Some(first)) = (no_magic, args.first_mut()) {
            let bare = !first.split_once('=').is_some_and(|(k, _)| is_config_key(k));
            if bare {
                *first = format!("script={first}");
            }
        }
        args
    }

    fn magic(&self) -> Option<String> {
        match self {
            Bottom::BuiltIn(spec) => spec.magic.map(str::to_string),
            Bottom::Shared(lib) => cplugin::magic_config_key(lib),
            Bottom::Cc => None,
        }
    }
}

/// The thread model the chain runs with, as nbdkit computes it when the
/// server gets ready: the lowest of the plugin's and the C filters'
/// (`plugin_model`) and each built-in filter's. Our filters are all parallel except noparallel, whose
/// `serialize=` mode is its thread model. `layers`: each filter's name and
/// parameters.
///
/// With connections served one at a time, a plain-text client that stays
/// connected would lock out every TLS client, so the tls-fallback filter
/// refuses such a stack, in nbdkit's words.
pub fn check_thread_model<'a>(
    plugin_model: i32,
    layers: impl Iterator<Item = (&'a str, &'a Vec<(String, String)>)> + Clone,
) -> std::result::Result<i32, String> {
    let mode = |pairs: &Vec<(String, String)>, key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let filter_model = |(name, pairs): (&str, &Vec<(String, String)>)| {
        if name != "noparallel" {
            return cplugin::THREAD_MODEL_PARALLEL;
        }
        match mode(pairs, "serialise")
            .or_else(|| mode(pairs, "serialize"))
            .as_deref()
        {
            Some("connections") => cplugin::THREAD_MODEL_SERIALIZE_CONNECTIONS,
            Some("all-requests") => cplugin::THREAD_MODEL_SERIALIZE_ALL_REQUESTS,
            _ => cplugin::THREAD_MODEL_SERIALIZE_REQUESTS,
        }
    };
    let model = layers
        .clone()
        .map(filter_model)
        .fold(plugin_model, i32::min);
    if model == cplugin::THREAD_MODEL_SERIALIZE_CONNECTIONS
        && layers.clone().any(|(name, _)| name == "tls-fallback")
    {
        return Err("the tls-fallback filter requires parallel connection support".into());
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_parameters_in_nbdkits_words() {
        let e = build("memory", &[], &args(&["1M", "foo=bar"]), false).err();
        assert_eq!(e.as_deref(), Some("unknown parameter 'foo'"));
        let e = build("zero", &[], &args(&["foo=bar"]), false).err();
        assert_eq!(
            e.as_deref(),
            Some("zero: this plugin does not need command line configuration")
        );
    }
}
