//! The generated files match the API table, and the table matches libnbd
//! 1.24.4's exported symbols (all of libnbd 1.14.2's implemented).

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

#[test]
fn debian_symbols_file_is_current() {
    assert_same(
        &capi().join("../debian/libnbd0.symbols"),
        &render::debian_symbols(),
    );
}

/// A reference list: `symbol<TAB>LIBNBD_x.y`, `#` comments. They live in
/// the project's shared folder beside the repository.
fn reference(file: &str) -> Option<Vec<(String, String)>> {
    let candidates = [
        std::env::var_os("NBD_REFERENCE_DIR").map(|d| PathBuf::from(d).join(file)),
        Some(capi().join("../../shared/reference").join(file)),
        Some(PathBuf::from("/work/shared/reference").join(file)),
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

fn row(sym: &str) -> Option<&'static api::Call> {
    api::CALLS.iter().find(|c| format!("nbd_{}", c.name) == sym)
}

/// libnbd 1.14.2's calls, every one of them implemented at its node:
/// programs built against Debian 12's libnbd must keep running.
#[test]
fn table_implements_all_of_libnbd_1_14() {
    let Some(reference) = reference("libnbd-1.14-symbols.tsv") else {
        eprintln!("skipped: libnbd-1.14-symbols.tsv not found");
        return;
    };
    let mut problems = Vec::new();
    for (sym, node) in &reference {
        match row(sym) {
            None => problems.push(format!("{sym}: missing from the table")),
            Some(c) if format!("LIBNBD_{}", c.version) != *node => problems.push(format!(
                "{sym}: table says LIBNBD_{}, reference {node}",
                c.version
            )),
            Some(c) if c.status != api::Status::Implemented => {
                problems.push(format!("{sym}: not implemented"))
            }
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The table is libnbd 1.24.4's list: every symbol at its node, nothing
/// else, and the version nodes in order. Rows not implemented yet (todo)
/// are allowed, and listed.
#[test]
fn table_matches_libnbd_1_24_symbols() {
    let Some(reference) = reference("libnbd-1.24-symbols.tsv") else {
        eprintln!("skipped: libnbd-1.24-symbols.tsv not found");
        return;
    };
    let mut problems = Vec::new();
    let mut todo = Vec::new();
    for (sym, node) in &reference {
        match row(sym) {
            None => problems.push(format!("{sym}: missing from the table")),
            Some(c) if format!("LIBNBD_{}", c.version) != *node => problems.push(format!(
                "{sym}: table says LIBNBD_{}, reference {node}",
                c.version
            )),
            Some(c) if c.status == api::Status::Todo => todo.push(format!("{sym} ({node})")),
            Some(_) => {}
        }
    }
    for c in api::CALLS {
        let sym = format!("nbd_{}", c.name);
        if !reference.iter().any(|(s, _)| *s == sym) {
            problems.push(format!("{sym}: not in libnbd 1.24.4"));
        }
    }
    // The version script's nodes: the reference's, in its order.
    let mut nodes: Vec<&str> = Vec::new();
    for (_, node) in &reference {
        let v = node.trim_start_matches("LIBNBD_");
        if !nodes.contains(&v) {
            nodes.push(v);
        }
    }
    let key = |v: &&str| -> (u32, u32) {
        let (a, b) = v.split_once('.').unwrap_or((v, "0"));
        (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
    };
    nodes.sort_by_key(key);
    if api::VERSIONS != nodes.as_slice() {
        problems.push(format!(
            "VERSIONS is {:?}, the reference's nodes are {nodes:?}",
            api::VERSIONS
        ));
    }
    assert!(problems.is_empty(), "{problems:#?}");
    let done = render::implemented().count();
    eprintln!(
        "{done} of {} reference symbols implemented; not yet ({}): {}",
        reference.len(),
        todo.len(),
        todo.join(" ")
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
