//! `nbdkit-mangen DIR`: writes the manual page of every built-in plugin
//! and filter as DIR/nbdkit-NAME-plugin.1.pod and
//! DIR/nbdkit-NAME-filter.1.pod (see `nbd_server_bin::manpage`).
//! `make man` runs it and then pod2man on each page.

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = &args[..] else {
        eprintln!("usage: nbdkit-mangen DIR");
        std::process::exit(2);
    };
    let pages = nbd_server_bin::manpage::all_pages().unwrap_or_else(|missing| {
        for m in missing {
            eprintln!("nbdkit-mangen: {m}");
        }
        std::process::exit(1);
    });
    let dir = PathBuf::from(dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("nbdkit-mangen: {}: {e}", dir.display());
        std::process::exit(1);
    }
    for page in pages {
        let path = dir.join(format!("{}.pod", page.file));
        if let Err(e) = std::fs::write(&path, page.pod) {
            eprintln!("nbdkit-mangen: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
