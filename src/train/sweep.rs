//! `wsol sweep`: the hyperparameter protocol of Choe et al. (CVPR 2020) as a command.
//! Every trial samples the declared ranges (a learning rate log-uniformly, a method's
//! own knobs uniformly or from a list), trains a full run in its own directory, and is
//! scored on the validation split (`train.select_by` of its best epoch — their
//! train-fullsup split; trials never see the test split). Then the best trial's
//! checkpoint (`eval.checkpoint`) is evaluated once on test. `sweep.json` and `sweep.csv`
//! list every trial; the console gets the table.
//!
//! Interrupted sweeps resume: rerun the same command with the same `--out`. Finished
//! trials are kept, an unfinished one continues from its last checkpoint.
//!
//! Search file (YAML), one entry per config key:
//!
//! ```yaml
//! train.optimizer.lr: {log_uniform: [1.0e-5, 1.0]}
//! model.acol.erase_threshold: {uniform: [0.5, 0.9]}
//! train.optimizer.weight_decay: {choice: [1.0e-4, 5.0e-4]}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::methods::Knob;
use serde_json::json;

use crate::config::Config;
use crate::report::hparams as hp;
use crate::train::{self, TrainOptions};

#[derive(Debug, Clone)]
pub enum Range {
    LogUniform([f64; 2]),
    Uniform([f64; 2]),
    Choice(Vec<serde_yaml::Value>),
}

impl Range {
    fn sample(&self, rng: &mut ChaCha8Rng) -> serde_yaml::Value {
        match self {
            Range::LogUniform([lo, hi]) => {
                serde_yaml::Value::from((lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp())
            }
            Range::Uniform([lo, hi]) => serde_yaml::Value::from(lo + rng.random::<f64>() * (hi - lo)),
            Range::Choice(values) => values[rng.random_range(0..values.len())].clone(),
        }
    }

    fn check(&self, key: &str) -> Result<()> {
        match self {
            Range::LogUniform([lo, hi]) if !(*lo > 0.0 && lo < hi) => bail!("{key}: log_uniform needs 0 < low < high"),
            Range::Uniform([lo, hi]) if lo > hi => bail!("{key}: uniform needs low <= high"),
            Range::Choice(v) if v.is_empty() => bail!("{key}: choice needs at least one value"),
            _ => Ok(()),
        }
    }
}

pub type SearchSpace = BTreeMap<String, Range>;

/// One entry of a search file as written: exactly one of the three keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeSpec {
    log_uniform: Option<[f64; 2]>,
    uniform: Option<[f64; 2]>,
    choice: Option<Vec<serde_yaml::Value>>,
}

impl RangeSpec {
    fn into_range(self, key: &str) -> Result<Range> {
        match (self.log_uniform, self.uniform, self.choice) {
            (Some(r), None, None) => Ok(Range::LogUniform(r)),
            (None, Some(r), None) => Ok(Range::Uniform(r)),
            (None, None, Some(v)) => Ok(Range::Choice(v)),
            _ => bail!("{key}: give exactly one of log_uniform, uniform, choice"),
        }
    }
}

/// The ranges searched when no file is given: the learning rate as in Choe et al.
/// (log-uniform over [1e-5, 1]) and the configured method's own knob.
pub fn default_space(cfg: &Config) -> SearchSpace {
    let mut space = SearchSpace::new();
    space.insert("train.optimizer.lr".into(), Range::LogUniform([1e-5, 1.0]));
    for &(key, knob) in crate::methods::search_space(cfg.model.method) {
        let range = match knob {
            Knob::LogUniform(lo, hi) => Range::LogUniform([lo, hi]),
            Knob::Uniform(lo, hi) => Range::Uniform([lo, hi]),
        };
        space.insert(key.into(), range);
    }
    space
}

