//! The generated files match the API table, and the table matches libnbd
//! 1.14.2's exported symbols.

#[path = "../gen/src/api.rs"]
mod api;
#[path = "../gen/src/render.rs"]
mod render;

use std::path::{Path, PathBuf};

fn capi() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn assert_same(path: &Path, want: &str) {
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{} drifted from the API table: run `cargo run -p nbd-capi-gen` and commit",
        path.display()
    );
}

#[test]
fn table_is_consistent() {
    assert_eq!(api::check(), Vec::<String>::new());
}

#[test]
fn exports_rs_is_current() {
    assert_same(
        &capi().join("src/generated/exports.rs"),
        &render::exports_rs(),
    );
}

#[test]
fn version_script_is_current() {
    assert_same(&capi().join("libnbd.syms"), &render::syms());
}

/// The reference list: `symbol<TAB>LIBNBD_x.y`, `#` comments. It lives in
/// the project's shared folder beside the repository.
fn reference() -> Option<Vec<(String, String)>> {
    reference_named("libnbd-1.14-symbols.tsv", "NBD_REFERENCE_SYMBOLS")
}

/// libnbd 1.24's list, where the calls of later nodes are found.
fn reference_1_24() -> Option<Vec<(String, String)>> {
    reference_named("libnbd-1.24-symbols.tsv", "NBD_REFERENCE_SYMBOLS_1_24")
}

fn reference_named(file: &str, var: &str) -> Option<Vec<(String, String)>> {
    let candidates = [
        std::env::var_os(var).map(PathBuf::from),
        Some(capi().join("../../shared/reference").join(file)),
        Some(Path::new("/work/shared/reference").join(file)),
    ];
    let path = candidates.into_iter().flatten().find(|p| p.exists())?;
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (s, v) = l.split_once('\t').expect("symbol<TAB>version");
                (s.to_string(), v.trim().to_string())
            })
            .collect(),
    )
}

#[test]
fn table_matches_reference_symbols() {
    let Some(reference) = reference() else {
        eprintln!("skipped: libnbd-1.14-symbols.tsv not found");
        return;
    };
    let mut problems = Vec::new();
    for (sym, node) in &reference {
        match api::CALLS
            .iter()
            .find(|c| format!("nbd_{}", c.name) == *sym)
        {
            None => problems.push(format!("{sym}: missing from the table")),
            Some(c) if format!("LIBNBD_{}", c.version) != *node => problems.push(format!(
                "{sym}: table says LIBNBD_{}, reference {node}",
                c.version
            )),
            Some(_) => {}
        }
    }
    // A call not in 1.14 must be in 1.24's list, with the same node.
    let later = reference_1_24().unwrap_or_default();
    for c in api::CALLS {
        let sym = format!("nbd_{}", c.name);
        if reference.iter().any(|(s, _)| *s == sym) {
            continue;
        }
        match later.iter().find(|(s, _)| *s == sym) {
            None => problems.push(format!("{sym}: not in libnbd 1.14.2 nor 1.24")),
            Some((_, node)) if format!("LIBNBD_{}", c.version) != *node => problems.push(format!(
                "{sym}: table says LIBNBD_{}, libnbd 1.24 {node}",
                c.version
            )),
            Some(_) => {}
        }
    }
    // Every node of the reference is in the version script.
    for (_, node) in &reference {
        let v = node.trim_start_matches("LIBNBD_");
        if !api::VERSIONS.contains(&v) {
            problems.push(format!("{node}: missing from VERSIONS"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    let done = render::implemented().count();
    eprintln!(
        "{done} of {} reference symbols implemented",
        reference.len()
    );
}

/// The committed wrappers hold the handle lock once for checks and body
/// (see `render::lock_problems`), for every call on a live handle.
#[test]
fn committed_wrappers_check_and_run_under_one_lock() {
    let text = std::fs::read_to_string(capi().join("src/generated/exports.rs")).unwrap();
    let (problems, checked) = render::lock_problems(&text);
    assert!(problems.is_empty(), "{problems:#?}");
    let live = render::implemented()
        .filter(|c| c.handle && c.ret != api::Ret::Void)
        .count();
    assert_eq!(checked.len(), live, "{checked:?}");
}

/// The bodies run inside the wrapper's critical section: locking the
/// handle again there would self-deadlock (the lock is not recursive).
/// They get the held lock instead, and the code they call takes it too.
#[test]
fn bodies_never_lock_the_handle_again() {
    let mut problems = Vec::new();
    for dir in ["src/calls", "src/connect"] {
        for entry in std::fs::read_dir(capi().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.contains(".lock()") || line.contains("with_lock(") {
                    problems.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
