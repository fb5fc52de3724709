//! Progress of long work: an indicatif bar on a terminal, a plain line every tenth of the
//! work otherwise (logs of CI runs and `nohup` jobs stay readable).
use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    prefix: String,
    len: u64,
    next_line: u64,
    start: Instant,
    quiet: bool,
}

impl Progress {
    /// Progress over `len` units; `quiet` prints nothing at all (tests).
    pub fn new(prefix: &str, len: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(len);
            b.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:32.cyan/blue}] {pos}/{len} {msg} ({elapsed} < {eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(prefix.to_string());
            b
        });
        Progress { bar, prefix: prefix.to_string(), len, next_line: 0, start: Instant::now(), quiet }
    }

    /// Move to `pos` with a status message.
    pub fn set(&mut self, pos: u64, msg: impl FnOnce() -> String) {
        match &self.bar {
            Some(b) => {
                b.set_position(pos);
                b.set_message(msg());
            }
            None if !self.quiet && (pos >= self.next_line || pos == self.len) => {
                eprintln!("{} {pos}/{} {} [{:.0} s]", self.prefix, self.len, msg(), self.start.elapsed().as_secs_f64());
                self.next_line = pos + (self.len / 10).max(1);
            }
            None => {}
        }
    }

    /// A line above the bar (warnings).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
