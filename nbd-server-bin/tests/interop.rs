//! Real peers against our server: nbdinfo, qemu-img, nbdcopy (Debian's
//! libnbd-bin and qemu-utils). A missing peer fails with the package name.

mod common;

use std::process::Command;

use common::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run peer");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn nbdinfo_json_and_map() {
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let srv = Server::start(&["memory", "3G"]);
    let mut c = srv.client();
    c.write(1 << 20, &[1u8; 65536]);
    c.disconnect();
    let j = run(Command::new(&nbdinfo).arg("--json").arg(srv.uri()));
    assert!(j.contains("\"export-size\": 3221225472"), "{j}");
    for flag in [
        "\"is_read_only\": false",
        "\"can_flush\": true",
        "\"can_fua\": true",
        "\"can_trim\": true",
        "\"can_zero\": true",
        "\"can_fast_zero\": true",
        "\"can_multi_conn\": true",
        "\"can_cache\": true",
        "\"can_df\": true",
        "\"base:allocation\"",
        "\"protocol\": \"newstyle-fixed\"",
        "\"structured\": true",
    ] {
        assert!(j.contains(flag), "{flag} missing in {j}");
    }
    let m = run(Command::new(&nbdinfo).arg("--map").arg(srv.uri()));
    let rows: Vec<Vec<&str>> = m.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][..3], ["0", "1048576", "3"], "{m}");
    assert_eq!(rows[1][..3], ["1048576", "65536", "0"], "{m}");
    assert_eq!(rows[2][..3], ["1114112", "3220111360", "3"], "{m}");

    let ro = Server::start(&["-r", "memory", "1M"]);
    let j = run(Command::new(&nbdinfo).arg("--json").arg(ro.uri()));
    assert!(j.contains("\"is_read_only\": true"), "{j}");
}

#[test]
fn qemu_img_convert_matches() {
    let qemu_img = require("qemu-img", "qemu-utils");
    let dir = TempDir::new("qemu");
    let src = dir.path().join("src.img");
    let dst = dir.path().join("dst.img");
    let mut data = pattern(5 << 20, 9);
    data[1 << 20..2 << 20].fill(0);
    std::fs::write(&src, &data).unwrap();
    let srv = Server::start(&["-r", "file", src.to_str().unwrap()]);
    run(Command::new(&qemu_img)
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(srv.uri())
        .arg(&dst));
    assert!(std::fs::read(&dst).unwrap() == data, "copy differs");
}

#[test]
fn nbdcopy_into_memory_and_back() {
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("copy");
    let src = dir.path().join("src.img");
    let back = dir.path().join("back.img");
    let data = pattern(24 << 20, 3);
    std::fs::write(&src, &data).unwrap();
    let srv = Server::start(&["memory", "24M"]);
    run(Command::new(&nbdcopy).arg(&src).arg(srv.uri()));
    std::fs::File::create(&back).unwrap();
    run(Command::new(&nbdcopy).arg(srv.uri()).arg(&back));
    assert!(std::fs::read(&back).unwrap() == data, "round trip differs");
}