pub fn read_space(path: &Path) -> Result<SearchSpace> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read search file {}", path.display()))?;
    let specs: BTreeMap<String, RangeSpec> = serde_yaml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (expected `key: {{log_uniform|uniform: [low, high]}}` or `key: {{choice: [...]}}`)",
            path.display()
        )
    })?;
    let mut space = SearchSpace::new();
    for (key, spec) in specs {
        let name = format!("{}: {key}", path.display());
        let range = spec.into_range(&name)?;
        range.check(&name)?;
        space.insert(key, range);
    }
    Ok(space)
}

/// The `--set` overrides of trial `trial`.
pub fn sample_trial(space: &SearchSpace, seed: u64, trial: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x5EED_0000 + trial as u64));
    space
        .iter()
        .map(|(key, range)| {
            let v = serde_yaml::to_string(&range.sample(&mut rng)).expect("a YAML scalar");
            format!("{key}={}", v.trim())
        })
        .collect()
}

pub struct SweepOptions {
    pub trials: usize,
    pub out: PathBuf,
    pub quiet: bool,
}

/// One finished trial.
struct Trial {
    run_dir: PathBuf,
    overrides: Vec<String>,
    val: f64,
    best_epoch: Option<usize>,
}

/// A trial's name: its folder under the sweep directory, and how the console calls it.
pub fn trial_name(t: usize) -> String {
    format!("trial-{t:03}")
}

/// Runs (or resumes) the trials, evaluates the best on test; returns its index.
pub fn sweep(base: &Config, space: &SearchSpace, opts: &SweepOptions) -> Result<usize> {
    write_experiment(base, space, &opts.out);
    let mut trials: Vec<Trial> = Vec::new();
    for t in 0..opts.trials {
        let overrides = sample_trial(space, base.seed, t);
        let mut cfg = base.clone();
        let name = trial_name(t);
        cfg.apply_overrides(&overrides).with_context(|| name.clone())?;
        cfg.validate().with_context(|| format!("{name}: sampled {}", overrides.join(" ")))?;
        // Trials are scored on val only; test is for the chosen one.
        cfg.eval.split = cfg.data.val_split.clone();
        let run_dir = opts.out.join(&name);
        let record = run_dir.join("trial.json");
        let resume = match std::fs::read_to_string(&record) {
            Ok(text) => {
                let before: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("{}: not a trial record", record.display()))?;
                if before["overrides"] != json!(overrides) {
                    bail!(
                        "{} was sampled as {} but this sweep samples {}: a different sweep lives in {} (use another --out)",
                        run_dir.display(),
                        before["overrides"],
                        json!(overrides),
                        opts.out.display()
                    );
                }
                run_dir.join("checkpoints/last.json").exists()
            }
            Err(_) => {
                std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
                crate::report::write_json(&record, &json!({ "trial": t, "overrides": overrides }))?;
                false
            }
        };
        let done = run_dir.join("metrics.json").exists();
        if !opts.quiet {
            let what = if done {
                "done"
            } else if resume {
                "resuming"
            } else {
                "training"
            };
            eprintln!("{name} ({} of {}, {what}): {}", t + 1, opts.trials, overrides.join(" "));
        }
        if !done {
            let topts = TrainOptions {
                out: Some(run_dir.clone()),
                resume: resume.then(|| run_dir.clone()),
                use_previous_checkpoint: false,
                quiet: true,
                own_experiment: false,
            };
            train::train(&cfg, &topts)?;
        }
        let state = train::checkpoint::load_state(&run_dir.join("checkpoints/best.json"))?;
        let Some(val) = state.best_score else {
            bail!("{name}: no validation score (a sweep needs the `{}` split with annotations)", cfg.data.val_split);
        };
        if !opts.quiet {
            eprintln!("{name}: val {} = {val:.2}", cfg.train.select_by);
        }
        trials.push(Trial { run_dir, overrides, val, best_epoch: state.best_epoch });
        write_summary(base, &trials, None, opts)?;
    }
    let best = (0..trials.len()).fold(0, |b, t| if trials[t].val > trials[b].val { t } else { b });
    let mut cfg = base.clone();
    cfg.apply_overrides(&trials[best].overrides)?;
    let ckpt = trials[best].run_dir.join("checkpoints").join(format!("{}.safetensors", cfg.eval.checkpoint));
    let test = crate::evaluate::evaluate_checkpoint(&cfg, &ckpt, &cfg.eval.split, None, opts.quiet)?;
    test.write(&opts.out.join("best-test"), &[("checkpoint", json!(ckpt.display().to_string()))])?;
    write_summary(base, &trials, Some((best, test.to_json())), opts)?;
    let rows: Vec<Vec<String>> = trials
        .iter()
        .enumerate()
        .map(|(t, r)| {
            let mark = if t == best { "  <- best" } else { "" };
            let epoch = r.best_epoch.map_or_else(|| "n/a".to_string(), |e| e.to_string());
            vec![trial_name(t), format!("{:.2}", r.val), epoch, format!("{}{mark}", r.overrides.join(" "))]
        })
        .collect();
    let val_header = format!("val {}", cfg.train.select_by);
    println!("{}", crate::report::table::grid(&["trial", &val_header, "best epoch", "sampled"], &rows));
    println!(
        "best: {} ({}), on the {} split:\n{}",
        trial_name(best),
        trials[best].run_dir.display(),
        cfg.eval.split,
        crate::report::metrics_table(&test.table_rows())
    );
    Ok(best)
}

