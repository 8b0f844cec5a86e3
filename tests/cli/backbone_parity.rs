//! Our backbones against PyTorch: the same weights (a formula both sides compute, see
//! scripts/make_backbone_parity_fixture.py), the same input, the same logits and feature
//! maps, in eval mode and in train mode (batch statistics).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wsol::config::ModelConfig;

const FIXTURE: &str = "tests/fixtures/backbone_parity";

/// The fixture script's weights: float64 formula, then float32.
fn set_formula_weights(varmap: &VarMap) {
    set_weights_by_kind(varmap, |i, t| ((i * 7919 + t * 104729) % 2001) as f64 / 1000.0 - 1.0, |u| 1.0 + 0.2 * u);
}

/// Sets every variable of `varmap` (sorted names, t = 0, 1, ...) from u = `u(i, t)` in
/// [-1, 1) for element i, scaled by kind as [`set_weights_with`].
pub(crate) fn set_weights_by_kind(varmap: &VarMap, u: impl Fn(u64, u64) -> f64, bn_weight: impl Fn(f64) -> f64) {
    set_weights_with(varmap, |_, t, n| (0..n as u64).map(|i| u(i, t)).collect(), bn_weight);
}

/// Sets every variable of `varmap` from `us(name, t, n)`, its n values of u in [-1, 1)
/// (t: its index among the sorted names), scaled by kind as the fixture scripts do:
/// running means and biases 0.1 u, running variances 1 + 0.25 (u + 1), batch-norm weights
/// `bn_weight(u)`, conv and linear weights sqrt(6 / fan_in) u; float64, then float32.
pub(crate) fn set_weights_with(
    varmap: &VarMap,
    us: impl Fn(&str, u64, usize) -> Vec<f64>,
    bn_weight: impl Fn(f64) -> f64,
) {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (t, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let fan_in = (n / dims[0]) as f64;
        let values: Vec<f32> = us(name, t as u64, n)
            .into_iter()
            .map(|u| {
                let w = if name.ends_with("running_mean") {
                    0.1 * u
                } else if name.ends_with("running_var") {
                    1.0 + 0.25 * (u + 1.0)
                } else if name.ends_with(".bias") {
                    0.1 * u
                } else if dims.len() == 1 {
                    bn_weight(u)
                } else {
                    (6.0 / fan_in).sqrt() * u
                };
                w as f32
            })
            .collect();
        var.set(&Tensor::from_vec(values, dims, &Device::Cpu).unwrap()).unwrap();
    }
}

fn read(name: &str) -> Tensor {
    Tensor::read_npy(Path::new(FIXTURE).join(name)).unwrap()
}

/// max |ours - theirs| relative to max |theirs|.
fn rel_diff(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let d: f32 = (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    let m: f32 = theirs.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    d / m.max(1e-12)
}

fn check(backbone: &str) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ModelConfig { backbone: backbone.parse().unwrap(), ..Default::default() };
    let model = wsol::methods::build(&cfg, 10, vb).unwrap();
    set_formula_weights(&varmap);
    let x = read("input.npy");
    let out = model.forward_t(&x, false).unwrap();
    let (f, l) = (
        rel_diff(&out.features, &read(&format!("{backbone}_features.npy"))),
        rel_diff(&out.logits, &read(&format!("{backbone}_logits.npy"))),
    );
    assert!(f < 1e-4 && l < 1e-4, "{backbone} eval: features {f:e}, logits {l:e}");
    if backbone == "inception_v3" {
        // Its head drops out in training (this fixture's network has no dropout); its
        // train-mode pass, masks included, is held to wsolevaluation's own model by the
        // first steps of training_parity's Inception replays.
        eprintln!("{backbone}: relative max diff features {f:.1e}, logits {l:.1e}");
        return;
    }
    let train = model.forward_t(&x, true).unwrap();
    let t = rel_diff(&train.logits, &read(&format!("{backbone}_train_logits.npy")));
    assert!(t < 1e-4, "{backbone} train mode: logits {t:e}");
    eprintln!("{backbone}: relative max diff features {f:.1e}, logits {l:.1e}, train-mode logits {t:.1e}");
}

