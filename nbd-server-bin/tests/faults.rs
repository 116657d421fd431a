//! Backing-store faults reach the client as the right NBD error, and the
//! server goes on serving: ENOSPC from a full file system under the file
//! plugin, EIO from the error filter (always, at random, and only while a
//! trigger file exists: a disk whose reads fail for a while). Every write
//! acknowledged before, between and after the faults reads back whole.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nbd_core::wire::consts::{cmd, cmd_flags};

const NBD_EIO: u32 = 5;
const NBD_ENOSPC: u32 = 28;

/// A tmpfs of `size` mounted on a private directory; unmounted on drop.
struct SmallFs {
    mnt: PathBuf,
    _dir: TempDir,
}

impl SmallFs {
    /// None (and a message) where mount(8) is not allowed: not root.
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = TempDir::new("smallfs");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(SmallFs { mnt, _dir: dir }),
            o => {
                eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {o:?}");
                None
            }
        }
    }
    fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

#[test]
fn enospc_reaches_the_client_and_acknowledged_writes_stay_whole() {
    let Some(fs) = SmallFs::mount("2M") else {
        return;
    };
    let img = fs.path().join("disk.img");
    // An 8 MiB sparse file on a 2 MiB file system.
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let srv = Server::start(&["file", img.to_str().unwrap()]);
    let mut c = srv.client();
    const CHUNK: usize = 256 << 10;
    let mut acked = Vec::new();
    let mut enospc = None;
    for i in 0..(8 << 20) / CHUNK {
        let data = pattern(CHUNK, i as u8);
        let off = (i * CHUNK) as u64;
        // Every other write with FUA: the flag must not hide the error.
        let flags = if i % 2 == 1 { cmd_flags::FUA } else { 0 };
        let r = c.cmd(cmd::WRITE, flags, off, CHUNK as u32, &data);
        match r.error {
            0 => acked.push((off, data)),
            NBD_ENOSPC => {
                enospc = Some(off);
                break;
            }
            e => panic!("write at {off}: NBD error {e}, not ENOSPC"),
        }
    }
    let full_at = enospc.expect("the file system never filled");
    assert!(!acked.is_empty(), "not even the first write fitted");
    // Still full: the next write fails the same way, and the connection
    // stays.
    let r = c.cmd(
        cmd::WRITE,
        0,
        full_at + CHUNK as u64,
        CHUNK as u32,
        &pattern(CHUNK, 99),
    );
    assert_eq!(r.error, NBD_ENOSPC);
    // Every acknowledged write reads back whole, on this connection and on
    // a new one; flush works.
    assert_eq!(c.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    let mut c2 = srv.client();
    for (off, data) in &acked {
        assert!(c.read(*off, CHUNK as u32) == *data, "write at {off} lost");
        assert!(c2.read(*off, CHUNK as u32) == *data, "write at {off} lost");
    }
    // Write-zeroes that must allocate (NO_HOLE) fails the same way; one
    // that may punch a hole needs no space.
    let far = 6 << 20;
    let r = c.cmd(
        cmd::WRITE_ZEROES,
        cmd_flags::NO_HOLE,
        far,
        CHUNK as u32,
        &[],
    );
    assert_eq!(r.error, NBD_ENOSPC, "zero with NO_HOLE on a full disk");
    let r = c.cmd(cmd::WRITE_ZEROES, 0, far, CHUNK as u32, &[]);
    assert_eq!(r.error, 0, "zero that may trim on a full disk");
    assert!(c.read(far, CHUNK as u32).iter().all(|&b| b == 0));
    // Space already allocated can be rewritten.
    let (off, _) = acked[0];
    let again = pattern(CHUNK, 200);
    c2.write(off, &again);
    assert!(c.read(off, CHUNK as u32) == again);
    // Freeing space (trim punches holes) makes writes possible again.
    let (last, _) = *acked.last().unwrap();
    assert_eq!(c.cmd(cmd::TRIM, 0, last, CHUNK as u32, &[]).error, 0);
    let fresh = pattern(4096, 201);
    c.write(full_at, &fresh);
    assert!(c2.read(full_at, 4096) == fresh);
    c.disconnect();
    c2.disconnect();
    drop(srv);
}

#[test]
fn eio_from_the_error_filter_fails_only_its_request() {
    let d = TempDir::new("faults-eio");
    let img = d.path().join("disk.img");
    let data = pattern(1 << 20, 3);
    std::fs::write(&img, &data).unwrap();
    let srv = Server::start(&[
        "--filter=error",
        "file",
        img.to_str().unwrap(),
        "error=EIO",
        "error-pread-rate=50%",
    ]);
    let mut c = srv.client();
    let (mut failed, mut good) = (0, 0);
    for i in 0..200u64 {
        let off = (i * 4096) % (1 << 20);
        let r = c.cmd(cmd::READ, 0, off, 4096, &[]);
        match r.error {
            0 => {
                assert!(r.data == data[off as usize..off as usize + 4096]);
                good += 1;
            }
            NBD_EIO => failed += 1,
            e => panic!("read: NBD error {e}, not EIO"),
        }
    }
    assert!(failed > 20 && good > 20, "{failed} failed, {good} good");
    // Writes are not affected, and another connection is served.
    c.write(8192, &[7u8; 4096]);
    let mut c2 = srv.client();
    assert_eq!(c2.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    c.disconnect();
    c2.disconnect();
    drop(srv);
    assert!(std::fs::read(&img).unwrap()[8192..12288] == [7u8; 4096]);
}

#[test]
fn failed_writes_change_nothing_and_reads_fail_while_the_disk_is_bad() {
    let d = TempDir::new("faults-trigger");
    let img = d.path().join("disk.img");
    let data = pattern(1 << 20, 4);
    std::fs::write(&img, &data).unwrap();
    let bad = d.path().join("disk-is-bad");
    let bad_arg = format!("error-file={}", bad.display());
    let srv = Server::start(&[
        "--filter=error",
        "file",
        img.to_str().unwrap(),
        "error=EIO",
        "error-rate=1",
        &bad_arg,
    ]);
    let mut c = srv.client();
    assert!(c.read(0, 4096) == data[..4096]);
    // The disk goes bad: reads, writes and flushes fail with EIO, and a
    // failed write leaves nothing behind.
    std::fs::write(&bad, b"").unwrap();
    let r = c.cmd(cmd::READ, 0, 0, 4096, &[]);
    assert_eq!(r.error, NBD_EIO);
    let r = c.cmd(cmd::WRITE, cmd_flags::FUA, 4096, 4096, &[1u8; 4096]);
    assert_eq!(r.error, NBD_EIO);
    let mut c2 = srv.client();
    assert_eq!(c2.cmd(cmd::READ, 0, 0, 512, &[]).error, NBD_EIO);
    // It recovers: the same connections go on, the failed write is not
    // there, new writes are.
    std::fs::remove_file(&bad).unwrap();
    assert!(c.read(4096, 4096) == data[4096..8192]);
    c2.write(4096, &[2u8; 4096]);
    assert!(c.read(4096, 4096) == [2u8; 4096]);
    c.disconnect();
    c2.disconnect();
    drop(srv);
    let on_disk = std::fs::read(&img).unwrap();
    assert!(on_disk[4096..8192] == [2u8; 4096]);
    assert!(on_disk[..4096] == data[..4096] && on_disk[8192..] == data[8192..]);
}

/// Fills the file system of `dir` with a file, up to ENOSPC; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
    }
    p
}

