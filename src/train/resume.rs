//! `--resume`: which checkpoint continues, and whether the config asked for is the run's.
//!
//! A resumed run continues the run as it was: its model, data, optimizer and seed come from
//! its own `config.yaml`. A `--config` or `--set` that changes any of them is refused with
//! the keys that differ (loading the weights would fail on a shape, or silently train
//! another recipe). A few keys may change, each said in one line: the epoch count (the
//! schedule is recomputed over it), the evaluation protocol, the device; logging and the
//! number of decoding threads change nothing of the numbers and pass silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{checkpoint, schedule};
use crate::config::Config;

/// Finds `checkpoints/last.json` from a run directory or any file of a checkpoint.
pub fn resolve_resume(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let (ckpt_dir, tag) = if path.is_dir() {
        let dir = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_path_buf() };
        (dir, "last".to_string())
    } else if path.exists() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tag = name.split('.').next().unwrap_or("last").to_string();
        (path.parent().unwrap_or(Path::new(".")).to_path_buf(), tag)
    } else {
        bail!("--resume {}: no such run directory or checkpoint", path.display());
    };
    let state = ckpt_dir.join(format!("{tag}.json"));
    if !state.exists() {
        bail!("--resume {}: no complete checkpoint found (expected {})", path.display(), state.display());
    }
    Ok((checkpoint::run_dir_of(&ckpt_dir).to_path_buf(), state))
}

/// Keys (or key prefixes, ending in `.`) that change nothing a resumed run computes.
const SILENT: &[&str] = &["name", "log.", "data.workers"];
/// Keys a resumed run may change; each change is said.
/// The number formats may change (a run started on a GPU in bf16 goes on in fp32 elsewhere):
/// the weights and optimizer state are fp32 in every precision.
const NOTED: &[&str] =
    &["train.epochs", "eval.", "device", "tf32", "cudnn_benchmark", "train.precision", "train.loss_scale."];

fn matches(key: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| if p.ends_with('.') { key.starts_with(p) } else { key == *p })
}

/// Compares `cfg` (from `--config`/`--set`) with the run's own `config.yaml`: an error
/// listing every key that would change the run, else one line per allowed change.
pub fn check_config(run_config: &Path, cfg: &Config) -> Result<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(run_config) else {
        // A run directory from before config.yaml was written: nothing to compare with.
        return Ok(Vec::new());
    };
    let mut run =
        Config::from_yaml(&text).with_context(|| format!("--resume: cannot read {}", run_config.display()))?;
    // A run written before `train.precision` existed says `tf32: true` instead; `cfg` was
    // resolved the same way by Config::load. A contradiction left in it shows as a change.
    let _ = run.resolve_precision(crate::config::Given::File, crate::config::Given::Default);
    let (was, now) = (leaves(&run), leaves(cfg));
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    let none = String::from("(unset)");
    let mut refused = Vec::new();
    let mut notes = Vec::new();
    for key in keys {
        let (a, b) = (was.get(key).unwrap_or(&none), now.get(key).unwrap_or(&none));
        if a == b || matches(key, SILENT) {
            continue;
        }
        let change = format!("{key}: {a} (run) -> {b} (now)");
        if key == "train.epochs" {
            notes.push(epochs_note(&run, cfg));
        } else if matches(key, NOTED) {
            notes.push(format!("note: resuming with {change}"));
        } else {
            refused.push(change);
        }
    }
    if !refused.is_empty() {
        bail!(
            "--resume: the config given differs from the run's own {} in {} key(s) that change the run: {}. \
             Resuming continues the run as it was: drop --config (and these --set) to use its config.yaml, \
             or train these settings as a new run (without --resume); only train.epochs, eval.*, device, \
             train.precision, train.loss_scale.*, log.* and data.workers may change on resume",
            run_config.display(),
            refused.len(),
            refused.join("; ")
        );
    }
    Ok(notes)
}

/// What a new epoch count does to the run: where it ends, and the first epoch whose
/// learning rate differs from the schedule the run started with.
fn epochs_note(run: &Config, cfg: &Config) -> String {
    let (old, new) = (run.train.epochs, cfg.train.epochs);
    let lr = |c: &Config, e: usize| schedule::lr_at(&c.train.schedule, c.train.optimizer.lr, e, c.train.epochs);
    let first_diff = (0..old.min(new)).find(|&e| lr(run, e) != lr(cfg, e));
    let schedule = match first_diff {
        Some(e) => format!(
            "the {} schedule is recomputed over {new} epochs: from epoch {} on the learning rate differs \
             from the run's (epoch {}: {:.6} instead of {:.6})",
            cfg.train.schedule.name,
            e + 1,
            e + 1,
            lr(cfg, e),
            lr(run, e)
        ),
        None => format!("the {} schedule of the epochs both share is unchanged", cfg.train.schedule.name),
    };
    format!("note: resuming with train.epochs {old} -> {new}: the run now ends after epoch {new}; {schedule}")
}

/// Every scalar or list of the config as `dotted.key -> YAML text`.
fn leaves(cfg: &Config) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_yaml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                    let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            other => {
                let text = serde_yaml::to_string(other).unwrap_or_default();
                out.insert(prefix.to_string(), text.trim().replace('\n', " "));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", &serde_yaml::to_value(cfg).expect("config serializes"), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, cfg: &Config) -> PathBuf {
        let p = dir.join("config.yaml");
        std::fs::write(&p, cfg.to_yaml()).unwrap();
        p
    }

    #[test]
    fn same_config_and_silent_keys_pass_quietly() {
        let tmp = tempfile::tempdir().unwrap();
        let run = Config::default();
        let p = write(tmp.path(), &run);
        assert!(check_config(&p, &run).unwrap().is_empty());
        let mut cfg = run.clone();
        cfg.apply_overrides(&["data.workers=7".into(), "log.every_steps=3".into()]).unwrap();
        assert!(check_config(&p, &cfg).unwrap().is_empty());
    }

    #[test]
    fn model_and_recipe_changes_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let run = Config::default();
        let p = write(tmp.path(), &run);
        let mut cfg = run.clone();
        cfg.apply_overrides(&["model.backbone=resnet18".into(), "train.optimizer.lr=0.5".into()]).unwrap();
        let e = format!("{:#}", check_config(&p, &cfg).unwrap_err());
        assert!(e.contains("in 2 key(s)"), "{e}");
        assert!(e.contains("model.backbone: tiny (run) -> resnet18 (now)"), "{e}");
        assert!(e.contains("train.optimizer.lr:"), "{e}");
    }

    #[test]
    fn more_epochs_say_where_the_cosine_schedule_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut run = Config::default();
        run.apply_overrides(&["train.epochs=4".into(), "train.schedule.name=cosine".into()]).unwrap();
        run.train.schedule.warmup_epochs = 0;
        let p = write(tmp.path(), &run);
        let mut cfg = run.clone();
        cfg.train.epochs = 8;
        let notes = check_config(&p, &cfg).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        // Cosine over 4 vs 8 epochs: equal at epoch 1 (lr at t = 0), different from epoch 2.
        assert!(notes[0].contains("train.epochs 4 -> 8") && notes[0].contains("from epoch 2 on"), "{}", notes[0]);
        let mut constant = run.clone();
        constant.train.schedule.name = crate::config::ScheduleName::Constant;
        let p = write(tmp.path(), &constant);
        let mut longer = constant.clone();
        longer.train.epochs = 8;
        assert!(check_config(&p, &longer).unwrap()[0].contains("unchanged"));
    }
}
