//! The pid file.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Writes our pid to `path`: whole under another name, then renamed, so
/// that a reader never sees a partial pid.
pub fn write(path: &Path) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let r = File::create(&tmp)
        .and_then(|mut f| writeln!(f, "{}", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_our_pid() {
        let dir = std::env::temp_dir().join(format!("pidfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pid");
        super::write(&p).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s, format!("{}\n", std::process::id()));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
