//! ACoL end to end: `model.head: acol` trains, its fused map is scored, `wsol eval`
//! reproduces the numbers, and its settings are validated by key.

use crate::common::*;

#[test]
fn acol_trains_evaluates_and_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 96, 16, 24);
    let cfg = write_config(dir, "acol", "");
    let c = cfg.to_str().unwrap();
    let sets = ["--set", "model.head=acol", "--set", "model.acol.width=16", "--set", "model.acol.erase_threshold=0.7"];
    let mut args = vec!["train", "--config", c, "--set", "train.epochs=2", "--out", "run", "--quiet"];
    args.extend(sets);
    wsol_ok(&args, dir);
    let trained = read_json(&dir.join("run/metrics.json"));
    for key in ["top1_cls", "gt_known_loc", "maxboxacc_v2"] {
        let v = trained[key].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&v), "{key} = {v}");
    }
    let resolved = std::fs::read_to_string(dir.join("run/config.yaml")).unwrap();
    assert!(resolved.contains("erase_threshold: 0.7"), "{resolved}");

    let mut args = vec!["eval", "--config", c, "--checkpoint", "run/checkpoints/last.safetensors", "--out", "ev"];
    args.extend(sets);
    args.push("--quiet");
    wsol_ok(&args, dir);
    let mut again = read_json(&dir.join("ev/metrics.json"));
    let mut trained = trained;
    for m in [&mut again, &mut trained] {
        m.as_object_mut().unwrap().remove("checkpoint");
    }
    assert_eq!(again, trained, "wsol eval differs from the end of training");

    let err =
        wsol_err(&["train", "--config", c, "--set", "model.head=acol", "--set", "model.acol.erase_threshold=1.5"], dir);
    assert!(err.contains("model.acol.erase_threshold"), "{err}");
    let err = wsol_err(&["train", "--config", c, "--set", "model.acol.erase_thresh=0.5"], dir);
    assert!(err.contains("erase_thresh"), "{err}");
}

/// Unset, the branches follow the backbone (64 channels on `tiny` at width 16); set far
/// above it, training says so in one warning line with the numbers.
#[test]
fn branch_width_follows_the_backbone_and_a_heavy_head_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 32, 0, 8);
    let cfg = write_config(dir, "acolw", "");
    let c = cfg.to_str().unwrap();
    let base = ["train", "--config", c, "--set", "model.method=acol", "--set", "train.epochs=1", "--quiet"];
    let mut args = base.to_vec();
    args.extend(["--out", "auto"]);
    wsol_ok(&args, dir);
    let weights =
        candle_core::safetensors::load(dir.join("auto/checkpoints/last.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert_eq!(weights["classifier_A.0.weight"].dims(), [64, 64, 3, 3]);
    let log = std::fs::read_to_string(dir.join("auto/train.log")).unwrap();
    assert!(!log.contains("warning: ACoL"), "{log}");

    let mut args = base.to_vec();
    args.extend(["--set", "model.acol.width=512", "--out", "wide"]);
    wsol_ok(&args, dir);
    let log = std::fs::read_to_string(dir.join("wide/train.log")).unwrap();
    let line = log.lines().find(|l| l.starts_with("warning: ACoL")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("512 wide on 64 channels") && line.contains("x the backbone's"), "{line}");
}
