//! The curl plugin's `header-script` and `cookie-script`
//! (nbdkit-curl-plugin(1), "HEADER AND COOKIE SCRIPTS"): a shell
//! fragment run before the first request, and again before a request
//! once `*-script-renew` seconds have passed since its last run. Its
//! output replaces the headers (one per line) or the cookie (the first
//! line) of every request after it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One script and what its last run printed.
pub struct Script {
    /// `header-script` or `cookie-script`, for messages.
    what: &'static str,
    script: String,
    renew: Option<Duration>,
    url: String,
    /// Runs so far: `$iteration` of the next run.
    iteration: u64,
    last_run: Option<Instant>,
    /// The non-empty lines of the last run's output, trailing white
    /// space removed.
    pub lines: Vec<String>,
}

impl Script {
    pub fn new(what: &'static str, script: String, renew_secs: u64, url: &str) -> Script {
        Script {
            what,
            script,
            renew: (renew_secs > 0).then(|| Duration::from_secs(renew_secs)),
            url: url.to_string(),
            iteration: 0,
            last_run: None,
            lines: Vec::new(),
        }
    }

    /// Runs the script if it never ran or its output is due for renewal;
    /// true if it ran (the output changed).
    pub fn refresh(&mut self) -> Result<bool, String> {
        let due = match (self.last_run, self.renew) {
            (None, _) => true,
            (Some(t), Some(r)) => t.elapsed() >= r,
            (Some(_), None) => false,
        };
        if !due {
            return Ok(false);
        }
        // The variables first, then the fragment; standard input is
        // /dev/null so the script cannot read the client's (nbdkit -s).
        let full = format!(
            "url={}\niteration={}\n\n{}",
            shell_quote(&self.url),
            self.iteration,
            self.script
        );
        self.iteration += 1;
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(full)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{}: /bin/sh: {e}", self.what))?;
        if !out.status.success() {
            // The first line of its errors, as nbdkit reports it.
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(match err.lines().next() {
                Some(l) => format!("{} failed: {l}", self.what),
                None => format!("{} failed", self.what),
            });
        }
        self.lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        self.last_run = Some(Instant::now());
        Ok(true)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
