//! `wsol eval`: a checkpoint scored on a split.

use std::path::Path;

use anyhow::{Context, Result};

use super::load_config;
use crate::cli::EvalArgs;
use crate::evaluate;
use crate::report::metrics_table;

/// The run a checkpoint file belongs to.
fn run_dir_of(checkpoint: &Path) -> &Path {
    crate::train::checkpoint::run_dir_of(checkpoint.parent().unwrap_or(Path::new(".")))
}

pub fn run(a: EvalArgs) -> Result<()> {
    // Without --config, the run's own resolved config (what it was trained with).
    let own = run_dir_of(&a.checkpoint).join("config.yaml");
    let cfg = load_config(&a.common, own.is_file().then_some(own.as_path()))?;
    let split = a.split.clone().unwrap_or_else(|| cfg.eval.split.clone());
    let result = evaluate::evaluate_checkpoint(&cfg, &a.checkpoint, &split, a.save_cams.as_deref(), a.common.quiet)?;
    let out = a.out.clone().unwrap_or_else(|| run_dir_of(&a.checkpoint).join(format!("eval-{split}")));
    result
        .write(
            &out,
            &[
                ("checkpoint", serde_json::json!(a.checkpoint.display().to_string())),
                ("provenance", crate::report::provenance::Provenance::detect(&cfg.device).to_json()),
            ],
        )
        .with_context(|| format!("writing results to {}", out.display()))?;
    println!("{}", metrics_table(&result.table_rows()));
    if !a.common.quiet {
        eprintln!("metrics written to {}", out.join("metrics.json").display());
    }
    Ok(())
}
