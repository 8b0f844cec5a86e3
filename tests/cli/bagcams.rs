//! BagCAMs (Zhu et al., ECCV 2022): our maps against its authors' code on the same hashed
//! weights (tests/fixtures/bagcams_parity/, written by scripts/make_bagcams_parity_fixture.py
//! from zh460045050/BagCAMs) at the last layer and one before it, the CLI end to end on
//! synthetic data at both, and the error for a layer the backbone does not have.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wsol::cam::{by_name, CamInput, CamMethod};
use wsol::config::ModelConfig;

use crate::bas::{hashed, set_hashed_weights};
use crate::common::*;

/// ResNet-18 (layer4 at stride 1) at 64 px, one image's target logit positive and the
/// other's negative (their gradient is of log(logit): it flips sign there). The bound is
/// ten times the fixture's own float32 rounding (their float32 run against float64).
#[test]
fn bagcams_matches_the_authors_code() {
    let fx = read_json(Path::new("tests/fixtures/bagcams_parity/resnet18.json"));
    let size = fx["size"].as_u64().unwrap() as usize;
    let classes = fx["classes"].as_u64().unwrap() as usize;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ModelConfig { backbone: "resnet18".parse().unwrap(), ..Default::default() };
    let model = wsol::methods::build(&cfg, classes, vb).unwrap();
    set_hashed_weights(&varmap);
    let input: Vec<f32> = hashed("input", 2 * 3 * size * size).into_iter().map(|u| u as f32).collect();
    let x = Tensor::from_vec(input, (2, 3, size, size), &Device::Cpu).unwrap();
    let targets: Vec<u32> = fx["targets"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let t = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let out = model.forward_t(&x, false).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let logits: Vec<f32> = out.logits.flatten_all().unwrap().to_vec1().unwrap();
    let dl = logits.iter().zip(floats(&fx["logits"])).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(dl < 1e-4, "logits differ by {dl:e}");
    assert_eq!(model.backbone().layers().last().map(String::as_str), Some("layer4"));

    // layer4: plain gradients (no ReLU after it); layer3: through layer4's ReLUs, guided.
    for rec in fx["layers"].as_array().unwrap() {
        let layer = rec["layer"].as_str().unwrap();
        let ex = by_name(CamMethod::BagCams, Some(layer), model.as_ref()).unwrap();
        let maps = ex.extract(&CamInput { model: model.as_ref(), images: &x, out: &out, targets: &t }).unwrap();
        assert_eq!(maps.dims(), [2, size, size]);
        let ours: Vec<f32> = maps.flatten_all().unwrap().to_vec1().unwrap();
        let theirs = floats(&rec["maps"]);
        let d = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let noise = rec["noise"].as_f64().unwrap() as f32;
        eprintln!("bagcams resnet18 {layer} maps: max abs diff {d:.2e} (their f32 vs f64: {noise:.1e})");
        assert!(d <= 10.0 * noise.max(1e-6), "{layer}: maps differ by {d:e}");
    }
}

#[test]
fn bagcams_through_eval_and_cam() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 64, 0, 16);
    let cfg = write_config(dir, "bag", "");
    let c = cfg.to_str().unwrap();
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=1", "--out", "run", "--quiet"], dir);
    let ckpt = "run/checkpoints/last.safetensors";
    wsol_ok(&["eval", "--config", c, "--checkpoint", ckpt, "--set", "eval.cam=bagcams", "--out", "ev", "--quiet"], dir);
    let m = read_json(&dir.join("ev/metrics.json"));
    assert_eq!(m["cam"], "bagcams");
    for key in ["gt_known_loc", "maxboxacc", "maxboxacc_v2", "top1_loc"] {
        let v = m[key].as_f64().unwrap_or_else(|| panic!("no {key}"));
        assert!((0.0..=100.0).contains(&v), "{key} = {v}");
    }
    let image = "synth/test/00000.png";
    wsol_ok(
        &["cam", "--config", c, "--checkpoint", ckpt, "--image", image, "--method", "bagcams", "--out", "b.png"],
        dir,
    );
    assert!(image::open(dir.join("b.png")).is_ok());

    // An earlier layer (the gradient crosses later ReLUs, guided) and a layer that is not one.
    wsol_ok(
        &[
            "eval",
            "--config",
            c,
            "--checkpoint",
            ckpt,
            "--set",
            "eval.cam=bagcams",
            "--set",
            "eval.cam_layer=features.5",
            "--out",
            "ev5",
            "--quiet",
        ],
        dir,
    );
    assert!(read_json(&dir.join("ev5/metrics.json"))["maxboxacc_v2"].as_f64().is_some());
    let err = wsol_err(
        &["eval", "--config", c, "--checkpoint", ckpt, "--set", "eval.cam=bagcams", "--set", "eval.cam_layer=layer9"],
        dir,
    );
    assert!(err.contains("eval.cam_layer") && err.contains("layer9") && err.contains("features.12"), "{err}");
    let err = wsol_err(&["eval", "--config", c, "--checkpoint", ckpt, "--set", "eval.cam=bagcam"], dir);
    assert!(err.contains("eval.cam") && err.contains("bagcams"), "{err}");
}
