//! The offset filter: serves a range of the layer below, from `offset=`
//! (default 0) for `range=` bytes (default: to the end), as
//! nbdkit-offset-filter(1). Reads, writes, trims, zeroes, cache requests
//! and block status move by the offset; reads keep the plugin's
//! zero-copy path.

use nbd_core::server::backend::Backend;

use super::window::{self, fail, size_below};
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "offset",
    params: &[
        (
            "offset",
            "where the served range starts in the layer below (default 0)",
        ),
        (
            "range",
            "how many bytes are served (default: up to the end of the layer below)",
        ),
    ],
    open: |p, _| {
        let offset = p.take_size("offset")?.unwrap_or(0);
        let range = p.take_size("range")?;
        Ok(window::filter("offset", move |next: &dyn Backend| {
            let len = match range {
                Some(r) => r,
                None => {
                    let size = size_below("offset", next)?;
                    size.checked_sub(offset).ok_or_else(|| {
                        fail(
                            "offset",
                            format!("offset {offset} is beyond the end of the disk ({size} bytes)"),
                        )
                    })?
                }
            };
            Ok((offset, len))
        }))
    },
};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nbd_core::server::backend::{Backend, Extents, Read, Result, ZeroFlags};
    use nbd_core::wire::consts::allocation;

    use crate::chain::testing::{filter_over, info};
    use crate::chain::Opened;
    use crate::params::Params;
    use crate::plugins::memory::Memory;

    fn open(mem: &Arc<Memory>, args: &[(&str, &str)]) -> Result<Opened> {
        filter_over(&super::FILTER, args, Arc::clone(mem) as _).open(info())
    }

    #[test]
    fn moves_every_request_and_lends() {
        let mem = Arc::new(Memory::new(1 << 20));
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8 + 1).collect();
        mem.pwrite(&data, 4096, false).unwrap();
        let c = open(&mem, &[("offset", "4096"), ("range", "8192")]).unwrap();
        assert_eq!(c.size().unwrap(), 8192);
        let mut b = vec![0u8; 100];
        c.pread(&mut b, 10).unwrap();
        assert_eq!(b, data[10..110]);

        // A read passed on keeps the plugin's zero-copy path.
        let mut got: Vec<u8> = Vec::new();
        let mut send = |s: &[&[u8]]| {
            got.extend(s.iter().flat_map(|x| x.iter()));
            true
        };
        let mut r = Read::lending(&mut b, 20, &mut send);
        c.read(&mut r).unwrap();
        assert!(r.was_lent());
        assert_eq!(r.offset, 20);
        assert_eq!(got, data[20..120]);

        c.pwrite(b"abc", 0, false).unwrap();
        let mut t = [0u8; 3];
        mem.pread(&mut t, 4096).unwrap();
        assert_eq!(&t, b"abc");
        c.zero(3, 0, ZeroFlags::default()).unwrap();
        mem.pread(&mut t, 4096).unwrap();
        assert_eq!(t, [0; 3]);

        let mut e = Extents::new();
        e.reset(0, 8192, false);
        c.extents(8192, 0, &mut e).unwrap();
        let total: u64 = e.as_slice().iter().map(|x| x.0).sum();
        assert_eq!(total, 8192);
        assert_eq!(e.as_slice()[0].1 & allocation::HOLE, 0);

        // Without range=, up to the end.
        let c = open(&mem, &[("offset", "65536")]).unwrap();
        assert_eq!(c.size().unwrap(), (1 << 20) - 65536);
    }

    #[test]
    fn a_window_beyond_the_end_fails_the_open() {
        let mem = Arc::new(Memory::new(1 << 20));
        let e = open(&mem, &[("offset", "2M")]).err().unwrap();
        assert!(e.message.contains("beyond"), "{e}");
        let e = open(&mem, &[("offset", "1M"), ("range", "1")])
            .err()
            .unwrap();
        assert!(e.message.contains("beyond"), "{e}");
        let mut p = Params::new("offset", vec![("range".into(), "1x".into())]);
        let e = (super::FILTER.open)(&mut p, false).err().unwrap();
        assert!(e.contains("range"), "{e}");
    }
}
