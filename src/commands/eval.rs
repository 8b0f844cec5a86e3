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
    let (cfg, checkpoint) = match (&a.checkpoint, &a.run) {
        (Some(c), _) => {
            // Without --config, the run's own resolved config (what it was trained with).
            let own = run_dir_of(c).join("config.yaml");
            (load_config(&a.common, own.is_file().then_some(own.as_path()))?, c.clone())
        }
        (None, Some(run)) => {
            if run.is_file() {
                anyhow::bail!(
                    "{}: a file; `wsol eval RUN_DIR` takes a run directory, `--checkpoint` a weights file",
                    run.display()
                );
            }
            let own = run.join("config.yaml");
            anyhow::ensure!(
                own.is_file() || a.common.config.is_some(),
                "{}: not a run directory (no config.yaml in it); give --checkpoint and --config",
                run.display()
            );
            let cfg = load_config(&a.common, Some(own.as_path()))?;
            let ckpt = run.join("checkpoints").join(format!("{}.safetensors", cfg.eval.checkpoint));
            (cfg, ckpt)
        }
        (None, None) => anyhow::bail!("give a run directory (`wsol eval RUN_DIR`) or --checkpoint FILE"),
    };
    let checkpoint = checkpoint.as_path();
    let split = a.split.clone().unwrap_or_else(|| cfg.eval.split.clone());
    // Under mpirun the ranks share the split; rank 0 writes what one process writes.
    let dist = crate::distributed::launch()?;
    let what = format!("{}checkpoint: {}\nsplit: {split}\n", cfg.to_yaml(), checkpoint.display());
    crate::distributed::check_same_config(dist.as_ref(), &what)?;
    let (save_cams, quiet) = (a.save_cams.as_deref(), a.common.quiet);
    let result = evaluate::evaluate_checkpoint_sharded(&cfg, checkpoint, &split, save_cams, quiet, dist.as_ref())
        .map_err(|e| super::stop_ranks(dist.as_ref(), e))?;
    if !dist.is_root() {
        return Ok(());
    }
    let out = a.out.clone().unwrap_or_else(|| run_dir_of(checkpoint).join(format!("eval-{split}")));
    result
        .write(
            &out,
            &[
                ("checkpoint", serde_json::json!(checkpoint.display().to_string())),
                (
                    "provenance",
                    crate::report::provenance::Provenance::detect(&cfg.device, cfg.eval_precision().as_str()).to_json(),
                ),
            ],
        )
        .with_context(|| format!("writing results to {}", out.display()))?;
    if cfg.log.tensorboard {
        // Beside metrics.json, so TensorBoard on the run folder lists this evaluation as a run.
        let mut tb = crate::report::tensorboard::TbWriter::new(&out.join("tb"));
        for (k, v) in result.to_json().as_object().expect("metrics are an object") {
            if let Some(x) = v.as_f64().filter(|_| k != "num_images") {
                tb.add_scalar(&format!("eval/{k}"), x as f32, 0);
            }
        }
        tb.flush();
    }
    println!("{}", metrics_table(&result.table_rows()));
    if let (Some(f), false) = (&result.faithfulness, a.common.quiet) {
        eprintln!(
            "faithfulness: {:.0} perturbed inputs per image, {:.1} ms per image",
            f.inputs_per_image,
            f.seconds_per_image * 1e3
        );
    }
    if !a.common.quiet {
        eprintln!("metrics written to {}", out.join("metrics.json").display());
    }
    Ok(())
}