#[test]
fn resnet18_matches_pytorch() {
    check("resnet18");
}

#[test]
fn resnet50_matches_pytorch() {
    check("resnet50");
}

#[test]
fn vgg16_matches_pytorch() {
    check("vgg16");
}

#[test]
fn inception_v3_matches_pytorch() {
    check("inception_v3");
}

#[test]
fn efficientnet_lite0_matches_pytorch() {
    check("efficientnet_lite0");
}

fn build(cfg: &ModelConfig) -> (VarMap, Box<dyn wsol::models::WsolModel>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = wsol::methods::build(cfg, 10, vb).unwrap();
    set_formula_weights(&varmap);
    (varmap, model)
}

#[test]
fn frozen_batch_norm_trains_with_running_statistics_and_keeps_them() {
    let cfg = ModelConfig { backbone: "resnet18".parse().unwrap(), freeze_bn: true, ..Default::default() };
    let (varmap, model) = build(&cfg);
    let stat = |v: &VarMap| -> Vec<f32> { v.data().lock().unwrap()["bn1.running_mean"].as_tensor().to_vec1().unwrap() };
    let before = stat(&varmap);
    let x = read("input.npy");
    let train = model.forward_t(&x, true).unwrap();
    assert_eq!(stat(&varmap), before);
    assert!(rel_diff(&train.logits, &read("resnet18_logits.npy")) < 1e-4, "frozen BN must act as in eval mode");
}

#[test]
fn large_feature_map_doubles_the_map_size() {
    for (backbone, size) in
        [("resnet18", 4), ("resnet50", 4), ("vgg16", 4), ("inception_v3", 4), ("efficientnet_lite0", 2)]
    {
        for (large, side) in [(false, size), (true, 2 * size)] {
            let cfg =
                ModelConfig { backbone: backbone.parse().unwrap(), large_feature_map: large, ..Default::default() };
            let (_, model) = build(&cfg);
            let out = model.forward_t(&read("input.npy"), false).unwrap();
            assert_eq!(out.features.dims()[2..], [side, side], "{backbone} large_feature_map={large}");
        }
    }
}

/// SPG on VGG16, ResNet-50 and Inception-v3 (the layouts and taps of wsolevaluation):
/// logits, the three auxiliary maps at the input size, and the loss for fixed labels,
/// against the same network written in PyTorch.
#[test]
fn spg_matches_pytorch() {
    for backbone in ["resnet50", "vgg16", "inception_v3"] {
        let cfg =
            ModelConfig { backbone: backbone.parse().unwrap(), method: "spg".parse().unwrap(), ..Default::default() };
        let (_, model) = build(&cfg);
        let out = model.forward_t(&read("input.npy"), false).unwrap();
        let l = rel_diff(&out.logits, &read(&format!("{backbone}_spg_logits.npy")));
        let aux = Tensor::stack(&out.aux, 0).unwrap();
        let a = rel_diff(&aux, &read(&format!("{backbone}_spg_aux.npy")));
        let labels = Tensor::new(&[3u32, 7], &Device::Cpu).unwrap();
        let loss = model.loss(&out, &labels).unwrap().reshape(1).unwrap();
        let d = rel_diff(&loss, &read(&format!("{backbone}_spg_loss.npy")));
        eprintln!("{backbone} spg: logits {l:.1e}, aux maps {a:.1e}, loss {d:.1e}");
        assert!(l < 1e-4 && a < 1e-4 && d < 1e-4, "{backbone} spg: logits {l:e}, aux {a:e}, loss {d:e}");
    }
}

