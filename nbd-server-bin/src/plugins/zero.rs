//! The zero plugin: an empty disk (nbdkit-zero-plugin(1)), the null
//! plugin of size 0.

use std::sync::Arc;

use super::null::Null;
use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "zero",
    magic: None,
    params: &[],
    open: |_, _| Ok(Arc::new(Null::new(0))),
};
