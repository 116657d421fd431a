//! Making a chain from the command line, as nbdkit does.

use std::sync::Arc;

use crate::filters;
use crate::params::{split_params, Params};
use crate::plugins;

use super::{Chain, Filter};

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
    let spec = plugins::find(plugin)?;
    let fspecs = filters
        .iter()
        .map(|f| filters::find(f))
        .collect::<Result<Vec<_>, _>>()?;
    if spec.params.is_empty() && !args.is_empty() && filters.is_empty() {
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
    check_thread_model(fspecs.iter().map(|f| f.name).zip(&layer_pairs))?;
    let mut p = Params::new(spec.name, layer_pairs.pop().unwrap_or_default());
    let plugin = (spec.open)(&mut p, readonly)?;
    p.finish()?;
    let mut layers: Vec<Arc<dyn Filter>> = Vec::with_capacity(fspecs.len());
    for (f, pairs) in fspecs.into_iter().zip(layer_pairs) {
        let mut p = Params::new(f.name, pairs);
        layers.push((f.open)(&mut p, readonly)?);
        p.finish()?;
    }
    Ok(Arc::new(Chain::new(plugin, layers)))
}

/// nbdkit's check when the server gets ready: with connections served one
/// at a time (the noparallel filter's `serialize=connections`), a
/// plain-text client that stays connected would lock out every TLS
/// client, so the filter refuses such a stack. `layers`: each filter's
/// name and parameters.
pub fn check_thread_model<'a>(
    mut layers: impl Iterator<Item = (&'a str, &'a Vec<(String, String)>)> + Clone,
) -> std::result::Result<(), String> {
    let mode = |pairs: &Vec<(String, String)>, key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let serialized = layers.clone().any(|(name, pairs)| {
        name == "noparallel"
            && mode(pairs, "serialise")
                .or_else(|| mode(pairs, "serialize"))
                .as_deref()
                == Some("connections")
    });
    if serialized && layers.any(|(name, _)| name == "tls-fallback") {
        return Err("the tls-fallback filter requires parallel connection support".into());
    }
    Ok(())
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
