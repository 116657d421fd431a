//! Filters written in C against nbdkit-filter.h, loaded by our nbdkit
//! from their shared objects:
//!
//! - every filter .so of Debian's nbdkit package, given by path, stacked
//!   on one of our built-in plugins (or on a Debian plugin .so), serves
//!   the same size, flags, extents and bytes through our nbdkit as
//!   through Debian's with the same arguments (a table in the output);
//! - a filter's thread model lowers the chain's;
//! - a filter this test writes against our include/nbdkit-filter.h
//!   records the order of its life's callbacks;
//! - `--filter=NAME --version` fails for a filter that does not exist.

mod common;
mod stack;

use std::path::Path;
use std::process::Command;

use common::*;
use stack::*;

const DEBIAN_FILTERS: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/filters";
const DEBIAN_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins";

fn filter_so(name: &str) -> String {
    format!("{DEBIAN_FILTERS}/nbdkit-{name}-filter.so")
}

fn plugin_so(name: &str) -> String {
    format!("{DEBIAN_PLUGINS}/nbdkit-{name}-plugin.so")
}

/// A disk of 1 MiB with data and holes, from the data plugin.
const DATA: &[&str] = &[
    "data",
    "data=1 2 3 @65536 4 5 @^512 \"hello\" @262144 ( 0x55 0xaa )*4096",
    "size=1M",
];

