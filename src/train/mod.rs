//! Training: the [`Trainer`] (set-up or resumption, epochs of [`step::train_step`]s,
//! validation, checkpoints, the final evaluation into `metrics.json`), SGD with parameter
//! groups, learning-rate schedules, checkpoint files, and the tuning protocol (`sweep`).

pub mod checkpoint;
pub mod hparams;
pub mod interrupt;
pub mod loss_scale;
pub mod optimizer;
pub mod resume;
pub mod schedule;
pub mod step;
pub mod sweep;
mod trainer;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::config::Config;
use crate::evaluate::EvalResult;
use crate::report::Progress;
pub use resume::resolve_resume;
pub use trainer::Trainer;

pub struct TrainOptions {
    /// Run directory; None = `<log.dir>/<name>-<UTC timestamp>`.
    pub out: Option<PathBuf>,
    /// Run directory or checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// When the latest checkpoint cannot be loaded, resume from the one saved before it.
    pub use_previous_checkpoint: bool,
    pub quiet: bool,
    /// Whether the run writes its own HParams experiment record (TensorBoard's columns);
    /// a sweep writes one for all its trials instead.
    pub own_experiment: bool,
}

/// Appends to `<run>/train.log` and echoes to stderr: progress and information unless
/// quiet, warnings always. Results go to stdout from the command, not from here.
struct RunLog {
    file: Option<std::fs::File>,
    quiet: bool,
    /// Ranks other than 0 of a distributed run: rank 0 says everything once.
    muted: bool,
}

impl RunLog {
    fn write_file(&mut self, text: &str) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{text}");
        }
    }

    /// Information (run directory, one line per epoch): on the console unless quiet.
    fn line(&mut self, progress: Option<&Progress>, text: &str) {
        self.write_file(text);
        if !self.quiet {
            Self::echo(progress, text);
        }
    }

    /// A warning (`warning: ...`): on the console even when quiet.
    fn warn(&mut self, progress: Option<&Progress>, text: &str) {
        self.write_file(text);
        if !self.muted {
            Self::echo(progress, text);
        }
    }

    fn echo(progress: Option<&Progress>, text: &str) {
        match progress {
            Some(p) => p.println(text),
            None => eprintln!("{text}"),
        }
    }
}

pub fn default_run_dir(cfg: &Config) -> PathBuf {
    stamped_dir(&cfg.log.dir, &cfg.name)
}

/// `<parent>/<name>-<UTC timestamp>`, e.g. `runs/demo-20261207T093000`.
pub fn stamped_dir(parent: &std::path::Path, name: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace([':', '-'], "");
    parent.join(format!("{name}-{}", stamp.trim_end_matches('Z')))
}

/// Trains the configured model (or resumes a run) and scores the test split.
pub fn train(cfg: &Config, opts: &TrainOptions) -> Result<(PathBuf, EvalResult)> {
    train_distributed(cfg, opts, &crate::distributed::Local)
}

/// [`train`] as one rank of `dist`: all ranks call it with the same config.
pub fn train_distributed(
    cfg: &Config,
    opts: &TrainOptions,
    dist: &dyn crate::distributed::Collective,
) -> Result<(PathBuf, EvalResult)> {
    interrupt::install();
    Trainer::new_distributed(cfg, opts, dist)?.run()
}
