//! `wsol eval`: a checkpoint scored on a split.

use std::path::Path;

use anyhow::{Context, Result};

use super::load_config;
use crate::cli::EvalArgs;
use crate::evaluate;
use crate::report::metrics_table;

pub fn run(a: EvalArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    let split = a.split.clone().unwrap_or_else(|| cfg.eval.split.clone());
    let result = evaluate::evaluate_checkpoint(&cfg, &a.checkpoint, &split, a.save_cams.as_deref(), a.common.quiet)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let ckpt_dir = a.checkpoint.parent().unwrap_or(Path::new("."));
        let run_dir = if ckpt_dir.file_name().is_some_and(|n| n == "checkpoints") {
            ckpt_dir.parent().unwrap_or(Path::new("."))
        } else {
            ckpt_dir
        };
        run_dir.join(format!("eval-{split}"))
    });
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
    eprintln!("metrics written to {}", out.join("metrics.json").display());
    Ok(())
}
