//! The data plugin's `data=` grammar (and `base64=`), through the
//! plugin's own `open`. Built with nbd-server-bin's `fuzzing` feature:
//! `<FILE` reads nothing and an image may not build more than 1 MiB at
//! once, so any allocation near -malloc_limit_mb is a missing bound.
//! Invariants: no panic, bounded memory, and the disk's size is what was
//! asked for or the furthest point the data reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_core::server::Backend;
use nbd_server_bin::params::Params;
use nbd_server_bin::plugins::data;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, text)) = input.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text).into_owned();
    let mut pairs = vec![(
        if mode & 1 != 0 { "base64" } else { "data" }.to_string(),
        text,
    )];
    if mode & 2 != 0 {
        pairs.push(("size".into(), "1M".into()));
    }
    if mode & 4 != 0 {
        // A variable for `$v`, in the same format.
        pairs.push(("v".into(), "1 2 3 @+4 \"x\"".into()));
    }
    let mut p = Params::new("data", pairs);
    if let Ok(disk) = data::open(&mut p) {
        let size = disk.size().expect("a memory disk has a size");
        if mode & 2 != 0 {
            assert_eq!(size, 1 << 20);
        }
        // Read what is there (the first and last bytes).
        let mut buf = vec![0u8; size.min(4096) as usize];
        disk.pread(&mut buf, 0).expect("read the start");
        let last = size - buf.len() as u64;
        disk.pread(&mut buf, last).expect("read the end");
    }
});
