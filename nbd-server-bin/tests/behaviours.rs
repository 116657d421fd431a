//! Behaviours where we used to differ from nbdkit 1.32: each checked
//! against our nbdkit and Debian's with the same arguments.

mod common;
mod stack;

use common::*;
use stack::*;

/// A field of `nbdinfo` (its first word) from BIN with ARGS.
fn info_of(bin: &str, args: &[&str], field: &str) -> String {
    require("nbdinfo", "libnbd-bin");
    let o = run_with(bin, args, "nbdinfo \"$uri\"");
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    let s = String::from_utf8(o.stdout).unwrap();
    s.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{field}: "))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no {field} in nbdinfo output:\n{s}"))
}

/// The same field from ours and Debian's; returns it.
fn same_info(args: &[&str], field: &str) -> String {
    let ours = info_of(BIN, args, field);
    let theirs = info_of(DEBIAN_NBDKIT, args, field);
    assert_eq!(ours, theirs, "{field} of {args:?}");
    ours
}

#[test]
fn fua_default_mode_is_none() {
    // Without fuamode, FUA is hidden and flush kept, in both (the memory
    // plugin has native FUA, so this is not the plugin's own answer).
    let args = ["--filter=fua", "memory", "1M"];
    assert_eq!(same_info(&args, "can_fua"), "false");
    assert_eq!(same_info(&args, "can_flush"), "true");
    // The other modes agree too.
    for m in ["emulate", "native", "force", "pass", "discard"] {
        let args = ["--filter=fua", "memory", "1M", &format!("fuamode={m}")];
        assert_eq!(same_info(&args, "can_fua"), "true", "{m}");
    }
    // fuamode=none, listed by the manual, is the default's behaviour
    // here; Debian's 1.32.5 refuses the word (see filters/fua.rs).
    assert_eq!(
        info_of(
            BIN,
            &["--filter=fua", "memory", "1M", "fuamode=none"],
            "can_fua"
        ),
        "false"
    );
    bad(&["--filter=fua", "null", "fuamode=sometimes"], "fuamode");
}
