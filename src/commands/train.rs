//! `wsol train`: a run from a config, or the resumption of one.

use anyhow::Result;

use super::load_config;
use crate::cli::TrainArgs;
use crate::train;

pub fn run(a: TrainArgs) -> Result<()> {
    // Resuming a run without --config reuses the run's resolved config.
    let fallback =
        a.resume.as_deref().map(|r| train::resolve_resume(r).map(|(dir, _)| dir.join("config.yaml"))).transpose()?;
    let cfg = load_config(&a.common, fallback.as_deref())?;
    let opts = train::TrainOptions {
        out: a.out,
        resume: a.resume,
        use_previous_checkpoint: a.use_previous_checkpoint,
        quiet: a.common.quiet,
        own_experiment: true,
    };
    let dist = crate::distributed::launch()?;
    let (_, result) = match train::train_distributed(&cfg, &opts, dist.as_ref()) {
        Ok(r) => r,
        Err(e) => return Err(super::stop_ranks(dist.as_ref(), e)),
    };
    if dist.is_root() {
        println!("{}", crate::report::metrics_table(&result.table_rows()));
    }
    Ok(())
}
