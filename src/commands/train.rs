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
        Err(e) => return Err(stop_ranks(dist.as_ref(), e)),
    };
    if dist.is_root() {
        println!("{}", crate::report::metrics_table(&result.table_rows()));
    }
    Ok(())
}

/// An error only this rank saw (the others may wait in a collective for it forever):
/// said here, then the whole job is ended. Errors every rank reached together (set-up
/// checks, an interrupt) return normally, each rank saying its own.
fn stop_ranks(dist: &dyn crate::distributed::Collective, e: anyhow::Error) -> anyhow::Error {
    let agreed = e.downcast_ref::<crate::distributed::Agreed>().is_some()
        || e.downcast_ref::<train::interrupt::Interrupted>().is_some();
    if dist.world() == 1 || agreed {
        return e;
    }
    let line = format!("error: rank {}: {}; ending every rank of the job\n", dist.rank(), crate::error::message(&e));
    // One write, so the line does not interleave with another rank's.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    dist.abort(1)
}
