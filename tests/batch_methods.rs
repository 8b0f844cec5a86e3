//! HaS and CutMix end to end: `model.head: has|cutmix` trains a CAM model on altered
//! batches, deterministically, and evaluates like CAM.

mod common;

use common::*;

fn epoch_losses(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.starts_with("epoch")).map(|l| l.split("loss").nth(1).unwrap()[..8].to_string()).collect()
}

#[test]
fn has_and_cutmix_train_and_evaluate_deterministically() {
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
    for head in ["has", "cutmix"] {
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
