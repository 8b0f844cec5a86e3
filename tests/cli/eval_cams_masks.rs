//! `wsol eval-cams --masks` (PxAP) on a hand-made mask split whose score is known.

use std::path::Path;

use crate::common::*;
use wsol_eval::scoremaps::{nested_path, write, ScoreMap};

fn gray_png(path: &Path, w: u32, h: u32, on: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([on(x, y)])).save(path).unwrap();
}

/// Scored at 8x8. Image `a`: map 1 on the left half, 0 on the right; two 4x4 instance
/// masks (top-left quadrant at 255, bottom-left at 128) OR to the left half; the ignore
/// box covers the top half, so only the bottom-right quadrant is background.
/// Image `b`: constant map (normalized to 0), top half foreground at gray level 1, and
/// an empty ignore field. Totals: fg 32 px at 1.0 and 32 at 0.0; bg 48 px at 0.0.
/// From the top bin: scores >= 1 give precision 1, recall 1/2; scores >= 0 give precision
/// 64/112, recall 1. AP = 1 * 1/2 + 4/7 * 1/2 = 11/14.
fn fixture(dir: &Path) {
    two_image_split(dir, "imgs/a.jpg,a/1.png,a/ignore.png\nimgs/b.jpg,b/1.png,\nimgs/a.jpg,a/2.png,\n");
    let m = dir.join("masks");
    gray_png(&m.join("a/1.png"), 4, 4, |x, y| if x < 2 && y < 2 { 255 } else { 0 });
    gray_png(&m.join("a/2.png"), 4, 4, |x, y| if x < 2 && y >= 2 { 128 } else { 0 });
    gray_png(&m.join("a/ignore.png"), 4, 4, |_, y| if y < 2 { 255 } else { 0 });
    gray_png(&m.join("b/1.png"), 8, 8, |_, y| if y < 4 { 1 } else { 0 });
    let cams = dir.join("cams");
    let left: Vec<f64> = (0..64).map(|i| if i % 8 < 4 { 1.0 } else { 0.0 }).collect();
    write(&nested_path(&cams, "imgs/a.jpg"), &ScoreMap { width: 8, height: 8, data: left }).unwrap();
    write(&nested_path(&cams, "imgs/b.jpg"), &ScoreMap { width: 8, height: 8, data: vec![0.3; 64] }).unwrap();
}

#[test]
fn pxap_of_hand_made_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fixture(dir);
    let base =
        ["eval-cams", "--metadata", "meta/test", "--cams", "cams", "--masks", "masks", "--image-size", "8", "--quiet"];
    let table = wsol_ok(&[&base[..], &["--predictions", "pred.txt", "--out", "out"]].concat(), dir);
    let m = read_json(&dir.join("out/metrics.json"));
    let pxap = m["pxap"].as_f64().unwrap();
    assert!((pxap - 1100.0 / 14.0).abs() < 1e-9, "{m}");
    assert_eq!(
        (m["num_images"].as_u64(), m["top1_cls"].as_f64(), m["top5_cls"].as_f64()),
        (Some(2), Some(50.0), Some(100.0))
    );
    assert!(m.get("maxboxacc").is_none() && !dir.join("out/curve.csv").exists(), "{m}");
    assert!(table.contains("pxap") && table.contains("78.57") && !table.contains("unavailable"), "{table}");
    // The sweep resolution does not matter for maps with only the values 0 and 1.
    wsol_ok(&[&base[..], &["--cam-curve-interval", "0.001", "--out", "fine"]].concat(), dir);
    assert_eq!(read_json(&dir.join("fine/metrics.json"))["pxap"].as_f64(), Some(pxap));
}

#[test]
fn mask_problems_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fixture(dir);
    let args = [
        "eval-cams",
        "--metadata",
        "meta/test",
        "--cams",
        "cams",
        "--masks",
        "masks",
        "--image-size",
        "8",
        "--out",
        "out",
    ];
    std::fs::remove_file(dir.join("masks/a/2.png")).unwrap();
    let err = wsol_err(&args, dir);
    assert!(err.contains("masks/a/2.png") && err.contains("localization.txt:3"), "{err}");

    // A mask split scored without --masks points at the option.
    let err =
        wsol_err(&["eval-cams", "--metadata", "meta/test", "--cams", "cams", "--image-size", "8", "--out", "out"], dir);
    assert!(err.contains("--masks"), "{err}");

    // A box split given --masks names the line.
    std::fs::write(dir.join("meta/test/localization.txt"), "imgs/a.jpg,0,0,10,10\nimgs/b.jpg,0,0,10,10\n").unwrap();
    let err = wsol_err(&args, dir);
    assert!(err.contains("localization.txt:1") && err.contains("box split"), "{err}");

    std::fs::write(dir.join("meta/test/localization.txt"), "imgs/a.jpg,a/1.png,a/ignore.png\n").unwrap();
    let err = wsol_err(&args, dir);
    assert!(err.contains("no mask for image `imgs/b.jpg`"), "{err}");
}
