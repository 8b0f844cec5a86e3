//! HaS, CutMix, ADL and SPG end to end: `model.head: has|cutmix|adl|spg` trains,
//! deterministically, and evaluates (HaS and CutMix alter batches of a CAM model; ADL adds
//! dropout layers inside it; SPG has its own head).

use crate::common::*;

fn epoch_losses(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.starts_with("epoch")).map(|l| l.split("loss").nth(1).unwrap()[..8].to_string()).collect()
}

#[test]
fn has_cutmix_adl_spg_train_and_evaluate_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 96, 16, 24);
    let cfg = write_config(dir, "bm", "");
    let c = cfg.to_str().unwrap();
    let run = |head: &str, out: &str, extra: &[&str]| {
        let head = format!("model.head={head}");
        let mut args = vec!["train", "--config", c, "--set", "train.epochs=2", "--set", &head];
        args.extend(extra);
        args.extend(["--out", out, "--quiet"]);
        wsol_ok(&args, dir);
        (
            std::fs::read_to_string(dir.join(out).join("train.log")).unwrap(),
            read_json(&dir.join(out).join("metrics.json")),
        )
    };
    let (cam_log, _) = run("cam", "cam", &[]);
    for head in ["has", "cutmix", "adl", "spg"] {
        let (log, metrics) = run(head, head, &[]);
        assert!(metrics["maxboxacc_v2"].as_f64().is_some(), "{head}: {metrics}");
        assert_ne!(epoch_losses(&log), epoch_losses(&cam_log), "{head} must change what is trained");
        let (again, metrics_again) = run(head, &format!("{head}2"), &[]);
        assert_eq!(epoch_losses(&log), epoch_losses(&again), "{head}: same seed, same run");
        assert_eq!(metrics["maxboxacc_v2"], metrics_again["maxboxacc_v2"]);
    }
    // Off switches give plain CAM training.
    let (off, _) = run("has", "has_off", &["--set", "model.has.drop_rate=0"]);
    assert_eq!(epoch_losses(&off), epoch_losses(&cam_log));
}

/// `wsol sweep`: trials sampled from the search file, each a run scored on val; the best
/// is the highest val score; the same seed samples the same trials.
#[test]
fn sweep_runs_trials_and_picks_the_best_on_val() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 64, 16, 16);
    let cfg = write_config(dir, "sw", "");
    std::fs::write(
        dir.join("search.yaml"),
        "train.optimizer.lr: {log_uniform: [1.0e-3, 0.3]}\nmodel.head: {choice: [cam, has]}\n",
    )
    .unwrap();
    let args = |out: &'static str| {
        vec![
            "sweep",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "train.epochs=1",
            "--trials",
            "3",
            "--search",
            "search.yaml",
            "--out",
            out,
            "--quiet",
        ]
    };
    let stdout = wsol_ok(&args("s1"), dir);
    let s = read_json(&dir.join("s1/sweep.json"));
    let trials = s["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3);
    let best = s["best_trial"].as_u64().unwrap() as usize;
    // The results go to stdout even with --quiet, each trial named as its folder.
    let name = format!("trial-{best:03}");
    assert!(trials[best]["run_dir"].as_str().unwrap().ends_with(&name), "{s}");
    assert!(stdout.contains(&format!("best: {name}")), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("no row {name}:\n{stdout}"));
    assert!(row.ends_with("<- best"), "{stdout}");
    let max = trials.iter().map(|t| t["val_score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(trials[best]["val_score"].as_f64().unwrap(), max);
    for t in trials {
        assert!(dir.join(t["run_dir"].as_str().unwrap()).join("metrics.json").exists());
    }
    wsol_ok(&args("s2"), dir);
    let again = read_json(&dir.join("s2/sweep.json"));
    let overrides = |v: &serde_json::Value| {
        v["trials"].as_array().unwrap().iter().map(|t| t["overrides"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(overrides(&s), overrides(&again));
    let err = wsol_err(&["sweep", "--config", cfg.to_str().unwrap(), "--trials", "1", "--search", "nope.yaml"], dir);
    assert!(err.contains("nope.yaml"), "{err}");

    // The best trial is evaluated once on test; trials only on val.
    let test = read_json(&dir.join("s1/best-test/metrics.json"));
    assert_eq!(test["split"], "test");
    let mut without_ckpt = test.clone();
    without_ckpt.as_object_mut().unwrap().remove("checkpoint");
    assert_eq!(s["best_test"], without_ckpt);
    assert_eq!(read_json(&dir.join(trials[0]["run_dir"].as_str().unwrap()).join("metrics.json"))["split"], "val");
    assert_eq!(std::fs::read_to_string(dir.join("s1/sweep.csv")).unwrap().lines().count(), 4);

    // Resuming: a longer sweep in the same folder keeps the finished trials.
    let kept = std::fs::metadata(dir.join("s1/trial-000/metrics.json")).unwrap().modified().unwrap();
    let mut more = args("s1");
    more[6] = "4";
    let stdout = wsol_ok(&more, dir);
    assert!(stdout.contains("trial-003"), "{stdout}");
    assert_eq!(std::fs::metadata(dir.join("s1/trial-000/metrics.json")).unwrap().modified().unwrap(), kept);
    assert_eq!(read_json(&dir.join("s1/sweep.json"))["trials"].as_array().unwrap().len(), 4);
    // Another search in the same folder is refused.
    std::fs::write(dir.join("other.yaml"), "train.optimizer.lr: {log_uniform: [1.0e-2, 0.5]}\n").unwrap();
    let mut other = args("s1");
    other[8] = "other.yaml";
    let err = wsol_err(&other, dir);
    assert!(err.contains("different sweep"), "{err}");
}
