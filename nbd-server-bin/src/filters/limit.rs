//! The limit filter: limits how many clients may be connected at once
//! (nbdkit-limit-filter(1)).
//!
//! `limit=N` (default 1; 0 means no limit): one client more is refused
//! when it opens the export.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nbd_core::server::backend::{ConnectionInfo, Error, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "limit",
    params: &[(
        "limit",
        "the most clients connected at once (default 1; 0: no limit)",
    )],
    open: |p, _| Ok(Arc::new(Limit::open(p)?)),
};

pub struct Limit {
    limit: u64,
    /// Clients connected now.
    count: AtomicU64,
}

impl Limit {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let limit = p
            .take_with("limit", |v| {
                v.parse::<u64>()
                    .map_err(|_| format!("could not parse number: {v}"))
            })?
            .unwrap_or(1);
        Ok(Limit {
            limit,
            count: AtomicU64::new(0),
        })
    }
}

impl Filter for Limit {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if self.limit > 0 && n >= self.limit {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(
                libc::EBUSY,
                format!(
                    "limit: too many clients connected, connection rejected (limit={})",
                    self.limit
                ),
            ));
        }
        if let Err(e) = next.open(info) {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(Box::new(self))
    }
}

impl FilterHandle for Limit {
    fn close(&self, _info: &ConnectionInfo) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over, info_id};
    use crate::plugins::null::Null;

    #[test]
    fn limit_counts_connections() {
        let chain = filter_over(&FILTER, &[("limit", "2")], Arc::new(Null::new(0)));
        let c1 = chain.open(info_id(1)).unwrap();
        let _c2 = chain.open(info_id(2)).unwrap();
        assert_eq!(chain.open(info_id(3)).err().unwrap().errno, libc::EBUSY);
        drop(c1);
        let _c4 = chain.open(info_id(4)).unwrap();
    }

    #[test]
    fn bad_limit() {
        let mut p = Params::new("limit", vec![("limit".into(), "-1".into())]);
        assert!((FILTER.open)(&mut p, false)
            .err()
            .unwrap()
            .contains("limit"));
    }
}
