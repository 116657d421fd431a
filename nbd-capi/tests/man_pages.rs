//! The nbd_NAME(3) manual pages: every call of the API table has its prose
//! in `gen/src/docs.rs`, every prose entry is a call of libnbd 1.24, and
//! every call of libnbd 1.24 gets a page. Rendering the pages to roff and
//! checking them with `man --warnings` is scripts/check.sh's part (it needs
//! pod2man and man). The examples are compiled against include/libnbd.h.

#[path = "../gen/src/api.rs"]
mod api;
#[path = "../gen/src/docs.rs"]
mod docs;
#[path = "../gen/src/render.rs"]
mod render;
#[path = "../gen/src/render_man.rs"]
mod render_man;

use std::collections::HashSet;

#[test]
fn every_table_call_has_a_description() {
    let missing: Vec<&str> = api::CALLS
        .iter()
        .map(|c| c.name)
        .filter(|n| render_man::doc(n).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "calls without an entry in nbd-capi/gen/src/docs.rs: {missing:?}"
    );
}

#[test]
fn every_description_is_a_libnbd_1_24_call() {
    let symbols: HashSet<&str> = render_man::symbols().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        symbols.len(),
        165,
        "the reference list has libnbd 1.24's 165 calls"
    );
    let mut seen = HashSet::new();
    for (name, _) in docs::DOCS {
        assert!(
            symbols.contains(name),
            "docs.rs: nbd_{name} is not a libnbd 1.24 call"
        );
        assert!(seen.insert(*name), "docs.rs: nbd_{name} is described twice");
    }
}

#[test]
fn no_description_is_empty_or_malformed() {
    for (name, d) in docs::DOCS {
        assert!(!d.summary.trim().is_empty(), "nbd_{name}: empty summary");
        assert!(
            !d.description.trim().is_empty(),
            "nbd_{name}: empty description"
        );
        assert!(
            !d.summary.ends_with('.') && !d.summary.contains('\n'),
            "nbd_{name}: the summary is one line without a full stop"
        );
        // A paragraph line starting with a space would turn into a code block.
        for text in [d.description, d.returns] {
            assert!(
                text.lines()
                    .all(|l| !l.starts_with("  ") && !l.starts_with('\t')),
                "nbd_{name}: an indented line in the prose: {text:?}"
            );
        }
        if let Some(example) = d.example {
            assert!(!example.trim().is_empty(), "nbd_{name}: empty example");
        }
    }
}

/// Every libnbd 1.24 call has a page, with its prototype from the table or,
/// for a call the table does not describe yet, from docs.rs.
#[test]
fn every_libnbd_call_has_a_page() {
    let pages: Vec<(String, String)> = render_man::pages();
    let names: HashSet<&str> = pages.iter().map(|(f, _)| f.as_str()).collect();
    for (name, version) in render_man::symbols() {
        let file = format!("nbd_{name}.3.pod");
        assert!(names.contains(file.as_str()), "no page {file}");
        let (_, pod) = pages.iter().find(|(f, _)| *f == file).unwrap();
        assert!(
            pod.contains(&format!("=head1 NAME\n\nnbd_{name} - ")),
            "{file}"
        );
        let synopsis = pod.split("=head1 DESCRIPTION").next().unwrap();
        assert!(
            synopsis.contains(&format!("nbd_{name} (")),
            "{file}: no prototype"
        );
        assert!(
            pod.contains(&format!("first appeared in libnbd {version}.")),
            "{file}: wrong version"
        );
        assert!(
            pod.contains(&format!("LIBNBD_HAVE_NBD_{} 1", name.to_uppercase())),
            "{file}: no LIBNBD_HAVE_ macro"
        );
        for line in pod.lines().filter(|l| l.starts_with(' ')) {
            assert!(
                line.len() <= 78,
                "{file}: code line too wide for man: {line:?}"
            );
        }
    }
}

/// Where both the table and docs.rs give a prototype (a call implemented
/// after its page was written), they agree on the C types.
#[test]
fn written_synopses_match_the_table() {
    for (name, d) in docs::DOCS {
        let Some(written) = d.synopsis else { continue };
        let Some(from_table) = render_man::table_types(name) else {
            continue;
        };
        let written = render_man::synopsis_types(written, name)
            .unwrap_or_else(|| panic!("nbd_{name}: synopsis does not parse: {written}"));
        assert_eq!(
            written, from_table,
            "nbd_{name}: docs.rs synopsis vs API table"
        );
    }
}

/// Every example of a page compiles against our libnbd.h. An example is
/// statements, optionally preceded by helper functions and a `/* ... */`
/// line; it is put in a function that has `nbd`, `buf` and `uri` in scope
/// and an `error:` label.
#[test]
fn examples_compile_against_our_header() {
    let capi = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = capi.join("../include");
    let mut count = 0;
    for (name, d) in docs::DOCS {
        let Some(example) = d.example else { continue };
        // Helper functions come first, then a "/* ... */" line.
        let (top, body) = match example.find("\n/* ...") {
            Some(i) if example.starts_with("static ") => {
                let rest = &example[i + 1..];
                (&example[..i], rest.split_once('\n').map_or("", |(_, b)| b))
            }
            _ => ("", example),
        };
        let src = format!(
            "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\
             #include <inttypes.h>\n#include <poll.h>\n#include <libnbd.h>\n\
             {top}\n\
             void example_{name} (struct nbd_handle *nbd, const char *uri)\n{{\n\
             char buf[512];\n{{\n{body}\n}}\n\
             error:\n(void) nbd; (void) uri; (void) buf;\n}}\n"
        );
        let mut cc = std::process::Command::new(std::env::var("CC").unwrap_or("cc".into()))
            .args([
                "-std=gnu11",
                "-fsyntax-only",
                "-Werror=implicit-function-declaration",
            ])
            .args([
                "-Werror=incompatible-pointer-types",
                "-Werror=int-conversion",
            ])
            .arg("-I")
            .arg(&include)
            .args(["-x", "c", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run cc (a C compiler is a build dependency)");
        use std::io::Write;
        cc.stdin.take().unwrap().write_all(src.as_bytes()).unwrap();
        let out = cc.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nbd_{name}: the example does not compile:\n{}\n{src}",
            String::from_utf8_lossy(&out.stderr)
        );
        count += 1;
    }
    assert!(count >= 10, "only {count} examples");
}