/// What a client sees of one export: nbdinfo's JSON (flags, sizes, block
/// sizes; not the URI, whose socket differs), the map, and a hash of the
/// bytes. `one_client`: the export takes one connection only (exitlast).
fn observe(bin: &str, args: &[&str], one_client: bool) -> Result<String, String> {
    // One connection, straight to NBD_OPT_GO (nbdinfo would ask
    // NBD_OPT_INFO first, a connection of its own to the filters).
    let cmd = if one_client {
        "timeout 60 /usr/bin/python3 -m nbd -u \"$uri\" -c 'print(h.get_size(), h.is_read_only(), \
         h.can_flush(), h.can_trim(), h.can_zero(), h.can_fua(), h.can_multi_conn(), \
         h.can_cache(), h.can_meta_context(\"base:allocation\"))'"
            .to_string()
    } else {
        "set -e; T='timeout 60'; $T nbdinfo --json \"$uri\" | grep -v '\"uri\"'; \
         $T nbdinfo --map \"$uri\" | head -100; \
         $T nbdcopy --no-extents \"$uri\" - | md5sum"
            .to_string()
    };
    let o = run_with(bin, args, &cmd);
    if !o.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Our server advertises the block sizes it enforces (1, 4096, 64 MiB)
/// when no layer sets any, where nbdkit 1.32 advertises none (a
/// difference README lists): those three lines of ours are dropped when
/// Debian's output has no block sizes.
fn without_our_default_block_sizes(theirs: &str, ours: &str) -> String {
    if theirs.contains("block_size_") {
        return ours.to_string();
    }
    let defaults = [
        "\t\"block_size_minimum\": 1,",
        "\t\"block_size_preferred\": 4096,",
        "\t\"block_size_maximum\": 67108864,",
    ];
    ours.lines()
        .filter(|l| !defaults.contains(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The lines that differ between the two servers' outputs.
fn diff(name: &str, theirs: &Result<String, String>, ours: &Result<String, String>) -> String {
    match (theirs, ours) {
        (Ok(t), Ok(o)) => {
            let (t, o): (Vec<&str>, Vec<&str>) = (t.lines().collect(), o.lines().collect());
            let only_t: Vec<&&str> = t.iter().filter(|l| !o.contains(l)).collect();
            let only_o: Vec<&&str> = o.iter().filter(|l| !t.contains(l)).collect();
            format!("{name}: only Debian's: {only_t:?}; only ours: {only_o:?}")
        }
        _ => format!("{name}: Debian's {theirs:?}\nours {ours:?}"),
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// Every Debian filter, through both servers.
#[test]
fn debian_filters_serve_the_same_through_our_nbdkit() {
    require("nbdinfo", "libnbd-bin");
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("cfilters");
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();

    // Images some filters read.
    let tree = d.join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello, world\n").unwrap();
    std::fs::write(tree.join("data.bin"), pattern(300_000, 3)).unwrap();
    let raw = d.join("raw.img");
    std::fs::write(&raw, pattern(2 << 20, 5)).unwrap();
    let gz = d.join("raw.img.gz");
    let xz = d.join("raw.img.xz");
    let tar = d.join("tree.tar");
    let ext2 = d.join("ext2.img");
    let luks = d.join("luks.img");
    let mapfile = d.join("ddrescue.map");
    let extentlist = d.join("extents.list");
    let mut missing: Vec<(&str, String)> = Vec::new();
    let mut tool = |name: &'static str, program: &str, cmd: String| {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {program}"))
            .output()
            .is_ok_and(|o| o.status.success())
        {
            sh(&cmd);
        } else {
            missing.push((name, format!("needs {program}")));
        }
    };
    tool("gzip", "gzip", format!("gzip -c {} > {}", s(&raw), s(&gz)));
    tool(
        "xz",
        "xz",
        format!("xz --block-size=65536 -c {} > {}", s(&raw), s(&xz)),
    );
    tool(
        "tar",
        "tar",
        format!("tar -C {} -cf {} hello.txt data.bin", s(&tree), s(&tar)),
    );
    tool(
        "ext2",
        "mke2fs",
        format!(
            "mke2fs -q -t ext2 -U 2c8f0b63-2c8f-4d8a-8d4c-5d2c7a3c6a01 -E root_owner=0:0 -d {} {} 4M >/dev/null",
            s(&tree),
            s(&ext2)
        ),
    );
    tool(
        "luks",
        "qemu-img",
        format!(
            "qemu-img create -q -f luks --object secret,id=sec0,data=topsecret \
             -o key-secret=sec0,iter-time=10 {} 1M && \
             qemu-io --object secret,id=sec0,data=topsecret \
             --image-opts driver=luks,key-secret=sec0,file.filename={} \
             -c 'write -P 0x5a 0 65536' >/dev/null",
            s(&luks),
            s(&luks)
        ),
    );
    std::fs::write(
        &mapfile,
        "# Mapfile\n0x00000000     ?\n#      pos        size  status\n\
         0x00000000  0x00080000  +\n0x00080000  0x00080000  +\n",
    )
    .unwrap();
    std::fs::write(
        &extentlist,
        "0 65536\n65536 131072 hole,zero\n524288 4096\n",
    )
    .unwrap();

    let data = || DATA.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let file = |p: &Path| vec!["file".to_string(), s(p)];
    // Debian's file plugin, for filters whose answers depend on its
    // can_fast_zero (false for a regular file; our file plugin says true).
    let file_so = |p: &Path| vec![plugin_so("file"), s(p)];
    let with = |mut v: Vec<String>, extra: &[&str]| {
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    // (filter, plugin and arguments, one client only). `@D@` is a
    // directory of each server's own (control sockets, log files).
    let cases: Vec<(&str, Vec<String>, bool)> = vec![
        (
            "blocksize",
            with(data(), &["minblock=4096", "maxdata=65536"]),
            false,
        ),
        (
            "blocksize-policy",
            with(
                data(),
                &[
                    "blocksize-minimum=512",
                    "blocksize-preferred=4096",
                    "blocksize-maximum=65536",
                ],
            ),
            false,
        ),
        ("cache", with(data(), &["cache=writeback"]), false),
        ("cacheextents", data(), false),
        ("checkwrite", data(), false),
        ("cow", vec![plugin_so("memory"), "size=1M".into()], false),
        (
            "ddrescue",
            with(data(), &[&format!("ddrescue-mapfile={}", s(&mapfile))]),
            false,
        ),
        ("delay", with(data(), &["rdelay=1ms"]), false),
        ("error", with(data(), &["error-pwrite-rate=100%"]), false),
        ("exitlast", data(), true),
        (
            "exitwhen",
            with(data(), &["exitwhen-file-created=@D@/exit-now"]),
            false,
        ),
        ("exportname", with(data(), &["exportname=a"]), false),
        ("ext2", with(file_so(&ext2), &["ext2file=/data.bin"]), false),
        (
            "extentlist",
            with(data(), &[&format!("extentlist={}", s(&extentlist))]),
            false,
        ),
        ("fua", with(data(), &["fuamode=emulate"]), false),
        ("gzip", file(&gz), false),
        ("ip", with(data(), &["allow=all"]), false),
        ("limit", with(data(), &["limit=1"]), false),
        ("log", with(data(), &["logfile=@D@/log"]), false),
        ("luks", with(file(&luks), &["passphrase=topsecret"]), false),
        (
            "multi-conn",
            with(data(), &["multi-conn-mode=emulate"]),
            false,
        ),
        ("nocache", with(data(), &["cachemode=none"]), false),
        ("noextents", data(), false),
        ("nofilter", data(), false),
        ("noparallel", with(data(), &["serialize=requests"]), false),
        ("nozero", with(data(), &["zeromode=none"]), false),
        // Debian's data plugin: nbdkit's sparse array calls the zero tail
        // of an allocated page "zero", ours "data".
        (
            "offset",
            vec![
                plugin_so("data"),
                DATA[1].into(),
                DATA[2].into(),
                "offset=4096".into(),
                "range=300000".into(),
            ],
            false,
        ),
        (
            "partition",
            vec![
                plugin_so("partitioning"),
                s(&raw),
                s(&tar),
                "partition=2".into(),
            ],
            false,
        ),
        (
            "pause",
            with(data(), &["pause-control=@D@/pause.sock"]),
            false,
        ),
        ("protect", with(data(), &["protect=0-1023"]), false),
        ("rate", with(data(), &["rate=100M"]), false),
        ("readahead", data(), false),
        ("retry", with(data(), &["retries=2"]), false),
        ("retry-request", with(data(), &["retries=2"]), false),
        ("scan", data(), false),
        ("stats", with(data(), &["statsfile=@D@/stats"]), false),
        (
            "swab",
            vec![
                plugin_so("pattern"),
                "size=1M".into(),
                "swab-bits=32".into(),
            ],
            false,
        ),
        ("tar", with(file_so(&tar), &["tar-entry=data.bin"]), false),
        ("tls-fallback", with(data(), &["tlsreadme=hello"]), false),
        ("truncate", with(data(), &["truncate=300000"]), false),
        ("xz", file(&xz), false),
    ];

    let mut filters: Vec<String> = std::fs::read_dir(DEBIAN_FILTERS)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("nbdkit-")
                .and_then(|n| n.strip_suffix("-filter.so"))
                .map(str::to_string)
        })
        .collect();
    filters.sort();
    assert!(filters.len() >= 40, "{filters:?}");

    let mut table = vec![format!(
        "{:<17} {:<13} {:>8} {:>8} {:<34} result",
        "filter", "plugin", "size", "extents", "md5"
    )];
    let mut failures = Vec::new();
    let mut compared = 0;
    for name in &filters {
        if let Some((_, why)) = missing.iter().find(|(n, _)| n == name) {
            table.push(format!("{name:<17} skipped: {why}"));
            continue;
        }
        let Some((_, args, one)) = cases.iter().find(|(n, _, _)| n == name) else {
            failures.push(format!("{name}: no case in this test's table"));
            table.push(format!("{name:<17} NO CASE"));
            continue;
        };
        let so = filter_so(name);
        let run = |bin: &str, who: &str| {
            let own = d.join(format!("{name}-{who}"));
            std::fs::create_dir_all(&own).unwrap();
            let args: Vec<String> = args.iter().map(|a| a.replace("@D@", &s(&own))).collect();
            let mut argv: Vec<&str> = vec!["--filter", &so];
            argv.extend(args.iter().map(String::as_str));
            observe(bin, &argv, *one)
        };
        let theirs = run(DEBIAN_NBDKIT, "debian");
        let ours = run(BIN, "ours");
        compared += 1;
        let ours = match (&theirs, ours) {
            (Ok(t), Ok(o)) => Ok(without_our_default_block_sizes(t, &o)),
            (_, o) => o,
        };
        let same = matches!((&theirs, &ours), (Ok(a), Ok(b)) if a == b);
        let plugin = Path::new(&args[0])
            .file_name()
            .map(|f| {
                f.to_string_lossy()
                    .replace("nbdkit-", "")
                    .replace("-plugin", "")
            })
            .unwrap_or_default();
        let summary = ours.as_ref().map_or_else(
            |e| format!("failed: {}", e.lines().last().unwrap_or("")),
            |o| {
                let lines: Vec<&str> = o.lines().collect();
                let size = lines
                    .iter()
                    .find_map(|l| l.trim().strip_prefix("\"export-size\": "))
                    .unwrap_or("")
                    .trim_end_matches(',');
                let extents = lines
                    .iter()
                    .filter(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        w.len() >= 4 && w[..3].iter().all(|x| x.parse::<u64>().is_ok())
                    })
                    .count();
                let md5 = if *one {
                    "(one client: flags only)"
                } else {
                    lines
                        .last()
                        .and_then(|l| l.split_whitespace().next())
                        .unwrap_or("")
                };
                format!("{size:>8} {extents:>8} {md5:<34}")
            },
        );
        table.push(format!(
            "{name:<17} {plugin:<13} {summary} {}",
            if same { "same" } else { "DIFFERENT" }
        ));
        if !same {
            failures.push(diff(name, &theirs, &ours));
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        compared >= 35,
        "too few filters compared:\n{}",
        table.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{}\n\n{}",
        table.join("\n"),
        failures.join("\n\n")
    );
}
