//! Faithfulness metrics against torch-cam's and pytorch-grad-cam's own code on the same
//! network (wsol's ResNet-18, the weights formula of backbone_parity with the classifier
//! scaled), images, maps and classes: tests/fixtures/faithfulness, written by
//! scripts/make_faithfulness_fixture.py.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;
use wsol::config::ModelConfig;
use wsol::evaluate::faithfulness::{class_scores, score_images};
use wsol_eval::faithfulness::{road, FaithfulnessConfig, Metric, Substrate};

const FIXTURE: &str = "tests/fixtures/faithfulness";

struct Case {
    model: Box<dyn wsol::models::WsolModel>,
    images: Vec<f32>,
    maps: Vec<f32>,
    classes: Vec<usize>,
    base: Vec<f32>,
    size: usize,
    expected: Value,
    _varmap: VarMap,
}

fn case() -> Case {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(FIXTURE).join("expected.json")).unwrap()).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ModelConfig { backbone: "resnet18".parse().unwrap(), ..Default::default() };
    let model = wsol::methods::build(&cfg, 10, vb).unwrap();
    crate::backbone_parity::set_weights_by_kind(
        &varmap,
        |i, t| ((i * 7919 + t * 104729) % 2001) as f64 / 1000.0 - 1.0,
        |u| 1.0 + 0.2 * u,
    );
    let scale = expected["fc_scale"].as_f64().unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.starts_with("fc.") {
            var.set(&(var.as_tensor() * scale).unwrap()).unwrap();
        }
    }
    let read = |f: &str| Tensor::read_npy(Path::new(FIXTURE).join(f)).unwrap();
    let (x, maps) = (read("images.npy"), read("maps.npy"));
    let size = expected["size"].as_u64().unwrap() as usize;
    let classes: Vec<usize> =
        expected["classes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let base = class_scores(model.as_ref(), &x, &classes).unwrap();
    for (b, want) in base.iter().zip(expected["scores"].as_array().unwrap()) {
        assert!((*b as f64 - want.as_f64().unwrap()).abs() < 1e-5, "base score {b} vs {want}");
    }
    Case {
        model,
        images: x.flatten_all().unwrap().to_vec1().unwrap(),
        maps: maps.flatten_all().unwrap().to_vec1().unwrap(),
        classes,
        base,
        size,
        expected,
        _varmap: varmap,
    }
}

fn run(c: &Case, cfg: &FaithfulnessConfig) -> Vec<std::collections::BTreeMap<Metric, f64>> {
    let keys: Vec<u64> = (0..c.classes.len() as u64).collect();
    let (per, _) = score_images(
        c.model.as_ref(),
        cfg,
        &c.images,
        &c.maps,
        (3, c.size),
        &c.classes,
        &c.base,
        &keys,
        &Device::Cpu,
        16,
    )
    .unwrap();
    per.into_iter().map(|p| p.0).collect()
}

