//! The iso, linuxdisk and floppy plugins: disks made from a directory,
//! read back with nbdcopy and opened by the filesystems' own tools
//! (xorriso, e2fsck and debugfs, mtools), ours beside Debian's nbdkit
//! where Debian's image is readable by those tools.

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use stack::*;

/// A small tree: two files at the top, one in a subdirectory, and a file
/// whose content is long enough to span several blocks.
fn tree(t: &TempDir) -> PathBuf {
    let d = t.path().join("tree");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("hello.txt"), b"hello, world\n").unwrap();
    std::fs::write(d.join("sub").join("inner"), b"inside\n").unwrap();
    std::fs::write(d.join("big.bin"), pattern(300_000, 7)).unwrap();
    d
}

/// The whole disk that `bin ARGS` serves, copied into `out`.
fn copy_out(bin: &str, args: &[&str], out: &Path) {
    let cmd = format!("nbdcopy \"$uri\" {}", out.display());
    let o = run_with(bin, args, &cmd);
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (start, sectors, type) of each partition, by sfdisk.
fn partitions(img: &Path) -> Vec<(u64, u64, String)> {
    let dump = ok(Command::new(require("sfdisk", "fdisk")).arg("-d").arg(img));
    dump.lines()
        .filter(|l| l.contains(": start="))
        .map(|l| {
            let field = |k: &str| {
                let at = l.find(k).unwrap() + k.len();
                l[at..].split(',').next().unwrap().trim().to_string()
            };
            (
                field("start=").parse().unwrap(),
                field("size=").parse().unwrap(),
                field("type="),
            )
        })
        .collect()
}

/// The bytes of partition 1 of `img`.
fn partition_one(img: &Path, out: &Path) {
    let (start, sectors, _) = partitions(img)[0].clone();
    let disk = std::fs::read(img).unwrap();
    let (a, b) = (start as usize * 512, (start + sectors) as usize * 512);
    std::fs::write(out, &disk[a..b]).unwrap();
}

#[test]
fn iso_holds_the_directory_as_debian_makes_it() {
    let xorriso = require("xorriso", "xorriso");
    let t = TempDir::new("iso");
    let src = tree(&t);
    let s = src.to_str().unwrap();
    for (i, bin) in [BIN, DEBIAN_NBDKIT].into_iter().enumerate() {
        let img = t.path().join(format!("{i}.iso"));
        copy_out(bin, &["iso", s, "params=-JrT -V MYDISC"], &img);
        let out = t.path().join(format!("x{i}"));
        ok(Command::new(&xorriso)
            .args(["-osirrox", "on", "-indev"])
            .arg(&img)
            .args(["-extract", "/"])
            .arg(&out));
        for f in ["hello.txt", "sub/inner", "big.bin"] {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(src.join(f)).unwrap(),
                "{bin}: {f}"
            );
        }
        // params= reached the program: the volume ID is set.
        let id = ok(Command::new(&xorriso)
            .arg("-indev")
            .arg(&img)
            .args(["-pvd_info"])
            .stderr(std::process::Stdio::null()));
        assert!(id.contains("MYDISC"), "{bin}: {id}");
    }
    // Several directories are merged; a missing one is refused.
    let more = t.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::write(more.join("extra"), b"x").unwrap();
    let img = t.path().join("merged.iso");
    copy_out(BIN, &["iso", s, &format!("dir={}", more.display())], &img);
    let out = t.path().join("merged");
    ok(Command::new(&xorriso)
        .args(["-osirrox", "on", "-indev"])
        .arg(&img)
        .args(["-extract", "/"])
        .arg(&out));
    assert!(out.join("extra").exists() && out.join("hello.txt").exists());
    bad(&["iso", "/nonexistent/dir"], "realpath");
    bad(&["iso"], "dir=");
}

