//! `wsol eval-cams` on hand-made maps whose scores are known exactly.

use std::path::Path;

use crate::common::*;
use wsol_eval::scoremaps::{flat_path, nested_path, write, ScoreMap};

fn square_map(size: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> ScoreMap {
    let mut data = vec![0.0f64; size * size];
    for y in y0..=y1 {
        for x in x0..=x1 {
            data[y * size + x] = 1.0;
        }
    }
    ScoreMap { width: size, height: size, data }
}

/// Two 40x40 images scored at 20x20: `a` has its map on the GT box, `b` beside it.
fn fixture(dir: &Path) {
    // In 20x20 coordinates: a -> (5,5,14,14); b -> (0,0,9,9).
    two_image_split(dir, "imgs/a.jpg,10,10,28,28\nimgs/b.jpg,0,0,19,19\n");
    write(&nested_path(&dir.join("cams"), "imgs/a.jpg"), &square_map(20, 5, 5, 14, 14)).unwrap();
    write(&flat_path(&dir.join("cams"), "imgs/b.jpg"), &square_map(20, 10, 10, 19, 19)).unwrap();
}

#[test]
fn scores_hand_made_maps_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fixture(dir);
    wsol_ok(
        &[
            "eval-cams",
            "--metadata",
            "meta/test",
            "--cams",
            "cams",
            "--predictions",
            "pred.txt",
            "--image-size",
            "20",
            "--out",
            "out",
            "--quiet",
        ],
        dir,
    );
    let m = read_json(&dir.join("out/metrics.json"));
    assert_eq!(m["num_images"], 2);
    for key in ["maxboxacc", "maxboxacc_v2", "gt_known_loc", "top1_cls", "top1_loc", "gt_known_loc_fixed"] {
        assert_eq!(m[key].as_f64(), Some(50.0), "{key}: {m}");
    }
    assert_eq!(m["top5_cls"].as_f64(), Some(100.0));
    assert_eq!(m["top5_loc"].as_f64(), Some(50.0));
    assert_eq!(m["best_threshold"].as_f64(), Some(0.0));
    for iou in ["30", "50", "70"] {
        assert_eq!(m["maxboxacc_by_iou"][iou].as_f64(), Some(50.0));
    }
}

#[test]
fn missing_and_bad_maps_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fixture(dir);
    std::fs::remove_file(flat_path(&dir.join("cams"), "imgs/b.jpg")).unwrap();
    let err = wsol_err(
        &["eval-cams", "--metadata", "meta/test", "--cams", "cams", "--image-size", "20", "--out", "out"],
        dir,
    );
    assert!(err.contains("1 of 2") && err.contains("imgs/b.jpg"), "{err}");
    write(&nested_path(&dir.join("cams"), "imgs/b.jpg"), &ScoreMap { width: 2, height: 1, data: vec![0.0, f64::NAN] })
        .unwrap();
    let err = wsol_err(
        &["eval-cams", "--metadata", "meta/test", "--cams", "cams", "--image-size", "20", "--out", "out"],
        dir,
    );
    assert!(err.contains("b.jpg.npy") && err.contains("NaN"), "{err}");
    let err = wsol_err(&["eval-cams", "--metadata", "meta/test", "--cams", "cams", "--iou", "30,x"], dir);
    assert!(err.contains("--iou"), "{err}");
}

/// `--centre-baseline`: the same centred Gaussian for every image. A GT box centred on its
/// image is found at some threshold (a centred square box around a centred disc), one in
/// a corner never: MaxBoxAcc 50 at IoU 0.5, 50 at 0.7 too (the centred square is matched
/// tightly), so MaxBoxAccV2 is 50.
#[test]
fn centre_baseline_finds_centred_boxes_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // At 40x40: a -> centred (10..29), b -> top-left corner (0..12).
    two_image_split(dir, "imgs/a.jpg,10,10,30,30\nimgs/b.jpg,0,0,12,12\n");
    wsol_ok(
        &["eval-cams", "--metadata", "meta/test", "--centre-baseline", "--image-size", "40", "--out", "out", "--quiet"],
        dir,
    );
    let m = read_json(&dir.join("out/metrics.json"));
    assert_eq!(m["cam"], "centre-gaussian");
    assert_eq!(m["maxboxacc"].as_f64(), Some(50.0), "{m}");
    assert_eq!(m["maxboxacc_v2"].as_f64(), Some(50.0), "{m}");
    let err = wsol_err(&["eval-cams", "--metadata", "meta/test", "--image-size", "40"], dir);
    assert!(err.contains("--cams"), "{err}");
}
