//! The backend chain, as nbdkit's server/backend.c and server/filters.c
//! build it: a plugin at the bottom, filters over it in command-line
//! order (the first one outermost).
//!
//! - [`Plugin`] and [`Filter`] (with its per-connection [`FilterHandle`])
//!   are the two traits a layer implements. A filter gets the layers below
//!   as `next` in every call, and every call it does not write passes to
//!   `next` unchanged.
//! - [`Chain`] is the configured chain, shared by every connection: it
//!   answers the questions asked before a connection has an export
//!   (`preconnect`, `list_exports`, `default_export`), and [`Chain::open`]
//!   opens it for one connection.
//! - [`Opened`] is the chain opened for one connection: each layer's
//!   handle, with the connection's facts ([`ConnectionInfo`]) and each
//!   layer's capabilities asked once and remembered. The server runs the
//!   connection's requests against it.
//! - [`build`] makes a chain from the command line: plugin and filter
//!   names and their `key=value` parameters.

mod build;
mod filter;
mod opened;
mod plugin;
#[cfg(test)]
pub mod testing;

use std::sync::Arc;

use nbd_core::server::backend::{ConnectionInfo, Result};

pub use build::{build, filter_help, filter_version, filters_thread_model};
pub use filter::{Filter, FilterHandle};
pub use opened::{Lower, OpenNext, Opened};
pub use plugin::Plugin;

/// A configured chain: the plugin and the filters over it.
pub struct Chain {
    /// Outermost first.
    filters: Vec<Arc<dyn Filter>>,
    plugin: Arc<dyn Plugin>,
    /// The lowest thread model of the plugin and the filters (nbdkit's
    /// THREAD_MODEL_* numbers), as `build::check_thread_model` found it.
    thread_model: i32,
    /// Held by the connection being served when a layer serves one
    /// connection at a time.
    one_connection: parking_lot::Mutex<()>,
}

impl Chain {
    /// `filters` outermost first.
    pub fn new(plugin: Arc<dyn Plugin>, filters: Vec<Arc<dyn Filter>>) -> Chain {
        Chain {
            filters,
            plugin,
            thread_model: crate::cplugin::THREAD_MODEL_PARALLEL,
            one_connection: parking_lot::Mutex::new(()),
        }
    }

    /// The chain with the thread model `model` in force.
    pub fn with_thread_model(mut self, model: i32) -> Chain {
        self.thread_model = model;
        self
    }

    /// Whether requests may run in parallel within one connection. When
    /// not, nbdkit serves each connection's requests on the connection's
    /// own thread (it starts no workers), and plugins written in
    /// languages with per-thread interpreter state (perl, ruby, tcl)
    /// depend on it.
    pub fn parallel_requests(&self) -> bool {
        self.thread_model >= crate::cplugin::THREAD_MODEL_PARALLEL
    }

    /// A new connection's turn: when a layer serves one connection at a
    /// time, waits until the one before has gone and holds the turn (drop
    /// it once the connection is closed). As in nbdkit, this comes before
    /// preconnect and the greeting, so a waiting client sees nothing yet.
    pub fn connection_turn(&self) -> Option<parking_lot::MutexGuard<'_, ()>> {
        // The chain's thread model covers C plugins and filters and the
        // script plugins; the layers' own say covers built-in ones whose
        // rule depends on their parameters (noparallel).
        let one = self.thread_model <= crate::cplugin::THREAD_MODEL_SERIALIZE_CONNECTIONS
            || self.plugin.serializes_connections()
            || self.filters.iter().any(|f| f.serializes_connections());
        one.then(|| self.one_connection.lock())
    }

    /// A chain of the plugin alone.
    pub fn plugin(plugin: Arc<dyn Plugin>) -> Chain {
        Chain::new(plugin, Vec::new())
    }

    fn below(&self, layer: usize) -> Below<'_> {
        Below { chain: self, layer }
    }

    /// The server is in its final process (see [`Filter::after_fork`]):
    /// the plugin first, then the filters from the innermost out, as
    /// nbdkit (each layer's after_fork runs its next layer's first).
    pub fn after_fork(&self) -> std::result::Result<(), String> {
        self.plugin.after_fork()?;
        self.filters.iter().rev().try_for_each(|f| f.after_fork())
    }

    /// Whether the chain answers every request without blocking: the
    /// plugin and every filter over it say they never block. Such a
    /// chain's small requests are served on the thread that read them.
    pub fn answers_from_memory(&self) -> bool {
        self.plugin.never_blocks() && self.filters.iter().all(|f| f.never_blocks())
    }

    /// Whether the chain is its plugin alone, with no filter over it.
    pub fn plugin_alone(&self) -> bool {
        self.filters.is_empty()
    }

    /// A client connected (nbdkit's `preconnect`); `Err` refuses it.
    pub fn preconnect(&self, info: &ConnectionInfo) -> Result<()> {
        self.below(0).preconnect(info)
    }

    /// The exports to list; `None` when the plugin has no list of its own.
    pub fn list_exports(&self, info: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        self.below(0).list_exports(info)
    }

    /// The export the empty name means, if the plugin says.
    pub fn default_export(&self, info: &ConnectionInfo) -> Result<Option<String>> {
        self.below(0).default_export(info)
    }

    /// Opens the chain for the connection `info`.
    pub fn open(self: &Arc<Self>, info: ConnectionInfo) -> Result<Opened> {
        Opened::open(Arc::clone(self), info)
    }
}

/// The layers of a configured chain from one layer down: what a filter's
/// connection-less calls get as `next`.
pub struct Below<'a> {
    chain: &'a Chain,
    layer: usize,
}

impl Below<'_> {
    fn filter(&self) -> Option<(&dyn Filter, Below<'_>)> {
        self.chain
            .filters
            .get(self.layer)
            .map(|f| (&**f, self.chain.below(self.layer + 1)))
    }

    pub fn preconnect(&self, info: &ConnectionInfo) -> Result<()> {
        match self.filter() {
            Some((f, next)) => f.preconnect(&next, info),
            None => self.chain.plugin.preconnect(info),
        }
    }

    pub fn list_exports(&self, info: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        match self.filter() {
            Some((f, next)) => f.list_exports(&next, info),
            None => self.chain.plugin.list_exports(info),
        }
    }

    pub fn default_export(&self, info: &ConnectionInfo) -> Result<Option<String>> {
        match self.filter() {
            Some((f, next)) => f.default_export(&next, info),
            None => self.chain.plugin.default_export(info),
        }
    }
}

#[cfg(test)]
mod tests;
