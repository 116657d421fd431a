//! Builds the C part of the plugin interface (src/cplugin/shim.c: the
//! printf-style nbdkit_* functions) into a static library of this crate,
//! and links the `nbdkit` binary so that the plugins it dlopens can call
//! the nbdkit_* functions: they are exported from its dynamic symbol
//! table (src/cplugin/nbdkit.dynlist), and nothing else is.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = dir.join("src/cplugin/shim.c");
    let obj = out.join("nbdkit-shim.o");
    let lib = out.join("libnbdkit_shim.a");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let run = |cmd: &mut Command| {
        let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(st.success(), "{cmd:?} failed: {st}");
    };
    run(Command::new(&cc)
        .args(["-c", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&obj)
        .arg(&src));
    let _ = std::fs::remove_file(&lib);
    run(
        Command::new(std::env::var("AR").unwrap_or_else(|_| "ar".into()))
            .arg("crs")
            .arg(&lib)
            .arg(&obj),
    );
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=nbdkit_shim");
    println!(
        "cargo:rustc-link-arg-bin=nbdkit=-Wl,--dynamic-list={}",
        dir.join("src/cplugin/nbdkit.dynlist").display()
    );
    println!("cargo:rerun-if-changed=src/cplugin/shim.c");
    println!("cargo:rerun-if-changed=src/cplugin/nbdkit.dynlist");
    println!("cargo:rerun-if-env-changed=LIBDIR");
    println!("cargo:rerun-if-env-changed=CC");
}
