//! Progress bars for long work (epochs, batches, evaluation), with ETA.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A thin wrapper so callers never touch indicatif, and `--quiet` is one flag. Clones
/// share one bar (for reports from inside long work).
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// `quiet` hides the bar entirely; messages from `println` still go to stderr.
    pub fn new(total: u64, prefix: &str, quiet: bool) -> Self {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
        // The template is a constant, so this only fails if indicatif changes its syntax;
        // fall back to the default style rather than panic.
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta_precise} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(prefix.to_string());
        if !quiet {
            // Keeps elapsed time and ETA moving while one long batch runs.
            bar.enable_steady_tick(Duration::from_millis(500));
        }
        Progress { bar }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// Prints a result line on stdout with the bar (on stderr) cleared meanwhile, so
    /// results and progress keep to their own streams.
    pub fn stdout_line(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Leaves the final state of the bar on screen.
    pub fn finish(&self) {
        self.bar.finish();
    }

    /// Prints above the bar, on stderr (stdout is for results). indicatif drops `println`
    /// on a hidden bar (quiet, or stderr not a terminal, e.g. a log file), so then the line
    /// goes to stderr directly.
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_bar_is_hidden_and_counts() {
        let p = Progress::new(10, "train", true);
        assert!(p.bar.is_hidden());
        p.inc(3);
        p.set_message("loss 0.5".into());
        p.println("epoch 1 done");
        p.clone().stdout_line("a result");
        assert_eq!(p.bar.position(), 3);
        p.finish();
        assert!(p.bar.is_finished());
    }
}
