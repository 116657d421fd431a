//! Stand-in for `backend::open_stack` of the plugins branch, which builds
//! the filter stack. Until it is merged: no filters exist, so any
//! `--filter` is an error, and the plugin is opened alone. The integrator
//! replaces the single call in main.rs with `backend::open_stack` and
//! deletes this file.

use std::sync::Arc;

use nbd_core::server::Backend;

/// Opens `plugin` under `filters` (command-line order, outermost first),
/// distributing `args`.
pub fn open_stack(
    plugin: &str,
    filters: &[String],
    args: &[String],
    readonly: bool,
) -> Result<Arc<dyn Backend>, String> {
    if let Some(f) = filters.first() {
        return Err(format!("unknown filter: {f}"));
    }
    crate::backend::open(plugin, args, readonly)
}
