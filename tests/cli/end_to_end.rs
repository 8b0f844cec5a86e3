//! The user's first path: synth -> train -> metrics.json -> eval reproduces it.

use crate::common::*;
use wsol_eval::localize::{iou, rescale_box, BBox};

/// Best GT-known accuracy of a box centred in the image, over box sizes: what a
/// localizer that looks at nothing would score.
fn centre_box_baseline(dir: &std::path::Path, size: f64) -> f64 {
    let meta = wsol::data::read_split(&dir.join("data/synth/metadata"), "test", 5).unwrap();
    let mut best: f64 = 0.0;
    for frac in (2..=19).map(|k| k as f64 * 0.05) {
        let half = size * frac / 2.0;
        let c = size / 2.0;
        let centre =
            BBox { x0: (c - half) as i32, y0: (c - half) as i32, x1: (c + half) as i32 - 1, y1: (c + half) as i32 - 1 };
        let hits = meta
            .samples
            .iter()
            .filter(|s| {
                s.boxes
                    .iter()
                    .any(|b| iou(&centre, &rescale_box(*b, (s.size.0 as f64, s.size.1 as f64), (size, size))) >= 0.5)
            })
            .count();
        best = best.max(hits as f64 * 100.0 / meta.samples.len() as f64);
    }
    best
}

/// The README's main command, run as a user would (in a fresh directory): it must reach
/// the demo's promised numbers, beat a centre box by far, and `wsol eval` must reproduce it.
#[test]
fn demo_meets_targets_and_eval_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo.yaml");
    let out = wsol(&["train", "--config", cfg, "--out", "runs/demo", "--quiet"], dir);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // Results on stdout (even with --quiet), nothing else there; --quiet silences the rest.
    assert!(stdout.starts_with("metric") && stdout.contains("gt_known_loc"), "stdout:\n{stdout}");
    assert!(!stdout.contains("epoch") && stderr.is_empty(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let run = dir.join("runs/demo");
    let m = read_json(&run.join("metrics.json"));
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("epoch 12/12  lr"), "the per-epoch lines go to train.log: {log}");
    for key in [
        "top1_cls",
        "top5_cls",
        "top1_loc",
        "top5_loc",
        "gt_known_loc",
        "maxboxacc",
        "maxboxacc_v2",
        "best_threshold",
        "gt_known_loc_fixed",
    ] {
        assert!(m[key].is_number(), "metrics.json lacks {key}: {m}");
    }
    for iou in ["30", "50", "70"] {
        for key in
            ["maxboxacc_v1_by_iou", "maxboxacc_v2_by_iou", "best_threshold_v1_by_iou", "best_threshold_v2_by_iou"]
        {
            assert!(m[key][iou].is_number(), "{key}[{iou}]: {m}");
        }
    }
    // The names of DESIGN.md and of earlier releases stay, repeating the v1/v2 keys.
    assert_eq!(m["maxboxacc_by_iou"], m["maxboxacc_v2_by_iou"]);
    assert_eq!(m["best_threshold_by_iou"], m["best_threshold_v2_by_iou"]);
    assert_eq!(m["best_threshold"], m["best_threshold_v1"]);
    assert_eq!(m["maxboxacc_v1_by_iou"]["50"], m["maxboxacc"]);
    assert_eq!(m["gt_known_loc"], m["maxboxacc"]);
    let gt_known = m["gt_known_loc"].as_f64().unwrap();
    let baseline = centre_box_baseline(dir, 48.0);
    eprintln!("demo: {m}\ncentre-box baseline: {baseline}");
    assert!(m["top1_cls"].as_f64().unwrap() >= 90.0, "demo top-1 cls below 90: {m}");
    assert!(gt_known >= 80.0, "demo GT-known loc below 80: {m}");
    assert!(gt_known >= baseline + 30.0, "GT-known loc {gt_known} not well above the centre-box baseline {baseline}");
    assert!(run.join("config.yaml").is_file() && run.join("curve.csv").is_file());
    assert!(run.join("checkpoints/last.safetensors").is_file() && run.join("checkpoints/best.safetensors").is_file());
    let tb: Vec<_> = std::fs::read_dir(run.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tb.iter().any(|n| n.starts_with("events.out.tfevents")), "{tb:?}");
    // The synthetic data names its classes, so the overlays' tags carry the GT class name.
    let events: Vec<u8> = tb.iter().flat_map(|n| std::fs::read(run.join("tb").join(n)).unwrap()).collect();
    let tagged = |tag: String| events.windows(tag.len()).any(|w| w == tag.as_bytes());
    assert!(wsol::data::synth::SHAPES[..5].iter().any(|s| tagged(format!("val_cam/0_{s}"))), "no val_cam/0_<name> tag");

    // `wsol eval` on the same checkpoint gives the same numbers.
    wsol_ok(
        &[
            "eval",
            "--config",
            cfg,
            "--checkpoint",
            "runs/demo/checkpoints/last.safetensors",
            "--out",
            "eval",
            "--quiet",
        ],
        dir,
    );
    // ... and so does `wsol eval RUN_DIR` (the run's config.yaml and its `last` checkpoint).
    wsol_ok(&["eval", "runs/demo", "--quiet"], dir);
    for out in ["eval", "runs/demo/eval-test"] {
        let e = read_json(&dir.join(out).join("metrics.json"));
        for key in
            ["top1_cls", "top5_cls", "gt_known_loc", "maxboxacc_v2", "top1_loc", "best_threshold", "maxboxacc_by_iou"]
        {
            assert_eq!(m[key], e[key], "{key} differs between train and eval ({out})");
        }
    }
    let err = wsol_err(&["eval", "runs/demo/checkpoints/last.safetensors"], dir);
    assert!(err.contains("--checkpoint"), "{err}");
}

