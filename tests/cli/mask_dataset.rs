//! A mask dataset (OpenImages30k's format) end to end: `wsol data synth --masks` writes
//! object and ignore masks for val and test, `wsol train` learns from the image labels and
//! selects by PxAP on val, and `wsol eval-cams` on the maps `wsol eval` saved reproduces
//! its PxAP.

use crate::common::*;

#[test]
fn mask_split_trains_scores_pxap_and_reproduces_with_eval_cams() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_with(dir, 96, 16, 24, &["--masks"]);
    let loc = std::fs::read_to_string(dir.join("synth/metadata/test/localization.txt")).unwrap();
    assert!(loc.starts_with("test/00000.png,test/00000_mask.png,test/00000_ignore.png\n"), "{loc}");
    assert!(!dir.join("synth/metadata/train/localization.txt").exists());

    let cfg = write_config(dir, "oi", "");
    let c = cfg.to_str().unwrap();
    let sets = ["--set", "train.epochs=2", "--set", "train.select_by=pxap"];
    wsol_ok(&[&["train", "--config", c, "--out", "run", "--quiet"][..], &sets].concat(), dir);
    let m = read_json(&dir.join("run/metrics.json"));
    let pxap = m["pxap"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pxap), "{m}");
    assert!(m.get("maxboxacc").is_none(), "a mask split has no box metrics: {m}");
    assert!(m["top1_cls"].as_f64().is_some());
    let best = read_json(&dir.join("run/checkpoints/best.json"));
    assert!(best["best_score"].as_f64().is_some(), "best checkpoint chosen by val PxAP: {best}");

    wsol_ok(
        &[
            "eval",
            "--config",
            c,
            "--checkpoint",
            "run/checkpoints/last.safetensors",
            "--save-cams",
            "cams",
            "--out",
            "ev",
            "--quiet",
        ],
        dir,
    );
    let ev = read_json(&dir.join("ev/metrics.json"));
    assert_eq!(ev["pxap"], m["pxap"]);
    wsol_ok(
        &[
            "eval-cams",
            "--metadata",
            "synth/metadata/test",
            "--cams",
            "cams",
            "--masks",
            "synth",
            "--image-size",
            "48",
            "--cam-curve-interval",
            "0.01",
            "--out",
            "ec",
            "--quiet",
        ],
        dir,
    );
    let again = read_json(&dir.join("ec/metrics.json"))["pxap"].as_f64().unwrap();
    assert!((again - pxap).abs() < 1e-9, "eval-cams {again} vs eval {pxap}");
}

/// `wsol data check` lists every problem of a split (first few by name) and exits
/// non-zero: a missing image, an unreadable one, a missing mask.
#[test]
fn data_check_reports_missing_and_unreadable_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_with(dir, 8, 8, 8, &["--masks"]);
    let cfg = write_config(dir, "oi", "");
    let c = cfg.to_str().unwrap();
    let report = wsol_ok(&["data", "check", "--config", c], dir);
    assert!(report.contains("8 images, 0 boxes, 8 masks") && report.contains("0 problems"), "{report}");
    assert!(report.contains("4 names from synth/metadata/class_names.txt"), "{report}");
    std::fs::remove_file(dir.join("synth/test/00003_mask.png")).unwrap();
    std::fs::remove_file(dir.join("synth/val/00002.png")).unwrap();
    std::fs::write(dir.join("synth/val/00004.png"), "not a png").unwrap();
    let err = wsol_err(&["data", "check", "--config", c], dir);
    for want in [
        "missing image synth/val/00002.png",
        "unreadable image synth/val/00004.png",
        "missing mask synth/test/00003_mask.png",
        "localization.txt:4",
        "3 problem(s)",
    ] {
        assert!(err.contains(want), "`{want}` not in: {err}");
    }
}