fn config(metrics: Vec<Metric>) -> FaithfulnessConfig {
    FaithfulnessConfig { metrics, steps: 20, substrate: Substrate::Zero, percentiles: vec![], road_noise: 0.0, seed: 0 }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Largest |ours - theirs| over the images, checked against `tol`.
fn check(what: &str, ours: &[f64], theirs: &[f64], tol: f64) {
    let d = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("{what}: max |diff| {d:.1e} (ours {ours:.6?})");
    assert!(d <= tol, "{what}: ours {ours:?} theirs {theirs:?}");
}

#[test]
fn average_drop_and_increase_match_torch_cam_and_pytorch_grad_cam() {
    let c = case();
    let got = run(&c, &config(vec![Metric::AvgDrop, Metric::AvgIncrease]));
    let e = &c.expected["torchcam_classification"];
    let drop: Vec<f64> = got.iter().map(|m| m[&Metric::AvgDrop] / 100.0).collect();
    check("avg drop (torch-cam)", &drop, &floats(&e["avg_drop"]), 1e-4);
    let inc: Vec<f64> = got.iter().map(|m| m[&Metric::AvgIncrease] / 100.0).collect();
    check("increase (torch-cam)", &inc, &floats(&e["increase"]), 0.0);
    check("increase (pytorch-grad-cam)", &inc, &floats(&c.expected["gradcam_increase_in_confidence"]), 0.0);
    // pytorch-grad-cam's drop is not divided by the score.
    let raw: Vec<f64> = drop.iter().zip(&c.base).map(|(d, &b)| d * (b as f64 + 1e-7)).collect();
    check("drop in confidence (pytorch-grad-cam)", &raw, &floats(&c.expected["gradcam_drop_in_confidence"]), 1e-5);
}

#[test]
fn deletion_and_insertion_match_torch_cam() {
    let c = case();
    for steps in [20, 7] {
        for (name, substrate) in [("zero", Substrate::Zero), ("blur", Substrate::Blur)] {
            let cfg = FaithfulnessConfig { steps, substrate, ..config(vec![Metric::Deletion, Metric::Insertion]) };
            let got = run(&c, &cfg);
            let e = &c.expected["torchcam_deletion_insertion"][format!("{steps}_{name}")];
            for (m, key) in [(Metric::Deletion, "deletion"), (Metric::Insertion, "insertion")] {
                let ours: Vec<f64> = got.iter().map(|g| g[&m]).collect();
                check(&format!("{key} AUC, {steps} steps, {name}"), &ours, &floats(&e[key]), 1e-4);
            }
        }
    }
}

#[test]
fn blur_substrate_is_torchvisions() {
    let c = case();
    let ours = wsol_eval::faithfulness::blur(&c.images[..3 * c.size * c.size], 3, c.size, c.size);
    let theirs = floats(&c.expected["blurred_input"]);
    let ours: Vec<f64> = ours[..theirs.len()].iter().map(|&v| v as f64).collect();
    check("blurred input", &ours, &theirs, 1e-5);
}

#[test]
fn road_matches_pytorch_grad_cam_per_percentile() {
    let c = case();
    let percentiles: Vec<u32> = floats(&c.expected["percentiles"]).iter().map(|&p| p as u32).collect();
    for (key, metric) in [("morf", Metric::RoadMorf), ("lerf", Metric::RoadLerf)] {
        let rows = c.expected["gradcam_road"][key].as_array().unwrap();
        for (k, &p) in percentiles.iter().enumerate() {
            let got = run(&c, &FaithfulnessConfig { percentiles: vec![p], ..config(vec![metric]) });
            let ours: Vec<f64> = got.iter().map(|g| g[&metric]).collect();
            check(&format!("ROAD {key} at {p}"), &ours, &floats(&rows[k]), 1e-4);
        }
    }
}

#[test]
fn road_imputation_matches_the_reference_linear_solve() {
    let c = case();
    let plane = c.size * c.size;
    let mut img = c.images[..3 * plane].to_vec();
    let keep = road::kept(&c.maps[..plane], 50.0, true);
    road::impute(&mut img, 3, c.size, c.size, &keep, || 0.0);
    let theirs: Vec<f32> = Tensor::read_npy(Path::new(FIXTURE).join("imputed_morf50.npy"))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let ours: Vec<f64> = img.iter().map(|&v| v as f64).collect();
    check("imputed image (MoRF 50)", &ours, &theirs.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
}

/// `wsol eval RUN --set eval.faithfulness=[...]` on a briefly trained run: the keys in
/// metrics.json, the table, TensorBoard and `wsol report`; bad options refused by name.
#[test]
fn eval_writes_faithfulness_keys_that_report_shows() {
    use crate::common::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 64, 8, 8);
    let cfg = write_config(dir, "f", "");
    let cfg = cfg.to_str().unwrap();
    wsol_ok(&["train", "--config", cfg, "--set", "train.epochs=1", "--out", "run", "--quiet"], dir);
    let m = read_json(&dir.join("run/metrics.json"));
    assert!(m.get("deletion_auc").is_none(), "off by default: {m}");

    let set = ["--set", "eval.faithfulness=[road, insertion, avg_drop]", "--set", "eval.road_percentiles=[20, 80]"];
    let out = wsol(&[&["eval", "run"][..], &set, &["--set", "eval.faithfulness_steps=8"]].concat(), dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("faithfulness: 13 perturbed inputs per image"), "{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    let m = read_json(&dir.join("run/eval-test/metrics.json"));
    // Per image: the map times the input; insertion's 9 points (48 x 48 pixels in steps of
    // 288) less the unperturbed last; 2 percentiles x 2 ROAD orders.
    assert_eq!(m["faithfulness_inputs_per_image"], 1.0 + 8.0 + 4.0);
    for key in ["avg_drop", "insertion_auc", "road_morf", "road_lerf", "road_combined"] {
        let v = m[key].as_f64().unwrap_or_else(|| panic!("metrics.json lacks {key}: {m}"));
        assert!(v.is_finite(), "{key} = {v}");
        assert!(table.contains(key), "the table lacks {key}:\n{table}");
    }
    assert!(m.get("deletion_auc").is_none() && m.get("avg_increase").is_none(), "only what was asked for: {m}");
    assert!(dir.join("run/eval-test/tb").is_dir());
    // The same config and seed give the same numbers (ROAD's noise is seeded).
    wsol_ok(
        &[&["eval", "run", "--out", "again"][..], &set, &["--set", "eval.faithfulness_steps=8", "--quiet"]].concat(),
        dir,
    );
    let again = read_json(&dir.join("again/metrics.json"));
    assert_eq!(m["road_morf"], again["road_morf"]);
    assert_eq!(m["insertion_auc"], again["insertion_auc"]);
    wsol_ok(&["report", "run", "--samples", "1"], dir);
    let html = std::fs::read_to_string(dir.join("run/report.html")).unwrap();
    assert!(html.contains("road_morf (eval-test)"), "report lacks the eval's faithfulness rows");

    let err = wsol_err(&["eval", "run", "--set", "eval.faithfulness=[deletoin]"], dir);
    assert!(err.contains("eval.faithfulness: unknown metric `deletoin`") && err.contains("road_morf"), "{err}");
    let err =
        wsol_err(&["eval", "run", "--set", "eval.faithfulness=[road]", "--set", "eval.road_percentiles=[0, 50]"], dir);
    assert!(err.contains("eval.road_percentiles: 0"), "{err}");
    let err =
        wsol_err(&["eval", "run", "--set", "eval.faithfulness=[deletion]", "--set", "eval.faithfulness_steps=0"], dir);
    assert!(err.contains("eval.faithfulness_steps: 0"), "{err}");
    let err = wsol_err(&["eval", "run", "--set", "eval.faithfulness_substrate=noise"], dir);
    assert!(err.contains("faithfulness_substrate") && err.contains("blur"), "{err}");
}
