//! How `xnbd-bgctl --cache-all --progress` shows its progress on standard
//! error: on a terminal, one line redrawn in place with a bar
//!
//! ```text
//! caching [##############----------------]  45% 922 / 2049 blocks
//! ```
//!
//! and, when standard error is a file or a pipe (a log, a script), plain
//! lines that read well there, one each time the percentage changes:
//!
//! ```text
//! caching: 922 / 2049 blocks (45%)
//! ```

use std::io::{IsTerminal, Write};

/// Where the progress goes and what was last shown.
pub struct Progress {
    terminal: bool,
    width: usize,
    /// The percentage last shown, so that unchanged ones are not repeated.
    last: Option<u64>,
    /// Whether a terminal line is open (ended with a newline by `finish`).
    drawn: bool,
}

/// The percentage of `n` of `m`, rounded down (100 for an empty disk).
pub fn percent(n: u64, m: u64) -> u64 {
    if m == 0 {
        100
    } else {
        (n as u128 * 100 / m as u128) as u64
    }
}

/// The terminal line for `n` of `m` blocks, `width` columns wide at most:
/// the bar takes what the words leave (at least 10 columns).
pub fn bar_line(n: u64, m: u64, width: usize) -> String {
    let pct = percent(n, m);
    let tail = format!(" {pct:3}% {n} / {m} blocks");
    let head = "caching [";
    let bar = width
        .saturating_sub(head.len() + 1 + tail.len() + 1)
        .max(10);
    let filled = (bar as u128 * pct.min(100) as u128 / 100) as usize;
    format!(
        "{head}{}{}]{tail}",
        "#".repeat(filled),
        "-".repeat(bar - filled)
    )
}

/// The line written when standard error is not a terminal.
pub fn plain_line(n: u64, m: u64) -> String {
    format!("caching: {n} / {m} blocks ({}%)", percent(n, m))
}

impl Progress {
    /// Progress on standard error, as a bar if it is a terminal ($COLUMNS
    /// wide, or 80).
    pub fn on_stderr() -> Progress {
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|&c: &usize| c >= 20)
            .unwrap_or(80);
        Progress {
            terminal: std::io::stderr().is_terminal(),
            width,
            last: None,
            drawn: false,
        }
    }

    /// Shows that `n` of `m` blocks are cached.
    pub fn update(&mut self, n: u64, m: u64) {
        let pct = percent(n, m);
        if self.last == Some(pct) {
            return;
        }
        self.last = Some(pct);
        let mut err = std::io::stderr().lock();
        // Progress is advice: a closed stderr must not stop the caching.
        let _ = if self.terminal {
            self.drawn = true;
            write!(err, "\r{}", bar_line(n, m, self.width - 1))
        } else {
            writeln!(err, "{}", plain_line(n, m))
        };
        let _ = err.flush();
    }

    /// Ends the terminal line, before anything else is written.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_down() {
        assert_eq!(percent(0, 3), 0);
        assert_eq!(percent(2, 3), 66);
        assert_eq!(percent(3, 3), 100);
        assert_eq!(percent(0, 0), 100);
    }

    #[test]
    fn the_bar_fills_with_the_percentage_and_fits_the_width() {
        let l = bar_line(0, 200, 60);
        assert_eq!(l.chars().count(), 59, "{l}");
        assert!(l.starts_with("caching [---") && l.ends_with("   0% 0 / 200 blocks"));
        let l = bar_line(100, 200, 60);
        let bar = &l[l.find('[').unwrap() + 1..l.find(']').unwrap()];
        assert_eq!(bar.matches('#').count(), bar.len() / 2, "{l}");
        let l = bar_line(200, 200, 60);
        assert!(
            !l.contains('-') && l.ends_with(" 100% 200 / 200 blocks"),
            "{l}"
        );
        // A narrow terminal still gets a bar of 10.
        assert!(bar_line(1, 2, 10).contains("[#####-----]"));
    }

    #[test]
    fn plain_lines_say_the_counts() {
        assert_eq!(plain_line(922, 2049), "caching: 922 / 2049 blocks (44%)");
    }
}