/// TensorBoard's HParams columns for the whole sweep, in `<out>/tb`: the searched keys
/// with their ranges, the trials' validation metrics (trials never score test). Each
/// trial's run (`trial-NNN/tb`) records its own values, so `tensorboard --logdir <out>`
/// lists the trials side by side. Written once: a resumed sweep keeps the first record.
fn write_experiment(base: &Config, space: &SearchSpace, out: &Path) {
    let dir = out.join("tb");
    if !base.log.tensorboard || crate::report::tensorboard::dir_has_early_tag(&dir, hp::EXPERIMENT_TAG) {
        return;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::SystemTime::UNIX_EPOCH);
    let experiment = sweep_experiment(base, space, now.map_or(0.0, |d| d.as_secs_f64()));
    let mut tb = crate::report::TbWriter::new(&dir);
    tb.add_plugin_record(hp::EXPERIMENT_TAG, hp::PLUGIN_NAME, experiment.plugin_content(), 0);
}

/// The sweep's experiment: a sampled range is an interval, a choice its discrete values
/// (all as text when the list mixes kinds).
pub fn sweep_experiment(base: &Config, space: &SearchSpace, time_created_secs: f64) -> hp::Experiment {
    let hparams = space
        .iter()
        .map(|(key, range)| {
            let name = crate::config::canonical_key(key).to_string();
            let (kind, domain) = match range {
                Range::LogUniform([lo, hi]) | Range::Uniform([lo, hi]) => {
                    (hp::HValue::Number(0.0), hp::Domain::Interval { min: *lo, max: *hi })
                }
                Range::Choice(values) => {
                    let mut values: Vec<hp::HValue> = values.iter().map(choice_value).collect();
                    let same_kind = values.windows(2).all(|w| w[0].data_type() == w[1].data_type());
                    if !same_kind {
                        values = values.iter().map(|v| hp::HValue::Text(v.to_string())).collect();
                    }
                    (values[0].clone(), hp::Domain::Discrete(values))
                }
            };
            hp::HParamInfo { name, kind: Some(kind), domain, differs: true }
        })
        .collect();
    hp::Experiment {
        description: format!("wsol sweep {}", base.name),
        time_created_secs,
        hparams,
        metrics: super::hparams::metric_infos(base, &["val"], &super::hparams::metric_keys(base)),
    }
}

/// A choice from a search file as the trial's config holds it.
fn choice_value(v: &serde_yaml::Value) -> hp::HValue {
    match v {
        serde_yaml::Value::Bool(b) => hp::HValue::Bool(*b),
        serde_yaml::Value::Number(n) => hp::HValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        serde_yaml::Value::String(s) => hp::HValue::Text(s.clone()),
        other => hp::HValue::Text(serde_yaml::to_string(other).unwrap_or_default().trim().to_string()),
    }
}

