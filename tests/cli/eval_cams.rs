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

    // Without --out: a new folder, named on stderr, and nothing else in the directory.
    let before: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = wsol(&["eval-cams", "--metadata", "meta/test", "--cams", "cams", "--image-size", "20", "--quiet"], dir);
    assert!(out.status.success());
    let new: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !before.contains(n))
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert!(new.len() == 1 && new[0].starts_with("eval-cams-"), "{new:?}");
    assert!(dir.join(&new[0]).join("metrics.json").is_file());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&new[0]));
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

/// The library entry point checks its options itself (the CLI is not its only caller):
/// each bad value is an error naming it, never a panic.
#[test]
fn library_rejects_bad_options_without_panicking() {
    use wsol_eval::eval_cams::{eval_cams, EvalCamsOptions};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    two_image_split(dir, "imgs/a.jpg,10,10,28,28\nimgs/b.jpg,0,0,19,19\n");
    let good = || EvalCamsOptions {
        metadata: dir.join("meta/test"),
        cams: None,
        predictions: None,
        image_size: 20,
        iou_thresholds: vec![30, 50, 70],
        cam_curve_interval: 0.01,
        multi_contour: true,
        fixed_threshold: 0.2,
        masks: None,
    };
    assert_eq!(eval_cams(&good()).unwrap().num_images, 2);
    let cases: [(EvalCamsOptions, &str); 7] = [
        (EvalCamsOptions { iou_thresholds: vec![], ..good() }, "at least one IoU threshold"),
        (EvalCamsOptions { iou_thresholds: vec![50, 0], ..good() }, "IoU threshold 0"),
        (EvalCamsOptions { cam_curve_interval: 0.0, ..good() }, "cam_curve_interval 0"),
        (EvalCamsOptions { cam_curve_interval: 1e-300, ..good() }, "cam_curve_interval 1e-300"),
        (EvalCamsOptions { cam_curve_interval: f64::NAN, ..good() }, "cam_curve_interval NaN"),
        (EvalCamsOptions { image_size: 0, ..good() }, "image_size"),
        (EvalCamsOptions { fixed_threshold: 1.5, ..good() }, "fixed threshold 1.5"),
    ];
    let mut wrong = Vec::new();
    for (opts, want) in cases {
        let err = match std::panic::catch_unwind(|| eval_cams(&opts).map(|_| ())) {
            Ok(Err(e)) => format!("{e:#}"),
            Ok(Ok(())) => "no error".into(),
            Err(_) => "a panic".into(),
        };
        if !err.contains(want) {
            wrong.push(format!("expected an error with `{want}`, got {err}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let args = ["eval-cams", "--metadata", "meta/test", "--centre-baseline", "--image-size", "20", "--out", "o"];
    let err = wsol_err(&[&args[..], &["--cam-curve-interval", "1e-300"]].concat(), dir);
    assert!(err.contains("--cam-curve-interval 1e-300: expected a value in [0.0001, 1)"), "{err}");
}

/// The same maps saved as float32 and as float64 score identically: float32 maps are
/// quantized from float32 (no float64 copy), which must give the float64 path's levels.
/// Maps at the evaluation size take that path; the 40x30 ones are resized in float64.
/// Smooth blobs, a constant map, ties at the maximum, values on the level grid.
#[test]
fn float32_maps_score_as_the_same_maps_in_float64() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let split = dir.join("meta/test");
    std::fs::create_dir_all(&split).unwrap();
    let (mut ids, mut labels, mut sizes, mut locs) = (String::new(), String::new(), String::new(), String::new());
    let mut s = 7u64;
    let mut rnd = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    for i in 0..40 {
        let id = format!("c{}/img{i}.jpg", i % 3);
        let (w, h) = if i % 5 == 4 { (40, 30) } else { (32, 32) };
        let mut map: Vec<f32> = vec![0.0; w * h];
        for _ in 0..1 + i % 3 {
            let (cx, cy, sg, a) = (rnd() * w as f32, rnd() * h as f32, 2.0 + rnd() * 8.0, 0.2 + rnd());
            for (k, v) in map.iter_mut().enumerate() {
                let (x, y) = ((k % w) as f32 - cx, (k / w) as f32 - cy);
                *v += a * (-(x * x + y * y) / (2.0 * sg * sg)).exp();
            }
        }
        match i {
            0 => map.fill(0.25),
            1 => map.iter_mut().for_each(|v| *v = (*v * 300.0).floor() / 255.0),
            2 => {
                let max = map.iter().copied().fold(f32::MIN, f32::max);
                map.iter_mut().step_by(7).for_each(|v| *v = max);
            }
            3 => map.iter_mut().for_each(|v| *v = *v * 1e-6 - 3.0),
            _ => {}
        }
        let data64: Vec<f64> = map.iter().map(|&v| v as f64).collect();
        write(&nested_path(&dir.join("cams64"), &id), &ScoreMap { width: w, height: h, data: data64 }).unwrap();
        let p = nested_path(&dir.join("cams32"), &id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut buf = vec![];
        use npyz::WriterBuilder;
        let mut wr =
            npyz::WriteOptions::new().default_dtype().shape(&[h as u64, w as u64]).writer(&mut buf).begin_nd().unwrap();
        wr.extend(map.iter().copied()).unwrap();
        wr.finish().unwrap();
        std::fs::write(&p, &buf).unwrap();
        let (x0, y0) = ((rnd() * 30.0) as u32, (rnd() * 30.0) as u32);
        ids += &format!("{id}\n");
        labels += &format!("{id},{}\n", i % 3);
        sizes += &format!("{id},64,64\n");
        locs += &format!("{id},{x0},{y0},{},{}\n", x0 + 8 + (rnd() * 25.0) as u32, y0 + 8 + (rnd() * 25.0) as u32);
    }
    for (name, text) in
        [("image_ids.txt", ids), ("class_labels.txt", labels), ("image_sizes.txt", sizes), ("localization.txt", locs)]
    {
        std::fs::write(split.join(name), text).unwrap();
    }
    for interval in ["0.01", "0.001"] {
        for cams in ["cams32", "cams64"] {
            let out = format!("out-{cams}-{interval}");
            let args = [
                "eval-cams",
                "--metadata",
                "meta/test",
                "--cams",
                cams,
                "--image-size",
                "32",
                "--out",
                &out,
                "--quiet",
            ];
            wsol_ok(&[&args[..], &["--cam-curve-interval", interval]].concat(), dir);
        }
        let (a, b) = (dir.join(format!("out-cams32-{interval}")), dir.join(format!("out-cams64-{interval}")));
        let (mut ma, mut mb) = (read_json(&a.join("metrics.json")), read_json(&b.join("metrics.json")));
        // The one key that names the folder.
        ma["cam"].take();
        mb["cam"].take();
        assert_eq!(ma, mb, "interval {interval}");
        for f in ["curve.csv", "per_image.csv"] {
            assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} at {interval}");
        }
    }
}
