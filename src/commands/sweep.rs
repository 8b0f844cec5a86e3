//! `wsol sweep`: the tuning protocol of Choe et al. (random search, val split, best trial on test).

use anyhow::Result;

use super::load_config;
use crate::cli::SweepArgs;
use crate::train;

pub fn run(a: SweepArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    anyhow::ensure!(a.trials >= 1, "--trials: expected at least 1");
    let space = match &a.search {
        Some(p) => crate::train::sweep::read_space(p)?,
        None => crate::train::sweep::default_space(&cfg),
    };
    let out = a.out.unwrap_or_else(|| {
        let run = train::default_run_dir(&cfg);
        run.with_file_name(run.file_name().unwrap().to_string_lossy().replacen(
            &cfg.name,
            &format!("{}-sweep", cfg.name),
            1,
        ))
    });
    let opts = crate::train::sweep::SweepOptions { trials: a.trials, out: out.clone(), quiet: a.common.quiet };
    crate::train::sweep::sweep(&cfg, &space, &opts)?;
    if !a.common.quiet {
        eprintln!("summary written to {} and sweep.csv", out.join("sweep.json").display());
    }
    Ok(())
}
