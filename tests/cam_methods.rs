//! Every CAM method through `wsol eval --set eval.cam=...` on a briefly trained model:
//! the localization metrics of each method come out of the same engine, labelled.

mod common;

use common::*;

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
}
