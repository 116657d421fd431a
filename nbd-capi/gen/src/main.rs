//! Writes nbd-capi's generated files from the API table.
//!
//! Run from anywhere in the workspace: `cargo run -p nbd-capi-gen`. The files
//! are committed; nbd-capi's tests fail when they drift from the table.
//!
//! The plain run also writes `debian/libnbd0.symbols`, the libnbd0
//! package's symbols file; `--symbols FILE` writes it to FILE only.
//!
//! `cargo run -p nbd-capi-gen -- --man DIR` writes instead the POD source of
//! every nbd_NAME(3) page into DIR (`make man` turns them into roff). Files
//! whose text did not change are left alone, so make rebuilds only what
//! changed.

mod api;
mod docs;
mod render;
mod render_man;

use std::path::{Path, PathBuf};

fn main() {
    let problems = api::check();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("nbd-capi-gen: {p}");
        }
        std::process::exit(1);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let files: Vec<(PathBuf, String)> = match args.as_slice() {
        [] => {
            let capi = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            vec![
                (capi.join("src/generated/exports.rs"), render::exports_rs()),
                (capi.join("libnbd.syms"), render::syms()),
                (
                    capi.join("../debian/libnbd0.symbols"),
                    render::debian_symbols(),
                ),
            ]
        }
        [flag, dir] if flag == "--man" => render_man::pages()
            .into_iter()
            .map(|(name, pod)| (Path::new(dir).join(name), pod))
            .collect(),
        [flag, file] if flag == "--symbols" => {
            vec![(PathBuf::from(file), render::debian_symbols())]
        }
        _ => {
            eprintln!("usage: nbd-capi-gen [--man DIR | --symbols FILE]");
            std::process::exit(2);
        }
    };
    let total = files.len();
    let mut written = 0;
    for (path, text) in files {
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        written += 1;
        if total < 10 {
            println!("wrote {}", path.display());
        }
    }
    if total >= 10 {
        println!("nbd-capi-gen: {written} of {total} files rewritten");
    }
}