#[test]
fn same_seed_same_metrics_and_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 128, 32, 48);
    let cfg = write_config(dir, "det", "");
    let c = cfg.to_str().unwrap();
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=2", "--out", "a", "--quiet"], dir);
    wsol_ok(
        &["train", "--config", c, "--set", "train.epochs=2", "--set", "data.workers=1", "--out", "b", "--quiet"],
        dir,
    );
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    let a = strip(read_json(&dir.join("a/metrics.json")));
    assert_eq!(a, strip(read_json(&dir.join("b/metrics.json"))), "same seed gave different metrics");

    // One epoch, then resume to two: same result as the uninterrupted run.
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=1", "--out", "r", "--quiet"], dir);
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=2", "--resume", "r", "--quiet"], dir);
    assert_eq!(a, strip(read_json(&dir.join("r/metrics.json"))), "resumed run differs from uninterrupted run");

    // Another recipe is refused by key before anything loads, and the run is left as it was.
    let before = std::fs::read_to_string(dir.join("r/config.yaml")).unwrap();
    let other = write_config(dir, "other", "");
    std::fs::write(&other, std::fs::read_to_string(&other).unwrap().replace("width: 16", "width: 8")).unwrap();
    let err = wsol_err(&["train", "--config", other.to_str().unwrap(), "--resume", "r", "--quiet"], dir);
    assert!(err.contains("model.width: 16 (run) -> 8 (now)") && err.contains("in 1 key(s)"), "{err}");
    assert!(!err.contains("use-previous-checkpoint") && !err.contains("shape"), "{err}");
    assert_eq!(before, std::fs::read_to_string(dir.join("r/config.yaml")).unwrap());
    // `--resume RUN` alone reads the run's config; a new epoch count is said, with its schedule.
    let out = wsol(&["train", "--resume", "r", "--set", "train.epochs=3"], dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("train.epochs 2 -> 3") && stderr.contains("the run now ends after epoch 3"), "{stderr}");
}