/// `sweep.json` (every trial; the best and its test metrics once known) and `sweep.csv`,
/// rewritten after every trial so an interrupted sweep keeps what it found.
fn write_summary(
    base: &Config,
    trials: &[Trial],
    best: Option<(usize, serde_json::Value)>,
    opts: &SweepOptions,
) -> Result<()> {
    let list: Vec<serde_json::Value> = trials
        .iter()
        .enumerate()
        .map(|(t, r)| {
            json!({ "trial": t, "run_dir": r.run_dir, "overrides": r.overrides, "val_score": r.val,
                    "best_epoch": r.best_epoch })
        })
        .collect();
    let leader = (0..trials.len()).fold(0, |b, t| if trials[t].val > trials[b].val { t } else { b });
    let mut summary = json!({
        "select_by": base.train.select_by, "trials": list, "best_trial": leader,
        "best_val_score": trials[leader].val,
    });
    if let Some((_, test)) = &best {
        summary["best_test"] = test.clone();
    }
    crate::report::write_json(&opts.out.join("sweep.json"), &summary)?;
    let mut csv = String::from("trial,val_score,run_dir,overrides\n");
    for (t, r) in trials.iter().enumerate() {
        csv += &format!("{t},{},{},\"{}\"\n", r.val, r.run_dir.display(), r.overrides.join(" "));
    }
    wsol_eval::fs::atomic_write(&opts.out.join("sweep.csv"), csv.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_are_reproducible_and_within_range() {
        let mut space = SearchSpace::new();
        space.insert("train.optimizer.lr".into(), Range::LogUniform([1e-4, 1e-1]));
        space.insert("model.has.grid_size".into(), Range::Choice(vec![16.into(), 32.into()]));
        let a = sample_trial(&space, 7, 3);
        assert_eq!(a, sample_trial(&space, 7, 3));
        assert_ne!(a, sample_trial(&space, 7, 4));
        for t in 0..50 {
            let o = sample_trial(&space, 0, t);
            let lr: f64 = o.iter().find_map(|s| s.strip_prefix("train.optimizer.lr=")).unwrap().parse().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            assert!(
                o.contains(&"model.has.grid_size=16".to_string()) || o.contains(&"model.has.grid_size=32".to_string())
            );
        }
    }

    #[test]
    fn the_experiment_lists_each_searched_key_with_its_range() {
        let mut space = SearchSpace::new();
        space.insert("train.optimizer.lr".into(), Range::LogUniform([1e-4, 1e-1]));
        space.insert("model.head".into(), Range::Choice(vec!["cam".into(), "has".into()]));
        space.insert("model.has.grid_size".into(), Range::Choice(vec![16.into(), "x".into()]));
        let e = sweep_experiment(&Config::default(), &space, 1.0);
        let names: Vec<&str> = e.hparams.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["model.has.grid_size", "model.method", "train.optimizer.lr"]);
        assert!(e.hparams.iter().all(|h| h.differs));
        let text = |s: &str| hp::HValue::Text(s.into());
        // Mixed kinds become text, as the dashboard could not filter them otherwise.
        assert_eq!(e.hparams[0].domain, hp::Domain::Discrete(vec![text("16"), text("x")]));
        assert_eq!(e.hparams[1].domain, hp::Domain::Discrete(vec![text("cam"), text("has")]));
        assert_eq!(e.hparams[2].domain, hp::Domain::Interval { min: 1e-4, max: 1e-1 });
        assert!(e.metrics.iter().all(|m| !m.tag.starts_with("test/")));
    }

    #[test]
    fn bad_ranges_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.yaml");
        std::fs::write(&p, "train.optimizer.lr: {log_uniform: [0, 1]}\n").unwrap();
        assert!(read_space(&p).unwrap_err().to_string().contains("train.optimizer.lr: log_uniform needs 0 < low"));
        std::fs::write(&p, "train.optimizer.lr: {normal: [0, 1]}\n").unwrap();
        assert!(read_space(&p).unwrap_err().to_string().contains("expected `key:"));
    }
}
