//! The ext2 filter: a file inside an ext4 image made by mke2fs, read
//! through ours and Debian's nbdkit, written through ours and then
//! checked by e2fsprogs' own tools (e2fsck, debugfs).

mod common;
mod stack;

use std::path::Path;
use std::process::Command;

use common::*;
use stack::*;

/// An ext4 image holding `/disks/disk.raw` (3 MiB of a pattern) and a
/// small `/hello`.
fn image(t: &TempDir) -> (std::path::PathBuf, Vec<u8>) {
    let mke2fs = require("mke2fs", "e2fsprogs");
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("disks")).unwrap();
    let data = pattern(3 << 20, 21);
    std::fs::write(src.join("disks").join("disk.raw"), &data).unwrap();
    std::fs::write(src.join("hello"), b"hello\n").unwrap();
    let img = t.path().join("fs.img");
    let o = Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&img)
        .arg("16M")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    (img, data)
}

/// The disk through Debian's nbdkit, read without block status: its ext2
/// filter passes on the extents of the filesystem image below, so holes
/// of the image would read as holes of the file (ours reports the file as
/// all data, as a layer without extents must).
fn read_debian(args: &[&str]) -> Vec<u8> {
    let o = run_with(DEBIAN_NBDKIT, args, "nbdcopy --no-extents \"$uri\" -");
    assert!(o.status.success(), "{:?}", o.status);
    o.stdout
}

fn debugfs_cat(img: &Path, path: &str) -> Vec<u8> {
    let o = Command::new(require("debugfs", "e2fsprogs"))
        .args(["-R", &format!("cat {path}")])
        .arg(img)
        .output()
        .unwrap();
    o.stdout
}

#[test]
fn ext2_reads_a_file_inside_the_filesystem_as_debian_does() {
    let t = TempDir::new("ext2");
    let (img, data) = image(&t);
    let im = img.to_str().unwrap();
    let args = ["--filter=ext2", "file", im, "ext2file=/disks/disk.raw"];
    assert!(read_all(&args) == data, "ours");
    assert!(read_debian(&args) == data, "Debian's");
    // The file is all data: the image's holes below are not its holes.
    assert_eq!(map(&args), vec![(0, 3 << 20, 0)]);
    // The export name chooses the file.
    let args = ["--filter=ext2", "file", im, "ext2file=exportname"];
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(
            bin,
            &args,
            "nbdcopy \"nbd+unix:///hello?socket=$unixsocket\" - ",
        );
        assert_eq!(o.stdout, b"hello\n", "{bin}: {o:?}");
    }
    // A file that is not there.
    let args = ["--filter=ext2", "file", im, "ext2file=/nope"];
    refused_on_open(&args, "nope");
    bad(
        &["--filter=ext2", "file", im, "ext2file=relative"],
        "absolute",
    );
    bad(&["--filter=ext2", "file", im], "ext2file");
}

#[test]
fn ext2_writes_land_in_the_file_and_keep_the_filesystem_clean() {
    let t = TempDir::new("ext2-w");
    let (img, _) = image(&t);
    let im = img.to_str().unwrap();
    let new = pattern(3 << 20, 22);
    let src = t.path().join("new");
    std::fs::write(&src, &new).unwrap();
    let args = ["--filter=ext2", "file", im, "ext2file=/disks/disk.raw"];
    let o = run_with(
        BIN,
        &args,
        &format!("nbdcopy --flush {} \"$uri\"", src.display()),
    );
    assert!(o.status.success(), "{o:?}");
    assert!(debugfs_cat(&img, "/disks/disk.raw") == new);
    assert_eq!(debugfs_cat(&img, "/hello"), b"hello\n");
    let fsck = Command::new(require("e2fsck", "e2fsprogs"))
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{fsck:?}");
    // Debian's filter reads what ours wrote.
    assert!(read_debian(&args) == new);
    // Read-only: refused.
    let mut ro = vec!["-r"];
    ro.extend(args);
    let o = run_with(BIN, &ro, &format!("nbdcopy {} \"$uri\"", src.display()));
    assert!(!o.status.success());
}