/// ADL layers are the identity at evaluation (the CAM model's PyTorch logits, same
/// weights) and change the training-mode forward pass.
#[test]
fn adl_is_identity_in_eval_and_acts_in_training() {
    for backbone in ["resnet50", "vgg16", "inception_v3"] {
        let cfg =
            ModelConfig { backbone: backbone.parse().unwrap(), method: "adl".parse().unwrap(), ..Default::default() };
        let (_, model) = build(&cfg);
        let x = read("input.npy");
        let out = model.forward_t(&x, false).unwrap();
        assert!(rel_diff(&out.logits, &read(&format!("{backbone}_logits.npy"))) < 1e-4, "{backbone}");
        let cam = ModelConfig { backbone: backbone.parse().unwrap(), ..Default::default() };
        let (_, plain) = build(&cam);
        model.begin_step(wsol::draws::StepDraws::seeded(0, 1).layers);
        let d = rel_diff(&model.forward_t(&x, true).unwrap().logits, &plain.forward_t(&x, true).unwrap().logits);
        assert!(d > 1e-3, "{backbone}: ADL changed nothing in training ({d:e})");
    }
}

/// wsolevaluation's learning-rate groups: on ResNet only layer4 and fc train at the new
/// layers' rate (ACoL's and SPG's branches at the base rate); on VGG and Inception every
/// layer that is not pretrained does.
#[test]
fn new_layer_learning_rate_groups_follow_wsolevaluation() {
    let group = |backbone: &str, head: &str, var: &str| {
        let cfg =
            ModelConfig { backbone: backbone.parse().unwrap(), method: head.parse().unwrap(), ..Default::default() };
        let (varmap, model) = build(&cfg);
        assert!(varmap.data().lock().unwrap().contains_key(var), "{backbone}/{head} has no {var}");
        model.has_new_layer_lr(var)
    };
    assert!(group("resnet50", "cam", "layer4.0.conv1.weight"));
    assert!(group("resnet50", "cam", "fc.weight"));
    assert!(!group("resnet50", "cam", "layer3.5.conv1.weight"));
    assert!(!group("resnet50", "spg", "SPG_A4.weight"));
    assert!(!group("resnet50", "acol", "classifier_A.0.weight"));
    assert!(group("vgg16", "cam", "conv6.weight"));
    assert!(!group("vgg16", "cam", "features.28.weight"));
    assert!(group("vgg16", "spg", "SPG_A_3.0.weight"));
    assert!(group("vgg16", "spg", "features.17.weight"), "wsolevaluation's SPG_A_1.0");
    assert!(!group("vgg16", "spg", "features.14.weight"));
    assert!(!group("vgg16", "cam", "features.17.weight"));
    assert!(group("inception_v3", "acol", "classifier_B.4.weight"));
    assert!(!group("inception_v3", "adl", "Mixed_6e.branch1x1.conv.weight"));
}

/// ACoL in wsolevaluation's layouts (VGG16: 3x3 pools, pool5 at stride 1, average pool,
/// no conv6; Inception-v3: up to Mixed_6e; ResNet-50: layer4): logits, the fused map of
/// the labels' class and the two-branch loss, against PyTorch (erase threshold 0.6).
#[test]
fn acol_matches_pytorch() {
    for backbone in ["resnet50", "vgg16", "inception_v3"] {
        let cfg =
            ModelConfig { backbone: backbone.parse().unwrap(), method: "acol".parse().unwrap(), ..Default::default() };
        let (_, model) = build(&cfg);
        let out = model.forward_t(&read("input.npy"), false).unwrap();
        let labels = Tensor::new(&[3u32, 7], &Device::Cpu).unwrap();
        let l = rel_diff(&out.logits, &read(&format!("{backbone}_acol_logits.npy")));
        let c = rel_diff(&model.cam(&out, &labels).unwrap(), &read(&format!("{backbone}_acol_cam.npy")));
        let loss = model.loss(&out, &labels).unwrap().reshape(1).unwrap();
        let d = rel_diff(&loss, &read(&format!("{backbone}_acol_loss.npy")));
        eprintln!("{backbone} acol: logits {l:.1e}, fused map {c:.1e}, loss {d:.1e}");
        assert!(l < 1e-4 && c < 1e-4 && d < 1e-4, "{backbone} acol: logits {l:e}, map {c:e}, loss {d:e}");
    }
}
