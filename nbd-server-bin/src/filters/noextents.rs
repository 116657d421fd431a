//! The noextents filter (nbdkit-noextents-filter(1)): hides the extents
//! of the layer below. The client is told extents are not supported, and
//! a block status request that arrives anyway reports everything as data.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "noextents",
    params: &[],
    open: |_, _| Ok(Arc::new(NoExtents)),
};

/// Hides the layer's extents: everything is reported as data.
pub struct NoExtents;

impl Filter for NoExtents {
    /// Only reshapes requests and answers: never blocks by itself.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for NoExtents {
    fn can_extents(&self, _next: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    fn extents(
        &self,
        _next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        sink.add(offset, count as u64, 0).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over_memory, info};

    #[test]
    fn everything_is_data() {
        let chain = filter_over_memory(&FILTER, &[]);
        let c = chain.open(info()).unwrap();
        assert!(!c.can_extents().unwrap());
        let mut e = Extents::new();
        e.reset(0, 1 << 20, false);
        c.extents(1 << 20, 0, &mut e).unwrap();
        assert_eq!(e.as_slice(), &[(1 << 20, 0)]);
    }
}
