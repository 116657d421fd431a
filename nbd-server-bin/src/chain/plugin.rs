//! The bottom of a chain: a plugin (nbdkit-plugin(3)).

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Result};

/// A plugin, configured once when the server starts and shared by every
/// connection.
///
/// For each connection the chain calls [`Plugin::open`], and the handle it
/// returns serves that connection's requests (the [`Backend`] methods)
/// until the connection ends and the handle is dropped: the plugin's
/// `close`. A plugin whose state is the same for every connection returns
/// a clone of itself (`Ok(Box::new(self))`; `Arc<T>` is a `Backend` when
/// `T` is).
///
/// The methods before `open` run before a connection has an export, and
/// have defaults for a plugin with one export and no say about who may
/// connect.
pub trait Plugin: Send + Sync {
    /// The plugin's thread model (nbdkit's `NBDKIT_THREAD_MODEL_*`),
    /// which filters may lower further. Our own plugins are parallel; a
    /// script plugin says what its script asks for.
    fn thread_model(&self) -> i32 {
        crate::cplugin::THREAD_MODEL_PARALLEL
    }

    /// The server is in its final process (after daemonising), before the
    /// first connection: a plugin starts its background threads here.
    fn after_fork(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Whether every request is answered from memory or computed, never
    /// waiting for a disk, the network, another process or a lock held
    /// for long. The server then serves small requests on the thread that
    /// read them, with no hand-off to a worker (see conn.rs). False unless
    /// the plugin says so.
    fn never_blocks(&self) -> bool {
        false
    }

    /// Whether this plugin serves one connection at a time (see
    /// [`super::Filter::serializes_connections`]).
    fn serializes_connections(&self) -> bool {
        false
    }

    /// A client connected, before any byte of the handshake; `Err` closes
    /// the connection.
    fn preconnect(&self, info: &ConnectionInfo) -> Result<()> {
        let _ = info;
        Ok(())
    }

    /// The exports this plugin offers, as (name, description), for
    /// NBD_OPT_LIST. `None`: no list of its own; the server lists its `-e`
    /// name, and any name opens this plugin.
    fn list_exports(&self, info: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        let _ = info;
        Ok(None)
    }

    /// The export the empty name means, when the plugin lists exports.
    fn default_export(&self, info: &ConnectionInfo) -> Result<Option<String>> {
        let _ = info;
        Ok(None)
    }

    /// Opens the plugin for one connection, on export
    /// `info.export_name`.
    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>>;
}