#[test]
fn linuxdisk_is_a_gpt_disk_with_a_clean_ext_filesystem() {
    let e2fsck = require("e2fsck", "e2fsprogs");
    let debugfs = require("debugfs", "e2fsprogs");
    let t = TempDir::new("linuxdisk");
    let src = tree(&t);
    let s = src.to_str().unwrap();
    for (i, bin) in [BIN, DEBIAN_NBDKIT].into_iter().enumerate() {
        for fs in ["ext2", "ext4"] {
            let img = t.path().join(format!("{i}-{fs}.img"));
            let ty = format!("type={fs}");
            copy_out(
                bin,
                &["linuxdisk", s, "label=ROOTFS", &ty, "size=+2M"],
                &img,
            );
            let parts = partitions(&img);
            assert_eq!(parts.len(), 1, "{bin}");
            assert_eq!(parts[0].0, 2048, "{bin}: starts at 1 MiB");
            let part = t.path().join(format!("{i}-{fs}.part"));
            partition_one(&img, &part);
            ok(Command::new(&e2fsck).arg("-fn").arg(&part));
            let cat = |f: &str| {
                let req = format!("cat /{f}");
                let o = Command::new(&debugfs)
                    .args(["-R", &req])
                    .arg(&part)
                    .output()
                    .unwrap();
                o.stdout
            };
            assert_eq!(cat("hello.txt"), b"hello, world\n", "{bin} {fs}");
            assert_eq!(cat("sub/inner"), b"inside\n", "{bin} {fs}");
            assert_eq!(cat("big.bin"), pattern(300_000, 7), "{bin} {fs}");
            let stats = ok(Command::new(&debugfs).args(["-R", "stats"]).arg(&part));
            assert!(
                stats.contains("Filesystem volume name:   ROOTFS"),
                "{stats}"
            );
            let has_journal = stats.contains("has_journal");
            assert_eq!(has_journal, fs == "ext4", "{bin} {fs}");
            // size=+2M: at least 2 MiB free.
            let field = |k: &str| -> u64 {
                let l = stats.lines().find(|l| l.starts_with(k)).unwrap();
                l[k.len()..].trim().parse().unwrap()
            };
            let free = field("Free blocks:") * field("Block size:");
            assert!(free >= 2 << 20, "{bin} {fs}: {free} bytes free");
        }
    }
    // An exact size too small for the files is refused at start-up.
    bad(&["linuxdisk", s, "size=64K"], "mke2fs");
    bad(&["linuxdisk", s, "type=xfs"], "type");
}

#[test]
fn floppy_is_an_mbr_disk_with_fat32_holding_the_files() {
    let mtype = require("mtype", "mtools");
    let fsck = require("fsck.fat", "dosfstools");
    let t = TempDir::new("floppy");
    let src = tree(&t);
    let s = src.to_str().unwrap();
    let img = t.path().join("f.img");
    copy_out(BIN, &["floppy", s, "label=MYFLOPPY"], &img);
    // The same table as Debian's: one FAT32 (LBA) partition at 1 MiB.
    let deb = t.path().join("deb.img");
    copy_out(DEBIAN_NBDKIT, &["floppy", s], &deb);
    let (ours, theirs) = (partitions(&img), partitions(&deb));
    assert_eq!(ours.len(), 1);
    assert_eq!((ours[0].0, &ours[0].2), (theirs[0].0, &theirs[0].2));
    assert_eq!(ours[0].2, "c");
    let part = t.path().join("f.part");
    partition_one(&img, &part);
    let check = ok(Command::new(&fsck).arg("-n").arg(&part));
    assert!(
        check.contains("MYFLOPPY") || check.contains("files"),
        "{check}"
    );
    let read = |f: &str| {
        let o = Command::new(&mtype)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&part)
            .arg(format!("::/{f}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "mtype {f}: {o:?}");
        o.stdout
    };
    assert_eq!(read("hello.txt"), b"hello, world\n");
    assert_eq!(read("sub/inner"), b"inside\n");
    assert_eq!(read("big.bin"), pattern(300_000, 7));
    bad(&["floppy", s, "label=MUCH-TOO-LONG-LABEL"], "11");
    bad(&["floppy", s, "size=1M"], "too small");
}
