//! Every CAM method through `wsol eval --set eval.cam=...` on a briefly trained model:
//! the localization metrics of each method come out of the same engine, labelled.

use crate::common::*;

#[test]
fn every_cam_method_scores_through_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 96, 16, 24);
    let cfg = write_config(dir, "cams", "");
    let c = cfg.to_str().unwrap();
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=2", "--out", "run", "--quiet"], dir);
    let ckpt = "run/checkpoints/last.safetensors";
    let mut gt_known = Vec::new();
    for (method, layer) in [
        ("cam", None),
        ("gradcam", None),
        ("gradcam++", None),
        ("xgradcam", None),
        ("layercam", Some("features.5")),
        ("scorecam", None),
        ("eigencam", None),
    ] {
        let out = format!("eval-{method}");
        let set_method = format!("eval.cam={method}");
        let mut args =
            vec!["eval", "--config", c, "--checkpoint", ckpt, "--set", &set_method, "--out", &out, "--quiet"];
        let set_layer = layer.map(|l| format!("eval.cam_layer={l}"));
        if let Some(s) = &set_layer {
            args.extend(["--set", s]);
        }
        wsol_ok(&args, dir);
        let m = read_json(&dir.join(&out).join("metrics.json"));
        assert_eq!(m["cam"], method);
        for key in ["gt_known_loc", "maxboxacc", "maxboxacc_v2", "top1_loc"] {
            let v = m[key].as_f64().unwrap_or_else(|| panic!("{method}: no {key}"));
            assert!((0.0..=100.0).contains(&v), "{method}: {key} = {v}");
        }
        // Classification does not depend on the CAM method.
        assert_eq!(m["top1_cls"], read_json(&dir.join("eval-cam/metrics.json"))["top1_cls"]);
        gt_known.push(m["gt_known_loc"].as_f64().unwrap());
    }
    // The methods read different maps, so not all of them can agree.
    assert!(gt_known.iter().any(|&v| v != gt_known[0]), "{gt_known:?}");

    let err = wsol_err(
        &["eval", "--config", c, "--checkpoint", ckpt, "--set", "eval.cam=gradcam", "--set", "eval.cam_layer=layer4"],
        dir,
    );
    assert!(err.contains("eval.cam_layer") && err.contains("features.12"), "{err}");

    // A picture of one test image: 2 methods x top-2 classes, GT box drawn (it is in the split).
    let image = "synth/test/00000.png";
    let stdout = wsol_ok(
        &["cam", "--config", c, "--checkpoint", ckpt, "--image", image, "--method", "gradcam,eigencam"]
            .into_iter()
            .chain(["--top", "2", "--out", "grid.png"])
            .collect::<Vec<_>>(),
        dir,
    );
    assert_eq!(stdout.lines().filter(|l| l.contains(" class ")).count(), 4, "{stdout}");
    let png = image::open(dir.join("grid.png")).unwrap().to_rgb8();
    // 48px panels shown 5x (240 px), each with two caption lines (36 px), 4 px gaps.
    assert_eq!(png.dimensions(), (484, 556));
    // Method and probability, then the class name.
    for rows in [242..258, 258..276] {
        let caption = (0..484).flat_map(|x| rows.clone().map(move |y| (x, y)));
        let dark = caption.filter(|&(x, y)| png.get_pixel(x, y).0[0] < 80).count();
        assert!(dark > 50, "caption line {rows:?} is drawn");
    }
    let colour = |c: [u8; 3]| png.pixels().filter(|p| p.0 == c).count();
    assert!(colour([0, 255, 0]) > 0 && colour([255, 0, 0]) > 0, "GT (green) and predicted (red) boxes are drawn");
    let err = wsol_err(
        &["cam", "--config", c, "--checkpoint", ckpt, "--image", image, "--class", "9", "--out", "x.png"],
        dir,
    );
    assert!(err.contains("--class 9"), "{err}");
    let err = wsol_err(&["cam", "--config", c, "--checkpoint", ckpt, "--image", "nope.png", "--out", "x.png"], dir);
    assert!(err.contains("nope.png"), "{err}");

    // The run's HTML page: metrics, the curve chart, 3 best + 3 worst overlays inline.
    let out = wsol_ok(&["report", "run", "--samples", "3"], dir);
    assert!(out.contains("report.html"), "{out}");
    let html = std::fs::read_to_string(dir.join("run/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("gt_known_loc") && html.contains("Worst localized"));
    // One number format: percentages with two decimals, the threshold with three, no aliases.
    let m = read_json(&dir.join("run/metrics.json"));
    let cell = |k: &str| format!("<td>{k}</td><td>");
    let gt_known = format!("{}{:.2}</td>", cell("gt_known_loc"), m["gt_known_loc"].as_f64().unwrap());
    assert!(html.contains(&gt_known), "{gt_known} not in the page");
    let thr = format!("{}{:.3}</td>", cell("best_threshold_v1"), m["best_threshold_v1"].as_f64().unwrap());
    assert!(html.contains(&thr) && !html.contains(&cell("best_threshold")), "{thr}");
    assert_eq!(html.matches("data:image/png;base64,").count(), 6);
    // The synthetic data's class_names.txt names each overlay's GT class.
    let named = ["disk", "square", "triangle", "plus"].iter().map(|n| html.matches(&format!("<br>{n}<br>IoU")).count());
    assert_eq!(named.sum::<usize>(), 6, "{html}");
    let err = wsol_err(&["report", "nowhere"], dir);
    assert!(err.contains("nowhere"), "{err}");
}
