//! The nofilter, swab, checkwrite, cacheextents, extentlist and
//! exportname filters through the server binary and real clients, each
//! against Debian's nbdkit with the same arguments and the same client.

mod common;
mod stack;

use common::*;
use stack::*;

const HOLE_ZERO: u32 = 3;

/// Runs a Python script with libnbd's bindings against `bin ARGS`: the
/// script starts with `h` connected to the server (`errno` imported);
/// returns what it prints.
fn py_with(bin: &str, args: &[&str], script: &str) -> String {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("py");
    let file = dir.path().join("t.py");
    std::fs::write(
        &file,
        format!(
            "import errno, sys, nbd\nh = nbd.NBD()\nh.add_meta_context('base:allocation')\nh.connect_uri(sys.argv[1])\n{script}\n"
        ),
    )
    .unwrap();
    let o = run_with(
        bin,
        args,
        &format!("/usr/bin/python3 {} \"$uri\"", file.display()),
    );
    assert!(
        o.status.success(),
        "{bin} {args:?}: {script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The same script against ours and Debian's: the outputs must agree.
fn py_same(args: &[&str], script: &str) -> String {
    let ours = py_with(BIN, args, script);
    assert_eq!(
        ours,
        py_with(DEBIAN_NBDKIT, args, script),
        "{args:?}: {script}"
    );
    ours
}

/// A script line that runs `call` and prints the errno name it fails
/// with, or "ok".
fn errno_of(call: &str) -> String {
    format!(
        "try:\n    {call}\n    print('ok')\nexcept nbd.Error as e:\n    print(errno.errorcode.get(e.errno, e.errno))"
    )
}

/// `nbdinfo` output lines that name a capability or the size, sorted;
/// with `blocks`, the block size lines too (Debian's nbdkit sends them
/// only when a layer sets them; ours always).
fn info_facts_with(bin: &str, args: &[&str], blocks: bool) -> Vec<String> {
    require("nbdinfo", "libnbd-bin");
    let o = run_with(bin, args, "nbdinfo \"$uri\"");
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    let mut v: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("export-size")
                || l.starts_with("can_")
                || l.starts_with("is_read_only")
                || (blocks && l.starts_with("block_size"))
        })
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn same_info(args: &[&str]) -> Vec<String> {
    let ours = info_facts_with(BIN, args, false);
    assert_eq!(
        ours,
        info_facts_with(DEBIAN_NBDKIT, args, false),
        "{args:?}"
    );
    ours
}

/// As [`same_info`], with the block sizes.
fn same_info_blocks(args: &[&str]) -> Vec<String> {
    let ours = info_facts_with(BIN, args, true);
    assert_eq!(ours, info_facts_with(DEBIAN_NBDKIT, args, true), "{args:?}");
    ours
}

fn same_bytes(args: &[&str]) -> Vec<u8> {
    let ours = read_all(args);
    assert!(
        ours == read_all_with(DEBIAN_NBDKIT, args),
        "{args:?}: bytes differ"
    );
    ours
}

fn same_map(args: &[&str]) -> Vec<(u64, u64, u32)> {
    let ours = map(args);
    assert_eq!(ours, map_with(DEBIAN_NBDKIT, args), "{args:?}");
    ours
}

#[test]
fn nofilter_changes_nothing() {
    let args = ["--filter=nofilter", "pattern", "100000"];
    assert_eq!(same_bytes(&args), pattern_bytes(0, 100000));
    same_info(&args);
    let args = ["--filter=nofilter", "data", "@65536 1 @131072 2", "size=1M"];
    same_map(&args);
    same_info(&["--filter=nofilter", "-r", "memory", "1M"]);
    bad(
        &["--filter=nofilter", "null", "1M", "nofilter=1"],
        "nofilter",
    );
}

#[test]
fn swab_swaps_words() {
    for bits in ["8", "16", "32", "64"] {
        let sb = format!("swab-bits={bits}");
        let args = ["--filter=swab", "pattern", "1003", &sb];
        let d = same_bytes(&args);
        let w = bits.parse::<usize>().unwrap() / 8;
        assert_eq!(d.len(), 1003 / w * w);
        let p = pattern_bytes(0, d.len());
        for (i, c) in d.chunks(w).enumerate() {
            let mut want = p[i * w..(i + 1) * w].to_vec();
            want.reverse();
            assert_eq!(c, &want[..], "swab-bits={bits} word {i}");
        }
        same_info_blocks(&args);
    }
    // The default is 16: the manual's picture.
    let d = same_bytes(&["--filter=swab", "data", "0 1 2 3 4 5"]);
    assert_eq!(d, [1, 0, 3, 2, 5, 4]);
    // swab-bits=64 makes the pattern plugin little-endian.
    let d = same_bytes(&["--filter=swab", "pattern", "64", "swab-bits=64"]);
    assert_eq!(u64::from_le_bytes(d[8..16].try_into().unwrap()), 8);
}

#[test]
fn swab_writes_and_alignment() {
    let args = ["--filter=swab", "memory", "64K", "swab-bits=32"];
    let script = [
        "h.pwrite(b'abcdefgh', 4096)",
        "print(h.pread(8, 4096))",
        &errno_of("h.pread(4, 2)"),
        &errno_of("h.pread(2, 0)"),
        &errno_of("h.pwrite(b'xyzw', 1)"),
        &errno_of("h.zero(3, 0)"),
        &errno_of("h.trim(4, 6)"),
        &errno_of("h.zero(8, 4)"),
        &errno_of("h.cache(4, 2)"),
    ]
    .join("\n");
    let out = py_same(&args, &script);
    assert_eq!(
        out,
        "bytearray(b'abcdefgh')\nEINVAL\nEINVAL\nEINVAL\nEINVAL\nEINVAL\nok\nEINVAL\n"
    );
    // Block status in whole words: a 1-byte data extent makes its word
    // data; the rest is a hole.
    let args = [
        "--filter=swab",
        "data",
        "@65537 1",
        "size=1M",
        "swab-bits=64",
    ];
    let m = same_map(&args);
    assert!(m.iter().any(|e| e.2 == 0), "{m:?}");
    bad(
        &["--filter=swab", "null", "1M", "swab-bits=12"],
        "swab-bits",
    );
    bad(&["--filter=swab", "null", "1M", "swab-bits=x"], "swab-bits");
}

#[test]
fn checkwrite_accepts_the_same_data_only() {
    require("nbdcopy", "libnbd-bin");
    let args = [
        "--filter=checkwrite",
        "data",
        "@32768 1 2 3 @65536 4",
        "size=1M",
    ];
    for bin in [BIN, DEBIAN_NBDKIT] {
        // Copying the disk onto itself checks out, sparse or allocated.
        let o = run_with(bin, &args, "nbdcopy \"$uri\" \"$uri\"");
        assert!(o.status.success(), "{bin}: {o:?}");
        let o = run_with(bin, &args, "nbdcopy --allocated \"$uri\" \"$uri\"");
        assert!(o.status.success(), "{bin}: {o:?}");
        // Anything else fails.
        let o = run_with(bin, &args, "nbdcopy -- [ nbdkit pattern size=1M ] \"$uri\"");
        assert!(!o.status.success(), "{bin}: {o:?}");
    }
    let script = [
        &errno_of("h.pwrite(b'\\x01\\x02\\x03', 32768)") as &str,
        &errno_of("h.pwrite(b'\\x01\\x02\\x04', 32768)"),
        &errno_of("h.pwrite(bytes(100), 0)"),
        &errno_of("h.zero(4096, 0)"),
        &errno_of("h.zero(4096, 32768)"),
        &errno_of("h.trim(32768, 65540)"),
        &errno_of("h.trim(4, 32768)"),
        &errno_of("h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)"),
        &errno_of("h.zero(4096, 32768, nbd.CMD_FLAG_FAST_ZERO)"),
        &errno_of("h.flush()"),
        &errno_of("h.pwrite(b'\\x04', 65536, nbd.CMD_FLAG_FUA)"),
        "print(h.pread(4, 32768))",
    ]
    .join("\n");
    let out = py_same(&args, &script);
    assert_eq!(
        out,
        "ok\nEIO\nok\nok\nEIO\nok\nEIO\nok\nENOTSUP\nok\nok\nbytearray(b'\\x01\\x02\\x03\\x00')\n"
    );
    // Every write-like request is offered, even over a read-only plugin.
    let facts = same_info(&["--filter=checkwrite", "pattern", "1M"]);
    for f in [
        "is_read_only: false",
        "can_trim: true",
        "can_zero: true",
        "can_fast_zero: true",
        "can_fua: true",
        "can_flush: true",
        "can_multi_conn: true",
    ] {
        assert!(facts.iter().any(|l| l == f), "{f}: {facts:?}");
    }
    // -r still makes the export read-only.
    let facts = same_info(&["--filter=checkwrite", "-r", "pattern", "1M"]);
    assert!(facts.iter().any(|l| l == "is_read_only: true"), "{facts:?}");
}

#[test]
fn cacheextents_answers_as_the_plugin() {
    let args = [
        "--filter=cacheextents",
        "data",
        "@65536 1 @131072 2 @1000000 3",
        "size=2M",
    ];
    let m = same_map(&args);
    assert!(m.len() >= 5, "{m:?}");
    // One extent at a time, as qemu-img walks a disk: the same answers.
    let script = "
off = 0
out = []
size = h.get_size()
while off < size:
    got = []
    def cb(ctx, o, entries, err):
        got.extend(entries)
    h.block_status(size - off, off, cb, nbd.CMD_FLAG_REQ_ONE)
    out.append((off, got[0], got[1]))
    off += got[0]
print(out)";
    py_same(&args, script);
    // Writes forget the cached answer.
    let script = "
def show():
    got = []
    def cb(ctx, o, entries, err):
        got.extend(entries)
    h.block_status(1 << 20, 0, cb)
    print(got)
show()
h.pwrite(b'x', 300000)
show()
h.zero(65536, 65536)
show()";
    py_same(&["--filter=cacheextents", "memory", "1M"], script);
}

#[test]
fn extentlist_reports_the_list() {
    let dir = TempDir::new("extentlist");
    let list = dir.path().join("list");
    std::fs::write(
        &list,
        "1M 1M hole,zero\n0 64K\n200K\t100K  zero\n3M 1 1\n5M 0 hole\n2M 4096 2\n",
    )
    .unwrap();
    let l = format!("extentlist={}", list.display());
    let args = ["--filter=extentlist", "-r", "pattern", "6M", &l];
    let m = same_map(&args);
    assert_eq!(m[0], (0, 65536, 0));
    assert_eq!(m[1], (65536, 200 * 1024 - 65536, HOLE_ZERO));
    // (nbdcopy skips what the list calls holes.)
    same_bytes(&args);
    same_info(&args);
    // Over a plugin without extents of its own.
    let args = ["--filter=extentlist", "null", "1M", &l];
    same_map(&args);
    // Offsets past the disk are never asked about.
    let args = ["--filter=extentlist", "memory", "100K", &l];
    same_map(&args);

    bad(&["--filter=extentlist", "null", "1M"], "extentlist");
    bad(
        &["--filter=extentlist", "null", "1M", &l, &l],
        "extentlist cannot appear twice",
    );
    bad(
        &[
            "--filter=extentlist",
            "null",
            "1M",
            "extentlist=/nonexistent/x",
        ],
        "/nonexistent/x",
    );
    for (text, needle) in [
        ("0 10\n5 10\n", "overlapping"),
        ("0\n", "cannot parse"),
        ("0 10\n\n", "cannot parse"),
        ("x 10\n", "x"),
        ("0 1Q\n", "1Q"),
    ] {
        std::fs::write(&list, text).unwrap();
        bad(&["--filter=extentlist", "null", "1M", &l], needle);
        let o = run_with(
            DEBIAN_NBDKIT,
            &["--filter=extentlist", "null", "1M", &l],
            "true",
        );
        assert!(!o.status.success(), "Debian took {text:?}: {o:?}");
    }
}

/// A Python script in option mode against `bin ARGS`: lists the exports
/// (sorted), then asks about each of `names` (NBD_OPT_INFO with the
/// name and description); prints one line each.
fn exports_with(bin: &str, args: &[&str], names: &[&str]) -> String {
    let dir = TempDir::new("exports");
    let file = dir.path().join("t.py");
    std::fs::write(
        &file,
        format!(
            "import sys, errno, nbd
h = nbd.NBD()
h.set_opt_mode(True)
h.set_full_info(True)
h.connect_uri(sys.argv[1])
got = []
try:
    h.opt_list(lambda n, d: got.append((n, d)))
    print(sorted(got))
except nbd.Error as e:
    print('list refused', errno.errorcode.get(e.errno, e.errno))
for name in {names:?}:
    h.set_export_name(name)
    try:
        h.opt_info()
        try:
            d = h.get_export_description()
        except nbd.Error:
            d = None
        print(repr(name), h.get_size(), repr(h.get_canonical_export_name()), repr(d))
    except nbd.Error as e:
        print(repr(name), 'refused')
h.opt_abort()
"
        ),
    )
    .unwrap();
    let o = run_with(
        bin,
        args,
        &format!("/usr/bin/python3 {} \"$uri\"", file.display()),
    );
    assert!(
        o.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn same_exports(args: &[&str], names: &[&str]) -> String {
    let ours = exports_with(BIN, args, names);
    assert_eq!(ours, exports_with(DEBIAN_NBDKIT, args, names), "{args:?}");
    ours
}

#[test]
fn exportname_rewrites_names_lists_and_descriptions() {
    let dir = TempDir::new("exportname");
    for (n, len) in [("file1", 4), ("file2", 8), ("file3", 2)] {
        std::fs::write(dir.path().join(n), vec![b'x'; len]).unwrap();
    }
    let d = format!("dir={}", dir.path().display());
    let all = ["file1", "file2", "file3", "nosuch"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--filter=exportname".into(), "file".into(), d.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&'static str], names: &[&str]| -> String {
        let v = with(extra);
        let args: Vec<&str> = v.iter().map(String::as_str).collect();
        same_exports(&args, names)
    };

    // The plugin's list, untouched.
    let out = run(&[], &all);
    assert!(
        out.starts_with("[('file1', ''), ('file2', ''), ('file3', '')]\n"),
        "{out}"
    );
    // The empty name is file2, whose canonical name the client learns.
    let mut names = vec![""];
    names.extend(all);
    let out = run(&["default-export=file2"], &names);
    assert!(out.contains("'' 8 'file2' None\n"), "{out}");
    let out = run(
        &["default_export=file3", "exportname-list=defaultonly"],
        &names,
    );
    assert!(out.starts_with("[('file3', '')]\n"), "{out}");
    run(
        &["default-export=file1", "exportname-list=default-only"],
        &names,
    );
    // Listing refused, or empty; opening still works.
    let out = run(&["exportname-list=error", "default-export=file1"], &names);
    assert!(out.starts_with("list refused ENOTSUP\n"), "{out}");
    let out = run(&["exportname_list=empty"], &all);
    assert!(out.starts_with("[]\n"), "{out}");
    // An explicit list, strictly: only its names open.
    let out = run(
        &[
            "exportname-list=explicit",
            "exportname=file1",
            "exportname=file3",
            "exportname-strict=true",
        ],
        &names,
    );
    assert!(out.contains("'file2' refused\n"), "{out}");
    assert!(out.contains("'' refused\n"), "{out}");
    // The empty name allowed by listing it, and mapped to a default that
    // must itself be listed.
    run(
        &[
            "exportname-list=explicit",
            "exportname=",
            "exportname=file2",
            "exportname_strict=1",
            "default-export=file2",
        ],
        &names,
    );
    run(
        &[
            "exportname=",
            "exportname=file1",
            "exportname-strict=true",
            "default-export=file2",
        ],
        &names,
    );
    // Descriptions: fixed, none, from a script (in the list and in INFO).
    let out = run(&["exportdesc=fixed:a disk"], &all);
    assert!(out.contains("'file1' 4 'file1' 'a disk'\n"), "{out}");
    run(&["exportdesc=none"], &all);
    run(
        &[
            "exportdesc=keep",
            "exportname-list=explicit",
            "exportname=file2",
        ],
        &all,
    );
    let out = run(
        &[
            "exportname-list=explicit",
            "exportname=file1",
            "exportname=it's",
            "exportdesc=script:echo \"[$name]\"; echo more",
        ],
        &all,
    );
    assert!(
        out.starts_with("[('file1', '[file1]\\nmore'), (\"it's\", \"[it's]\\nmore\")]"),
        "{out}"
    );
    // Over a plugin without exports of its own.
    let out = same_exports(
        &[
            "--filter=exportname",
            "memory",
            "1M",
            "exportdesc=fixed:mem",
            "default-export=foo",
        ],
        &["", "foo", "bar"],
    );
    assert!(out.starts_with("[('', 'mem')]\n"), "{out}");

    bad(
        &["--filter=exportname", "null", "exportname-list=some"],
        "unrecognized exportname-list mode: some",
    );
    bad(
        &["--filter=exportname", "null", "exportdesc=other"],
        "unrecognized exportdesc mode: other",
    );
    bad(
        &["--filter=exportname", "null", "exportname-strict=perhaps"],
        "perhaps",
    );
}
