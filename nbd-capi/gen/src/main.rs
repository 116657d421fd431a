//! Writes nbd-capi's generated files from the API table.
//!
//! Run from anywhere in the workspace: `cargo run -p nbd-capi-gen`. The files
//! are committed; nbd-capi's tests fail when they drift from the table.

mod api;
mod render;

use std::path::Path;

fn main() {
    let problems = api::check();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("nbd-capi-gen: {p}");
        }
        std::process::exit(1);
    }
    let capi = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = [
        (capi.join("src/generated/exports.rs"), render::exports_rs()),
        (capi.join("libnbd.syms"), render::syms()),
    ];
    for (path, text) in files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
}
