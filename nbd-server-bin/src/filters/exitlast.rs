//! The exitlast filter: the server exits when the last client disconnects
//! (nbdkit-exitlast-filter(1)). It takes no parameters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nbd_core::server::backend::{ConnectionInfo, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::process::shutdown;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "exitlast",
    params: &[],
    open: |_, _| Ok(Arc::new(ExitLast::new())),
};

/// Asks the server to exit (see [`shutdown`]) when the last client
/// disconnects.
#[derive(Default)]
pub struct ExitLast {
    /// Clients connected now.
    count: AtomicU64,
}

impl ExitLast {
    pub fn new() -> ExitLast {
        ExitLast::default()
    }
}

impl Filter for ExitLast {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(self))
    }
}

impl FilterHandle for ExitLast {
    fn close(&self, _info: &ConnectionInfo) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            shutdown::request();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::info_id;
    use crate::chain::Chain;
    use crate::plugins::null::Null;

    #[test]
    fn exitlast_asks_for_shutdown_after_the_last_close() {
        fn handler() {}
        shutdown::set_handler(handler);
        let chain = Arc::new(Chain::new(
            Arc::new(Null::new(0)),
            vec![Arc::new(ExitLast::new())],
        ));
        let c1 = chain.open(info_id(1)).unwrap();
        let c2 = chain.open(info_id(2)).unwrap();
        drop(c1);
        assert!(!shutdown::requested());
        drop(c2);
        assert!(shutdown::requested());
    }
}
