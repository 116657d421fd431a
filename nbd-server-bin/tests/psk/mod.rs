//! A PSK key file made at test time with psktool (gnutls-bin), as
//! scripts/gen-tls-keys.sh makes them; a missing psktool fails the test
//! with the package to install.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::require;

/// The user the key is for.
pub const USER: &str = "alice";

/// Writes `dir/keys.psk` ("alice:HEXKEY") and returns its path.
pub fn make_keys(dir: &Path) -> PathBuf {
    let psktool = require("psktool", "gnutls-bin");
    let keys = dir.join("keys.psk");
    let out = Command::new(psktool)
        .args(["-u", USER, "-p"])
        .arg(&keys)
        .output()
        .expect("run psktool");
    assert!(out.status.success(), "psktool: {out:?}");
    keys
}

/// A libnbd URI that connects over TLS with `keys` to the Unix socket
/// `sock` (nbdinfo and nbdcopy allow the key file in the URI).
pub fn tls_uri(sock: &str, export: &str, keys: &Path) -> String {
    format!(
        "nbds+unix://{USER}@/{export}?socket={sock}&tls-psk-file={}",
        keys.display()
    )
}