/// The cache filter (writeback) holds writes in memory: a flush that
/// cannot write them down fails with ENOSPC and keeps them, and a flush
/// once there is room writes them.
#[test]
fn cache_filter_flush_reports_enospc_and_keeps_the_data() {
    let Some(fs) = SmallFs::mount("2M") else {
        return;
    };
    let img = fs.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let filler = fill(fs.path());
    let srv = Server::start(&["--filter=cache", "file", img.to_str().unwrap()]);
    let mut c = srv.client();
    let data = pattern(1 << 20, 11);
    for (i, piece) in data.chunks(256 << 10).enumerate() {
        c.write((i * (256 << 10)) as u64, piece);
    }
    let r = c.cmd(cmd::FLUSH, 0, 0, 0, &[]);
    assert_eq!(r.error, NBD_ENOSPC, "flush on a full file system");
    // Still served, from the cache, on this connection and a new one.
    assert!(c.read(0, 1 << 20) == data);
    let mut c2 = srv.client();
    assert!(c2.read(0, 1 << 20) == data);
    // Room again: the next flush writes everything down.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(c2.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    assert!(std::fs::read(&img).unwrap()[..1 << 20] == data[..]);
    c.disconnect();
    c2.disconnect();
}

/// The xnbd-cache filter with its cache image on a full file system: a
/// write that cannot be stored fails with ENOSPC and marks nothing
/// cached, so its range still reads as the layer below, not as whatever
/// part of it reached the cache image.
#[test]
fn xnbd_cache_write_enospc_leaves_the_block_uncached() {
    let Some(fs) = SmallFs::mount("1M") else {
        return;
    };
    let d = TempDir::new("faults-xnbd-enospc");
    let below = d.path().join("below.img");
    let base = pattern(4 << 20, 12);
    std::fs::write(&below, &base).unwrap();
    let cache = format!("cache={}", fs.path().join("cache.img").display());
    let bitmap = format!("bitmap={}", fs.path().join("bitmap").display());
    let srv = Server::start(&[
        "--filter=xnbd-cache",
        "file",
        below.to_str().unwrap(),
        &cache,
        &bitmap,
        "fetch-on-read=false",
    ]);
    let mut c = srv.client();
    // A first write and flush allocate the bitmap's page; then the file
    // system is filled.
    c.write(0, &[1u8; 4096]);
    assert_eq!(c.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    let _filler = fill(fs.path());
    let mut acked = vec![(0u64, vec![1u8; 4096])];
    let mut failed = Vec::new();
    for i in 1..32u64 {
        let off = i * (64 << 10);
        let data = pattern(64 << 10, i as u8);
        let r = c.cmd(cmd::WRITE, 0, off, 64 << 10, &data);
        match r.error {
            0 => acked.push((off, data)),
            NBD_ENOSPC => failed.push(off),
            e => panic!("write at {off}: NBD error {e}, not ENOSPC"),
        }
    }
    assert!(!failed.is_empty(), "the file system never filled");
    let mut c2 = srv.client();
    for (off, data) in &acked {
        assert!(
            c2.read(*off, data.len() as u32) == *data,
            "write at {off} lost"
        );
    }
    for off in &failed {
        let o = *off as usize;
        assert!(
            c2.read(*off, 64 << 10) == base[o..o + (64 << 10)],
            "a failed write at {off} shows"
        );
    }
    c.disconnect();
    c2.disconnect();
}

/// The xnbd-cache filter (as in xnbd's proxy) over a layer whose reads
/// fail: the client gets EIO, the block is not marked cached (so it is
/// never served as the zeros of an unwritten cache image), and once reads
/// work again it is fetched and served as the layer below holds it.
#[test]
fn xnbd_cache_fetch_eio_marks_nothing_cached() {
    let d = TempDir::new("faults-xnbd-eio");
    let below = d.path().join("below.img");
    let base = pattern(1 << 20, 13);
    std::fs::write(&below, &base).unwrap();
    let bad = d.path().join("remote-is-bad");
    let bitmap_path = d.path().join("bitmap");
    let cache = format!("cache={}", d.path().join("cache.img").display());
    let bitmap = format!("bitmap={}", bitmap_path.display());
    let bad_arg = format!("error-pread-file={}", bad.display());
    let srv = Server::start(&[
        "--filter=xnbd-cache",
        "--filter=error",
        "file",
        below.to_str().unwrap(),
        &cache,
        &bitmap,
        "error=EIO",
        "error-pread-rate=1",
        &bad_arg,
    ]);
    let mut c = srv.client();
    assert!(c.read(0, 4096) == base[..4096]);
    std::fs::write(&bad, b"").unwrap();
    assert_eq!(c.cmd(cmd::READ, 0, 8192, 8192, &[]).error, NBD_EIO);
    // A partial write of an uncached block needs the block first: it
    // fails too, and writes nothing.
    let r = c.cmd(cmd::WRITE, 0, 65536 + 100, 10, &[9u8; 10]);
    assert_eq!(r.error, NBD_EIO);
    // Cached blocks are still served; a whole-block write needs no fetch.
    assert!(c.read(0, 4096) == base[..4096]);
    c.write(4096 * 40, &[3u8; 4096]);
    assert_eq!(c.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    let words: Vec<u64> = std::fs::read(&bitmap_path)
        .unwrap()
        .chunks_exact(8)
        .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
        .collect();
    // Blocks 0 (read) and 40 (written) only: not 2 and 3 (the failed
    // read), not 16 (the failed write).
    assert_eq!(words[0], 1 | (1 << 40), "bitmap word 0: {:#x}", words[0]);
    assert!(words[1..].iter().all(|&w| w == 0));
    std::fs::remove_file(&bad).unwrap();
    let mut c2 = srv.client();
    assert!(c2.read(8192, 8192) == base[8192..16384]);
    assert!(c2.read(65536, 4096) == base[65536..65536 + 4096]);
    assert!(c2.read(4096 * 40, 4096) == [3u8; 4096]);
    c.disconnect();
    c2.disconnect();
    drop(srv);
    assert!(std::fs::read(&below).unwrap() == base, "below was written");
}
