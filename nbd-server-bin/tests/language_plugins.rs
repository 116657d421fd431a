//! The language plugins Debian packages for nbdkit (nbdkit-plugin-python,
//! -perl, -lua, -ruby, -tcl) load into our nbdkit unchanged: each serves
//! a small script (in `tests/language_plugins/`, a 1 MiB disk in memory
//! implementing every callback its language offers) through our nbdkit
//! and through Debian's with the same arguments, and a client compares
//! what it sees: `nbdinfo --json` (the flags), `nbdinfo --map` (the
//! extents), then `language_plugins/client.py`, which writes, zeroes,
//! trims, flushes and caches, fails a write the script refuses, and
//! prints the size, the flags, the extents and an md5 of the disk before
//! and after. The standard error lines the scripts' errors cause (`nbdkit:
//! perl[3]: error: ...`) must be the same too. A table is printed.
//!
//! Ruby's interpreter works only on the thread that started it, so under
//! Debian's nbdkit the ruby plugin serves only with `-s` (the connection
//! on the main thread; through a socket it hangs): ruby is compared
//! through `-s`, both servers started by the client (nbdinfo's `[ CMD ]`,
//! nbd_connect_command).

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use stack::*;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/language_plugins")
}

/// One language: the plugin's name, its script, and whether it is served
/// through a Unix socket (`--run`) rather than `-s`.
struct Language {
    plugin: &'static str,
    script: &'static str,
    socket: bool,
}

const LANGUAGES: &[Language] = &[
    Language {
        plugin: "python",
        script: "disk.py",
        socket: true,
    },
    Language {
        plugin: "perl",
        script: "disk.pl",
        socket: true,
    },
    Language {
        plugin: "lua",
        script: "disk.lua",
        socket: true,
    },
    Language {
        plugin: "ruby",
        script: "disk.rb",
        socket: false,
    },
    Language {
        plugin: "tcl",
        script: "disk.tcl",
        socket: true,
    },
];

/// What a client sees of `lang` served by `bin`: stdout of the three
/// clients, and the server's error lines.
fn observe(bin: &str, lang: &Language) -> (Output, String) {
    let script = scripts().join(lang.script).display().to_string();
    let client = scripts().join("client.py").display().to_string();
    let args = [lang.plugin, &script, "label=x"];
    // nbdinfo starts a command ([ CMD ]) by socket activation, which -s
    // refuses: under -s only client.py, which reports the flags and the
    // extents itself.
    let o = if lang.socket {
        run_with(
            bin,
            &args,
            &format!(
                "set -e; T='timeout 60'; $T nbdinfo --json \"$uri\"; $T nbdinfo --map \"$uri\"; \
                 $T /usr/bin/python3 '{client}' \"$uri\""
            ),
        )
    } else {
        // Each client starts its own server with -s.
        let server = format!("'{bin}' -s {} '{script}' label=x", lang.plugin);
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "set -e; timeout 60 /usr/bin/python3 '{client}' -- {server}"
            ))
            .output()
            .expect("sh")
    };
    // Our nbdkit advertises the block sizes it enforces, Debian's none
    // (README, "Differences"); the socket's name is the server's own.
    let stdout = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.contains("block_size_") && !l.contains("\"uri\""))
        .collect::<Vec<_>>()
        .join("\n");
    let errors = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.to_lowercase().contains("error"))
        .collect::<Vec<_>>()
        .join("\n");
    (o, format!("{stdout}\n-- stderr:\n{errors}"))
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or("?")
}

#[test]
fn language_plugins_serve_the_same_through_our_nbdkit() {
    require("nbdinfo", "libnbd-bin");
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "install python3-libnbd"
    );
    let mut table = vec![format!(
        "{:<8} {:<7} {:>8} {:>7} {:<33} {:<33} result",
        "plugin", "served", "size", "extents", "md5 before", "md5 after"
    )];
    let mut failures = Vec::new();
    for lang in LANGUAGES {
        let so = format!(
            "/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-{}-plugin.so",
            lang.plugin
        );
        assert!(
            Path::new(&so).exists(),
            "{so} is missing: apt-get install nbdkit-plugin-{} (scripts/install-test-deps.sh)",
            lang.plugin
        );
        let (to, theirs) = observe(DEBIAN_NBDKIT, lang);
        let (oo, ours) = observe(BIN, lang);
        let ok = to.status.success() && oo.status.success() && theirs == ours;
        // The script's refused write reached the client as EIO and the
        // server logged the script's words, under both servers.
        let refused = ours.contains("write to the last block: EIO")
            && ours.contains("the last block is read-only");
        table.push(format!(
            "{:<8} {:<7} {:>8} {:>7} {:<33} {:<33} {}",
            lang.plugin,
            if lang.socket { "socket" } else { "-s" },
            value(&ours, "size"),
            value(&ours, "before extents")
                .matches('(')
                .count()
                .to_string(),
            value(&ours, "before md5"),
            value(&ours, "after md5"),
            if ok && refused { "same" } else { "DIFFERENT" }
        ));
        if !ok || !refused {
            let first_difference = theirs
                .lines()
                .zip(ours.lines())
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("Debian's: {a}\nours:     {b}"))
                .unwrap_or_else(|| {
                    format!(
                        "{} lines against {}",
                        theirs.lines().count(),
                        ours.lines().count()
                    )
                });
            failures.push(format!(
                "{}: {first_difference}\nDebian's ({:?}):\n{theirs}\n{}\nours ({:?}):\n{ours}\n{}",
                lang.plugin,
                to.status,
                String::from_utf8_lossy(&to.stderr),
                oo.status,
                String::from_utf8_lossy(&oo.stderr)
            ));
        }
    }
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
