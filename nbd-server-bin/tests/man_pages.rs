//! The manual pages: every page `make man` builds exists, converts with
//! pod2man without a POD error and renders with `man --warnings` without
//! a warning, and the pages they point to exist.
//!
//! The generated pages come from `manpage::all_pages` (as nbdkit-mangen
//! writes them) and the hand-written ones from man/*.pod; both are
//! converted here, in a private directory, so the test does not depend
//! on `make man` having run.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TempDir;
use nbd_server_bin::filters::FILTERS;
use nbd_server_bin::manpage;
use nbd_server_bin::plugins::PLUGINS;

/// The hand-written pages the issue asks for, as man/NAME.SECTION.pod.
const HAND_WRITTEN: &[&str] = &[
    "nbdkit.1",
    "nbdkit-captive.1",
    "nbdkit-service.1",
    "nbdkit-tls.1",
    "nbdkit-plugin.3",
    "nbdkit-filter.3",
    "xnbd-server.8",
    "xnbd-bgctl.8",
];

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../man")
}

/// Every page as (NAME.SECTION, POD text): the hand-written ones and the
/// generated ones.
fn all_pods() -> Vec<(String, String)> {
    let mut pods = Vec::new();
    for entry in std::fs::read_dir(man_dir()).expect("man/ directory") {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(page) = file.strip_suffix(".pod") {
            pods.push((page.to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
    let generated = manpage::all_pages().unwrap_or_else(|missing| {
        panic!("pages that cannot be generated:\n{}", missing.join("\n"))
    });
    for p in generated {
        pods.push((p.file, p.pod));
    }
    pods.sort();
    pods
}

#[test]
fn every_page_exists() {
    let pages: BTreeSet<String> = all_pods().into_iter().map(|(p, _)| p).collect();
    let mut wanted: Vec<String> = HAND_WRITTEN.iter().map(|p| p.to_string()).collect();
    wanted.extend(
        PLUGINS
            .iter()
            .map(|p| format!("nbdkit-{}-plugin.1", p.name)),
    );
    wanted.extend(
        FILTERS
            .iter()
            .map(|f| format!("nbdkit-{}-filter.1", f.name)),
    );
    let missing: Vec<&String> = wanted.iter().filter(|w| !pages.contains(*w)).collect();
    assert!(missing.is_empty(), "missing manual pages: {missing:?}");
}

/// Each page names its own name in its NAME section, as whatis(1) and
/// mandb(8) read it.
#[test]
fn name_sections_match_the_file_names() {
    for (page, pod) in all_pods() {
        let name = page.rsplit_once('.').unwrap().0;
        let after = pod
            .split("=head1 NAME\n\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{page}: no NAME section"));
        assert!(
            after.starts_with(&format!("{name} - ")),
            "{page}: NAME section does not start with \"{name} - \""
        );
    }
}

/// Every L<nbdkit-…(N)> or L<xnbd-…(N)> link names one of our pages.
#[test]
fn links_to_our_pages_resolve() {
    let pods = all_pods();
    let pages: BTreeSet<String> = pods.iter().map(|(p, _)| p.clone()).collect();
    let mut broken = Vec::new();
    for (page, pod) in &pods {
        for link in pod.split("L<").skip(1) {
            let target = link.split('>').next().unwrap_or("");
            let Some((name, rest)) = target.split_once('(') else {
                continue;
            };
            let section = rest.trim_end_matches(')');
            if !(name.starts_with("nbdkit") || name.starts_with("xnbd-")) {
                continue;
            }
            if !pages.contains(&format!("{name}.{section}")) {
                broken.push(format!("{page}: L<{target}>"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to pages we do not have: {broken:#?}"
    );
}

/// pod2man converts each page with no POD error, and `man --warnings`
/// renders the result at 80 columns with nothing on standard error.
#[test]
fn pages_render_without_warnings() {
    let dir = TempDir::new("man");
    let mut problems = Vec::new();
    for (page, pod) in all_pods() {
        let (name, section) = page.rsplit_once('.').unwrap();
        let src = dir.path().join(format!("{page}.pod"));
        let out = dir.path().join(&page);
        std::fs::write(&src, &pod).unwrap();
        let conv = Command::new("pod2man")
            .arg("--utf8")
            .arg("--errors=die")
            .arg(format!("--section={section}"))
            .arg(format!("--name={}", name.to_ascii_uppercase()))
            .arg("--center=nbd-rs")
            .arg("--release=nbd-rs")
            .arg(&src)
            .arg(&out)
            .output()
            .expect("pod2man (from perl) must be installed");
        if !conv.status.success() || !conv.stderr.is_empty() {
            problems.push(format!(
                "{page}: pod2man: {}",
                String::from_utf8_lossy(&conv.stderr)
            ));
            continue;
        }
        let render = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&out)
            .env("MANWIDTH", "80")
            .env_remove("MAN_KEEP_FORMATTING")
            .output()
            .expect("man (man-db) must be installed");
        let text = plain(&String::from_utf8_lossy(&render.stdout));
        if !render.status.success() || !render.stderr.is_empty() {
            problems.push(format!(
                "{page}: man: {}",
                String::from_utf8_lossy(&render.stderr)
            ));
        } else if !text.contains(&name.to_ascii_uppercase()) || !text.contains("DESCRIPTION") {
            problems.push(format!(
                "{page}: rendered page lacks its title or DESCRIPTION: {:?}",
                &text[..text.len().min(300)]
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Rendered text without overstrike (`X\bX` for bold, `_\bX` for
/// underline), which man still emits when its output is not a terminal
/// under some settings.
fn plain(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

/// `nbdkit --help` points to the manual pages.
#[test]
fn help_names_the_pages() {
    let out = Command::new(common::BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for page in [
        "nbdkit(1)",
        "nbdkit-PLUGIN-plugin(1)",
        "nbdkit-FILTER-filter(1)",
    ] {
        assert!(help.contains(page), "--help does not mention {page}");
    }
}

/// nbdkit(1) names every built-in plugin in its PLUGINS section.
#[test]
fn nbdkit_page_names_every_plugin() {
    let pod = std::fs::read_to_string(man_dir().join("nbdkit.1.pod")).unwrap();
    let section = pod
        .split("=head1 PLUGINS\n")
        .nth(1)
        .and_then(|s| s.split("=head1").next())
        .expect("nbdkit.1.pod has a PLUGINS section");
    for p in PLUGINS {
        assert!(
            section.contains(&format!("C<{}>", p.name)),
            "nbdkit(1) does not name the {} plugin",
            p.name
        );
    }
}
