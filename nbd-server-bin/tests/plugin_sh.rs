//! Our own sh and eval plugins (nbdkit-sh-plugin(3),
//! nbdkit-eval-plugin(1)) against Debian's: the same scripts under our
//! nbdkit and under /usr/bin/nbdkit, the same clients (nbdsh, nbdinfo),
//! and the same results: bytes, size, flags, extents, export lists, the
//! errno of each failure, and what each server asked of the script's data
//! methods (the arguments and flags a script logs, which shows FUA,
//! zero and cache emulated the same way).
//!
//! The scripts are in tests/sh/. Every case first checks that our
//! nbdkit ran its built-in plugin, not Debian's .so of the same name.

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use stack::DEBIAN_NBDKIT;

/// A copy of tests/sh/NAME in `dir`, executable.
fn script(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sh")
        .join(name);
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

/// `bin -U - --run CMD ARGS...`, in `cwd`, with a time limit on the
/// clients so that a hung server fails the test.
fn run_in(bin: &str, cwd: &Path, args: &[&str], cmd: &str) -> Output {
    Command::new(bin)
        .current_dir(cwd)
        .args(["-U", "-", "--run", cmd])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nbdkit")
}

/// Our nbdkit serves `plugin` itself: --dump-plugin names our binary as
/// the plugin's path, not a .so.
fn assert_built_in(plugin: &str) {
    let o = Command::new(BIN)
        .args([plugin, "--dump-plugin"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let path = text.lines().find_map(|l| l.strip_prefix("path=")).unwrap();
    assert_eq!(
        std::fs::canonicalize(path).unwrap(),
        std::fs::canonicalize(BIN).unwrap(),
        "{plugin} is not built in:\n{text}"
    );
    assert!(text.contains(&format!("name={plugin}\n")), "{text}");
}

/// The client of every case: capabilities, then each kind of request
/// the export allows, printing each result or the errno it failed with,
/// then the bytes (hashed) and the extents, with and without REQ_ONE.
const CLIENT: &str = r#"
import errno, hashlib, os
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(os.environ["U"])
def name(e):
    return errno.errorcode.get(e, str(e))
def do(what, f):
    try:
        r = f()
        print(what, "ok" if r is None else r)
    except nbd.Error as x:
        print(what, "error", name(x.errno))
size = h.get_size()
print("size", size)
for c in ["is_read_only", "can_flush", "can_fua", "can_trim", "can_zero",
          "can_fast_zero", "can_cache", "can_multi_conn", "is_rotational"]:
    do(c, getattr(h, c))
do("can_meta_context", lambda: h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION))
if os.environ.get("BS"):
    for k in ["SIZE_MINIMUM", "SIZE_PREFERRED", "SIZE_MAXIMUM"]:
        do(k, lambda: h.get_block_size(getattr(nbd, k)))
if not h.is_read_only():
    do("pwrite", lambda: h.pwrite(b"a" * 4096, 0))
    if h.can_fua():
        do("pwrite fua", lambda: h.pwrite(b"b" * 512, 4096, nbd.CMD_FLAG_FUA))
    if h.can_flush():
        do("flush", lambda: h.flush())
    if h.can_trim():
        do("trim", lambda: h.trim(512, 8192))
        if h.can_fua():
            do("trim fua", lambda: h.trim(512, 8192, nbd.CMD_FLAG_FUA))
    if h.can_zero():
        do("zero", lambda: h.zero(1024, 1024))
        do("zero no_hole", lambda: h.zero(512, 2048, nbd.CMD_FLAG_NO_HOLE))
        if h.can_fua():
            do("zero fua", lambda: h.zero(512, 2560, nbd.CMD_FLAG_FUA))
        if h.can_fast_zero():
            do("zero fast", lambda: h.zero(512, 3072, nbd.CMD_FLAG_FAST_ZERO))
if h.can_cache():
    do("cache", lambda: h.cache(4096, 0))
do("md5", lambda: hashlib.md5(h.pread(size, 0)).hexdigest())
if h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
    for flags in [0, nbd.CMD_FLAG_REQ_ONE]:
        got = []
        def cb(ctx, off, entries, err):
            got.append((off, entries))
        do("extents %d" % flags, lambda: h.block_status(size, 0, cb, flags) or got)
"#;

/// What a client sees of the export served by `bin` with `args`, and
/// what the script logged of its data methods (to `log`): a text to
/// compare between the servers.
fn observe(bin: &str, dir: &Path, args: &[&str], block_size: bool) -> String {
    let log = dir.join(format!("log-{}", bin.replace('/', "_")));
    let _ = std::fs::remove_file(&log);
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    argv.push(format!("log={}", log.display()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let client = dir.join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    let cmd = format!(
        "set -e; T='timeout 60'; {bs} U=\"$uri\" $T /usr/bin/python3 -m nbd -c \"exec(open('{c}').read())\"; \
         $T nbdinfo \"$uri\" | grep -E '^[[:space:]]+(description|export-size)'; \
         $T nbdinfo --list \"$uri\" | grep -E '^export=|description:'",
        bs = if block_size { "export BS=1;" } else { "" },
        c = client.display()
    );
    let o = run_in(bin, dir, &argv, &cmd);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{bin} {args:?}: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    format!("{out}--- script's data methods:\n{calls}")
}

/// `args` under both servers give the same text.
fn same_under_both(dir: &Path, args: &[&str], block_size: bool) -> String {
    let theirs = observe(DEBIAN_NBDKIT, dir, args, block_size);
    let ours = observe(BIN, dir, args, block_size);
    assert_eq!(
        ours, theirs,
        "our nbdkit differs from Debian's for {args:?}"
    );
    ours
}

fn needs_clients() -> bool {
    require("nbdsh", "nbdsh");
    require("nbdinfo", "libnbd-bin");
    Path::new(DEBIAN_NBDKIT).exists()
}

/// Every method, with every answer of the capability methods (0 yes, 3
/// no, 2 missing; none/emulate/native), under both servers.
#[test]
fn sh_every_method_and_answer_as_debian() {
    if !needs_clients() {
        return;
    }
    assert_built_in("sh");
    let dir = TempDir::new("sh-methods");
    let d = dir.path();
    let s = script(d, "disk.sh");
    let s = s.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &[],
        &["can_fua=emulate", "can_cache=emulate"],
        &["can_fua=none", "can_cache=none", "can_fast_zero=no"],
        &[
            "can_fua=missing",
            "can_cache=missing",
            "can_fast_zero=missing",
        ],
        &["can_fua=missing", "can_flush=no", "can_trim=missing"],
        &["can_zero=no", "can_fast_zero=missing"],
        &["can_zero=missing", "can_extents=no", "can_multi_conn=no"],
        &["zero=enotsup", "can_fast_zero=yes"],
        &["can_write=no", "is_rotational=yes", "description=no"],
        &[
            "can_write=missing",
            "can_extents=missing",
            "can_multi_conn=yes",
        ],
        &["extents=numbers", "size=2M"],
        &["extents=bare", "thread_model=serialize_requests"],
        &["thread_model=serialize_connections", "list=bare"],
        &["thread_model=bogus", "list=names", "default=b"],
        &["list=interleaved", "default=a"],
        &["list=both"],
    ];
    for case in cases {
        let mut args = vec!["sh", s];
        args.extend_from_slice(case);
        let out = same_under_both(d, &args, false);
        // The test means something: block status and the data methods
        // were reached.
        if case.is_empty() {
            assert!(out.contains("can_meta_context True"), "{out}");
            assert!(
                out.contains("extents 0 [(0, [262144, 0, 262144, 1, "),
                "{out}"
            );
        }
        if !case.contains(&"can_write=no") && !case.contains(&"can_write=missing") {
            assert!(out.contains("pwrite 4096 0 []"), "{out}");
        }
    }
    // Without list_exports the list is the default export, not -e's name.
    let out = same_under_both(d, &["-e", "foo", "sh", s, "default=bar"], false);
    assert!(out.contains("export=\"bar\""), "{out}");
    same_under_both(d, &["-e", "foo", "sh", s], false);
    // Block size constraints from the script, in nbdkit_parse_size's forms.
    same_under_both(d, &["sh", s, "block_size=512 4K 1M"], true);
}

/// A read fails in each way a script can fail: the errno reaching the
/// client is Debian's for every errno word, an unknown word, no message,
/// exit codes 3 and 4, a short read, a signal, and a missing pread.
#[test]
fn sh_errors_reach_the_client_as_debian() {
    if !needs_clients() {
        return;
    }
    let dir = TempDir::new("sh-errors");
    let d = dir.path();
    let s = script(d, "errors.sh");
    let client = d.join("errors.py");
    std::fs::write(
        &client,
        r#"
import errno
for i in range(16):
    try:
        h.pread(512, i * 512)
        print(i, "ok")
    except nbd.Error as x:
        print(i, errno.errorcode.get(x.errno, x.errno))
for what, f in [("pwrite", lambda: h.pwrite(b"x" * 512, 0)),
                ("pwrite fua", lambda: h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA)),
                ("flush", lambda: h.flush()),
                ("trim", lambda: h.trim(512, 0)),
                ("zero", lambda: h.zero(512, 0)),
                ("cache", lambda: h.cache(512, 0))]:
    try:
        f()
        print(what, "ok")
    except nbd.Error as x:
        print(what, errno.errorcode.get(x.errno, x.errno))
"#,
    )
    .unwrap();
    let cmd = format!(
        "timeout 60 /usr/bin/python3 -m nbd -u \"$uri\" -c \"exec(open('{}').read())\"",
        client.display()
    );
    let args = ["sh", s.to_str().unwrap()];
    let theirs = run_in(DEBIAN_NBDKIT, d, &args, &cmd);
    let ours = run_in(BIN, d, &args, &cmd);
    let (t, o) = (
        String::from_utf8_lossy(&theirs.stdout),
        String::from_utf8_lossy(&ours.stdout),
    );
    assert!(
        ours.status.success(),
        "{o}{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    // Two answers are not compared: a short read (block 13) and a
    // missing pread (block 15, exit code 2). nbdkit 1.32's sh_pread
    // reports these two without setting errno, so the errno its client
    // sees is whatever the thread's last failed system call left: usually
    // EIO, sometimes EINVAL (seen once in a CI run). Ours is EIO always;
    // Debian's has only to be an error.
    let unset = |l: &&str| l.starts_with("13 ") || l.starts_with("15 ");
    let (o_rest, t_rest): (Vec<&str>, Vec<&str>) = (
        o.lines().filter(|l| !unset(l)).collect(),
        t.lines().filter(|l| !unset(l)).collect(),
    );
    assert_eq!(o_rest, t_rest, "ours:\n{o}\nDebian's:\n{t}");
    for block in ["13", "15"] {
        let ours_line = format!("{block} EIO");
        assert!(o.lines().any(|l| l == ours_line), "{ours_line} in:\n{o}");
        let theirs = t.lines().find(|l| l.split(' ').next() == Some(block));
        assert!(
            theirs.is_some_and(|l| l != format!("{block} ok")),
            "Debian's block {block} fails:\n{t}"
        );
    }
    // Not all the same errno: the words were read.
    for want in [
        "0 ok",
        "1 EPERM",
        "2 ENOSPC",
        "3 EIO",
        "7 EINVAL",
        "8 ENOMEM",
        "pwrite ENOSPC",
        "trim EPERM",
    ] {
        assert!(o.lines().any(|l| l == want), "{want} in:\n{o}");
    }
    // The message after the errno word is logged, in nbdkit's words.
    let log = String::from_utf8_lossy(&ours.stderr);
    assert!(log.contains("errors.sh: Out of space"), "{log}");
}

/// A capability method that fails (exit code 1) fails the connection
/// under both servers alike, and so does a `can_fua` that prints
/// nonsense.
#[test]
fn sh_failing_capabilities_as_debian() {
    if !needs_clients() {
        return;
    }
    let dir = TempDir::new("sh-caps");
    let d = dir.path();
    let s = script(d, "disk.sh");
    let s = s.to_str().unwrap();
    for case in [
        "can_write=error",
        "can_trim=error",
        "can_fua=sometimes",
        "can_cache=error",
    ] {
        let args = ["sh", s, case];
        let cmd = "timeout 60 nbdinfo --size \"$uri\"";
        let theirs = run_in(DEBIAN_NBDKIT, d, &args, cmd);
        let ours = run_in(BIN, d, &args, cmd);
        assert_eq!(
            ours.status.success(),
            theirs.status.success(),
            "{case}: ours {ours:?}\nDebian's {theirs:?}"
        );
        assert_eq!(ours.stdout, theirs.stdout, "{case}");
    }
}

/// eval: the same disk as fragments on the command line; `can_write`
/// and the like come from the data methods given; `missing=` answers for
/// every method not given; keys that are not methods go to `config`.
#[test]
fn eval_methods_and_missing_as_debian() {
    if !needs_clients() {
        return;
    }
    assert_built_in("eval");
    let dir = TempDir::new("eval");
    let d = dir.path();
    let disk = "$tmpdir/disk";
    let get_size = format!("get_size=stat -L -c %s {disk}");
    let pread =
        format!("pread=dd if={disk} skip=$4 count=$3 iflag=count_bytes,skip_bytes status=none");
    let pwrite = format!(
        "pwrite=echo \"pwrite $3 $4 [$5]\" >> $(cat $tmpdir/log); dd of={disk} seek=$4 conv=notrunc oflag=seek_bytes status=none"
    );
    let config = "config=[ $2 = log ] && echo \"$3\" > $tmpdir/log; [ $2 = size ] && truncate -s $3 $tmpdir/disk; true";
    let flush = "flush=echo flush >> $(cat $tmpdir/log)";
    let trim = "trim=echo \"trim $3 $4 [$5]\" >> $(cat $tmpdir/log)";
    let zero = "zero=echo \"zero $3 $4 [$5]\" >> $(cat $tmpdir/log); echo ENOTSUP >&2; exit 1";
    let cases: Vec<Vec<&str>> = vec![
        // Read-only: no write method, so no can_write.
        vec![&get_size, &pread],
        // Data methods without their can_*: eval says yes for them.
        vec![&get_size, &pread, &pwrite, flush, trim, zero],
        vec![
            &get_size,
            &pread,
            "extents=echo 0 32K; echo 32K 32K hole,zero",
        ],
        // missing= answers every method not given.
        vec![
            &get_size,
            &pread,
            &pwrite,
            "missing=case $1 in is_rotational|can_multi_conn) exit 0;; esac; exit 2",
        ],
        // A can_* given wins over the one eval would make.
        vec![
            &get_size,
            &pread,
            &pwrite,
            flush,
            "can_flush=exit 3",
            "can_fua=echo native",
        ],
    ];
    for case in cases {
        let mut args = vec!["eval", config];
        args.extend(case);
        args.push("size=64K");
        let out = same_under_both(d, &args, false);
        if args.iter().any(|a| a.starts_with("extents=")) {
            assert!(
                out.contains("extents 0 [(0, [32768, 0, 32768, 3])]"),
                "{out}"
            );
        }
    }
}

/// The plugin's life: a relative script path is made absolute (the
/// server changes directory), `$tmpdir` exists while the server runs and
/// is gone when it exits (after the script's `unload`), a script read from standard input (`-`)
/// serves, and the script's own magic config key takes a bare value.
#[test]
fn sh_tmpdir_inline_script_and_magic_key() {
    let dir = TempDir::new("sh-life");
    let d = dir.path();
    script(d, "disk.sh");
    let tmp_record = d.join("tmpdir-was");
    let unloaded = d.join("unloaded");
    let inline = format!(
        "#!/bin/sh\ncase \"$1\" in\n  magic_config_key) echo file ;;\n  \
         config) [ \"$2\" = file ] && echo \"$tmpdir\" > '{}' ;;\n  \
         get_size) echo 1K ;;\n  pread) head -c $3 /dev/zero | tr '\\0' z ;;\n  \
         unload) [ -d \"$tmpdir\" ] && touch '{}' ;;\n  \
         *) exit 2 ;;\nesac\n",
        tmp_record.display(),
        unloaded.display()
    );
    let mut child = Command::new(BIN)
        .current_dir(d)
        .args([
            "-U",
            "-",
            "--run",
            "nbdcopy \"$uri\" - | od -An -c | head -1",
        ])
        .args(["sh", "-", "bare-value"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(inline.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("z   z   z"), "{out}");
    let tmpdir = std::fs::read_to_string(&tmp_record).unwrap();
    assert!(tmpdir.starts_with("/tmp/nbdkit"), "{tmpdir}");
    let tmpdir = Path::new(tmpdir.trim());
    assert!(!tmpdir.exists(), "$tmpdir {} left behind", tmpdir.display());
    // unload ran at exit, before $tmpdir went.
    assert!(unloaded.exists(), "unload was not called");

    // A relative script path works from the directory the server was
    // started in, while it runs elsewhere.
    let o = run_in(BIN, d, &["sh", "./disk.sh"], "nbdinfo --size \"$uri\"");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1048576");
}

/// Start-up failures: a script whose config fails stops the server with
/// its message, as Debian's does; a missing get_size fails the client.
#[test]
fn sh_startup_and_required_methods() {
    let dir = TempDir::new("sh-start");
    let d = dir.path();
    let bad = d.join("bad.sh");
    std::fs::write(
        &bad,
        "#!/bin/sh\ncase \"$1\" in\n  config) echo \"EINVAL bad key $2\" >&2; exit 1 ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    for bin in [BIN, DEBIAN_NBDKIT] {
        if !Path::new(bin).exists() {
            continue;
        }
        let o = run_in(bin, d, &["sh", bad.to_str().unwrap(), "k=v"], "true");
        assert!(!o.status.success(), "{bin}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("bad.sh: bad key k"), "{bin}: {err}");
        // No script, or another key first.
        for (args, words) in [
            (&["sh"][..], "missing script parameter"),
            (
                &["sh", "k=v"][..],
                "the first parameter must be script=/path/to/script",
            ),
        ] {
            let o = run_in(bin, d, args, "true");
            assert!(!o.status.success(), "{bin}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(words), "{bin}: {err}");
        }
        // A script on standard input cannot share it with a client (-s).
        let o = Command::new(bin)
            .args(["-s", "sh", "-"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("inline script is incompatible with -s"),
            "{bin}: {err}"
        );
        // A script that does not exist, in nbdkit_realpath's words.
        let o = run_in(bin, d, &["sh", "./nonexistent.sh"], "true");
        assert!(!o.status.success(), "{bin}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("realpath: ./nonexistent.sh: No such file or directory"),
            "{bin}: {err}"
        );
        // No get_size: the client cannot connect.
        let o = run_in(
            bin,
            d,
            &["sh", bad.to_str().unwrap()],
            "nbdinfo --size \"$uri\"",
        );
        assert!(!o.status.success(), "{bin}");
    }
}

/// `--dump-plugin` with and without a script prints Debian's lines (but
/// the path, which is our binary): the script's thread model after its
/// parameters, `max_known_status`, and the script's own `dump_plugin`.
#[test]
fn dump_plugin_as_debian() {
    if !Path::new(DEBIAN_NBDKIT).exists() {
        return;
    }
    let dir = TempDir::new("sh-dump");
    let d = dir.path();
    let s = script(d, "disk.sh");
    let s = s.to_str().unwrap();
    let dp = d.join("dump.sh");
    std::fs::write(
        &dp,
        "#!/bin/sh\ncase \"$1\" in\n  dump_plugin) echo mine=1 ;;\n  \
         thread_model) echo serialize_requests ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dp = dp.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["sh"],
        &["sh", dp],
        &["sh", s],
        &["sh", s, "thread_model=serialize_connections"],
        &["eval"],
        &["eval", "dump_plugin=echo x=1", "thread_model=echo parallel"],
    ];
    let without_path = |o: Output| {
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("path="))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    for case in cases {
        let dump = |bin: &str| {
            Command::new(bin)
                .current_dir(d)
                .args(*case)
                .arg("--dump-plugin")
                .output()
                .unwrap()
        };
        let ours = without_path(dump(BIN));
        assert_eq!(ours, without_path(dump(DEBIAN_NBDKIT)), "{case:?}");
        assert!(ours.contains("max_known_status=3\n"), "{ours}");
    }
}

/// The script's thread model holds under a client with many requests in
/// flight: without a `thread_model` method one read at a time (nbdkit's
/// safe default), with `parallel` several at once, as under Debian's.
#[test]
fn sh_thread_model_is_kept() {
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("sh-threads");
    let d = dir.path();
    let s = script(d, "concurrency.sh");
    let s = s.to_str().unwrap();
    let most = |bin: &str, model: Option<&str>| -> u32 {
        let log = d.join("log");
        let _ = std::fs::remove_file(&log);
        let log_arg = format!("log={}", log.display());
        let mut args = vec!["sh", s, &log_arg];
        let m = model.map(|m| format!("model={m}"));
        if let Some(m) = &m {
            args.push(m);
        }
        let o = run_in(
            bin,
            d,
            &args,
            "timeout 60 nbdcopy --requests=8 --request-size=65536 --connections=1 \"$uri\" null:",
        );
        assert!(o.status.success(), "{bin} {args:?}: {o:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 16, "{text}");
        text.lines()
            .map(|l| l.trim().parse::<u32>().unwrap())
            .max()
            .unwrap()
    };
    assert_eq!(most(BIN, None), 1, "serialize_all_requests broken");
    assert_eq!(most(BIN, Some("serialize_requests")), 1);
    // The client does send reads in parallel, and a parallel script gets
    // them so.
    assert!(most(BIN, Some("parallel")) > 1);
    if Path::new(DEBIAN_NBDKIT).exists() {
        assert_eq!(most(DEBIAN_NBDKIT, None), 1);
    }
}

/// Each method gets the arguments Debian's nbdkit gives it (read-only and
/// TLS flags, the export name, the handle, counts, offsets and flags):
/// a script that logs every call, under a read-only server, through a
/// client that lists the exports and opens one by name. Compared as the
/// set of distinct calls, since the servers ask some capabilities in
/// another order or more than once; `export_description` is left out:
/// our server asks for it whether or not the client wants it.
#[test]
fn sh_methods_get_debians_arguments() {
    if !needs_clients() {
        return;
    }
    let dir = TempDir::new("sh-args");
    let d = dir.path();
    let s = d.join("args.sh");
    std::fs::write(
        &s,
        "#!/bin/sh\n[ \"$1\" = config ] && [ \"$2\" = log ] && echo \"$3\" > \"$tmpdir/log\"\n\
         [ -f \"$tmpdir/log\" ] && echo \"$@\" >> \"$(cat \"$tmpdir/log\")\"\n\
         case \"$1\" in\n  config) ;;\n  open) echo h ;;\n  get_size) echo 64K ;;\n  \
         pread) head -c $3 /dev/zero ;;\n  can_extents) exit 0 ;;\n  \
         extents) echo 0 64K hole,zero ;;\n  list_exports) printf 'foo\\nbar\\n' ;;\n  \
         *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
    let calls = |bin: &str| {
        let log = d.join("calls");
        let _ = std::fs::remove_file(&log);
        let log_arg = format!("log={}", log.display());
        let o = Command::new(bin)
            .current_dir(d)
            .args(["-r", "-U", "-", "--run"])
            .arg(
                "timeout 60 nbdinfo --list \"$uri\" >/dev/null && \
                 timeout 60 nbdinfo --map \"nbd+unix:///foo?socket=$unixsocket\"",
            )
            .args(["sh", s.to_str().unwrap(), &log_arg])
            .output()
            .unwrap();
        assert!(o.status.success(), "{bin}: {o:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines()
            .filter(|l| !l.starts_with("export_description") && !l.starts_with("config "))
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let ours = calls(BIN);
    assert_eq!(ours, calls(DEBIAN_NBDKIT));
    for want in [
        "open true foo false",
        "list_exports true false",
        "extents h 65536 0 ",
    ] {
        assert!(ours.iter().any(|l| l == want), "{want} in {ours:#?}");
    }
}
