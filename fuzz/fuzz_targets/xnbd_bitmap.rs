//! xnbd's bitmap loader (`XnbdCache::start` on an existing cache image
//! and bitmap). The first byte says whether the cache image exists (and
//! is of the disk's size) and whether to clear the bitmap; the next two
//! give the disk's size in 4 KiB blocks (plus a tail); the rest is the
//! bitmap file. Invariants: no panic; a refused start leaves both files
//! as they were; an accepted one reports exactly the bits of the file's
//! blocks as cached (none after clear-bitmap, none past the last block).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nbd_server_bin::filters::xnbd_cache::{bitmap_len, Options, XnbdCache, BLOCK};
use nbd_server_bin::plugins::memory::Memory;

/// This process's folder for the two files (one fuzzer per process), in
/// RAM when there is /dev/shm: the loader syncs the files it sizes.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("nbd-fuzz-bitmap-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (mode, blocks, bitmap) = (data[0], u16::from_be_bytes([data[1], data[2]]), &data[3..]);
    // Up to 64 Ki blocks (256 MiB, sparse) and a tail of part of a block.
    let size = u64::from(blocks) * BLOCK + u64::from(mode >> 4) * 256;
    let clear = mode & 2 != 0;
    let cache = dir().join("cache");
    let bm = dir().join("bitmap");
    let _ = std::fs::remove_file(&cache);
    std::fs::write(&bm, bitmap).expect("write bitmap");
    if mode & 1 != 0 {
        let f = std::fs::File::create(&cache).expect("cache image");
        f.set_len(size).expect("size the cache image");
    }
    let c = XnbdCache::new(Options {
        cache: cache.clone(),
        bitmap: bm.clone(),
        clear_bitmap: clear,
        fetch_on_read: true,
    });
    let below = Memory::new(size);
    let nblocks = size.div_ceil(BLOCK);
    match c.start(&below) {
        Err(_) => {
            assert_eq!(
                std::fs::read(&bm).expect("bitmap"),
                bitmap,
                "a refused start changed the bitmap"
            );
            let clen = std::fs::metadata(&cache).map(|m| m.len()).ok();
            let want = (mode & 1 != 0).then_some(size);
            assert_eq!(clen, want, "a refused start changed the cache image");
        }
        Ok(()) => {
            let loaded = !clear && bitmap.len() as u64 == bitmap_len(size);
            let bit = |b: u64| {
                loaded && {
                    let w = (b / 64) as usize * 8;
                    let word = u64::from_ne_bytes(bitmap[w..w + 8].try_into().unwrap());
                    word & (1 << (b % 64)) != 0
                }
            };
            let mut n = 0;
            for b in 0..nblocks {
                assert_eq!(c.is_cached(b), bit(b), "block {b}");
                n += u64::from(bit(b));
            }
            assert_eq!(c.progress(), (n, nblocks));
            assert_eq!(
                std::fs::metadata(&bm).expect("bitmap").len(),
                bitmap_len(size),
                "the bitmap file after start"
            );
        }
    }
});
