//! libnbd.so.0 does TLS with GnuTLS (`src/tls.rs`): link it into every
//! Rust artefact (tests, the rlib's users). The Makefile links the shared
//! library from the staticlib with -lgnutls itself.
fn main() {
    println!("cargo:rustc-link-lib=gnutls");
    println!("cargo:rerun-if-changed=build.rs");
}
