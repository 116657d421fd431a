//! The nofilter filter (nbdkit-nofilter-filter(1)): a layer that changes
//! nothing. Every call passes to the layer below as it came, reads keep
//! their zero-copy path; it exists to test the chain itself.

use std::sync::Arc;

use nbd_core::server::backend::{ConnectionInfo, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "nofilter",
    params: &[],
    open: |_, _| Ok(Arc::new(NoFilter)),
};

/// Passes everything on: every method keeps its default.
pub struct NoFilter;

impl Filter for NoFilter {
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

impl FilterHandle for NoFilter {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over, info};
    use crate::plugins::memory::Memory;
    use nbd_core::server::backend::{Backend, Read};

    #[test]
    fn changes_nothing_and_keeps_lending() {
        let mem = Arc::new(Memory::new(8192));
        mem.pwrite(&[7; 100], 50, false).unwrap();
        let c = filter_over(&FILTER, &[], mem).open(info()).unwrap();
        assert_eq!(c.size().unwrap(), 8192);
        assert!(c.can_write().unwrap());
        let mut b = [0u8; 200];
        c.pread(&mut b, 0).unwrap();
        assert_eq!(b[50..150], [7; 100]);
        let mut send = |_: &[&[u8]]| true;
        let mut r = Read::lending(&mut b, 0, &mut send);
        c.read(&mut r).unwrap();
        assert!(r.was_lent());
    }
}
