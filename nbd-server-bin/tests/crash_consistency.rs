//! Crash consistency of our nbdkit's writing stacks: a writing client,
//! SIGKILL of the server at a random moment, a restart on the same file,
//! and a check of every write the server promised was durable (see
//! crash/mod.rs for the loop and for what a SIGKILL can and cannot show).
//!
//! What is promised, per stack (nbdkit's rules, which ours follow):
//! - the file plugin: a write acknowledged with FUA, or acknowledged
//!   before a FLUSH that was then acknowledged, is in the file;
//! - the cache filter, `cache=writeback` (the default): the same, for the
//!   file below (a flush writes the dirty blocks down, FUA writes through);
//! - the cache filter, `cache=writethrough`: every acknowledged write is
//!   in the file below;
//! - the cow filter: nothing written through it survives (its overlay is
//!   temporary by design, as nbdkit-cow-filter(1) says), and the file below
//!   is never changed, whatever the moment of the kill;
//! - the xnbd-cache filter: as the file plugin, for its cache image and
//!   bitmap; the layer below is never written, and every block not
//!   durably written reads as the layer below, never as zeros.
//!
//! `cache=unsafe` promises nothing, and is not tested.

mod common;
mod crash;

use crash::*;

#[test]
fn file_plugin_keeps_flushed_and_fua_writes() {
    let (_d, img) = disk("crash-file");
    let mut t = nbdkit(&["file", img.to_str().unwrap()]);
    crash_loop("file", &mut t, Promise::FlushOrFua, |_| None);
}

#[test]
fn file_plugin_cache_none_keeps_flushed_and_fua_writes() {
    let (_d, img) = disk("crash-file-none");
    let mut t = nbdkit(&["file", img.to_str().unwrap(), "cache=none"]);
    crash_loop("file cache=none", &mut t, Promise::FlushOrFua, |_| None);
}

#[test]
fn cache_filter_writeback_writes_down_on_flush_and_fua() {
    let (_d, img) = disk("crash-cache-wb");
    let mut t = nbdkit(&["--filter=cache", "file", img.to_str().unwrap()]);
    crash_loop("cache writeback", &mut t, Promise::FlushOrFua, |_| None);
}

#[test]
fn cache_filter_writethrough_writes_down_every_acknowledged_write() {
    let (_d, img) = disk("crash-cache-wt");
    let mut t = nbdkit(&[
        "--filter=cache",
        "file",
        img.to_str().unwrap(),
        "cache=writethrough",
    ]);
    crash_loop("cache writethrough", &mut t, Promise::EveryAck, |_| None);
}

#[test]
fn cow_filter_never_changes_the_file_below() {
    let (_d, img) = disk("crash-cow");
    let mut t = nbdkit(&["--filter=cow", "file", img.to_str().unwrap()]);
    crash_loop("cow", &mut t, Promise::Nothing, |_| None);
    assert!(
        std::fs::read(&img).unwrap() == initial_disk(),
        "cow wrote below"
    );
}

#[test]
fn xnbd_cache_filter_keeps_flushed_and_fua_writes() {
    let (d, img) = disk("crash-xnbd-cache");
    let cache = format!("cache={}", d.path().join("cache.img").display());
    let bitmap = format!("bitmap={}", d.path().join("bitmap").display());
    let mut t = nbdkit(&[
        "--filter=xnbd-cache",
        "file",
        img.to_str().unwrap(),
        &cache,
        &bitmap,
    ]);
    crash_loop("xnbd-cache", &mut t, Promise::FlushOrFua, |_| None);
    assert!(
        std::fs::read(&img).unwrap() == initial_disk(),
        "xnbd-cache wrote below"
    );
}
