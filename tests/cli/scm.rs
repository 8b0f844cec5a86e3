//! SCM (`model.method: scm`) against its authors' model (164140757/SCM) on the same
//! formula weights and input, training and inference forward passes and the gradients of
//! the training loss (fixtures from scripts/make_scm_parity_fixture.py); and the shipped
//! SCM config training end to end on the synthetic set.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wsol::config::ModelConfig;

const FIXTURE: &str = "tests/fixtures/scm_parity";

fn read(name: &str) -> Tensor {
    Tensor::read_npy(Path::new(FIXTURE).join(name)).unwrap()
}

/// Max abs difference relative to the reference's largest magnitude.
fn rel_diff(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let max = |t: &Tensor| -> f32 { t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap() };
    max(&(ours - theirs).unwrap()) / max(theirs).max(1e-12)
}

/// deit_tiny-sized SCM with 10 classes on the fixtures' formula weights, in `dtype`.
fn build(dtype: DType) -> (VarMap, Box<dyn wsol::models::WsolModel>) {
    let cfg =
        ModelConfig { backbone: "deit_tiny".parse().unwrap(), method: "scm".parse().unwrap(), ..Default::default() };
    let formula = VarMap::new();
    wsol::methods::build(&cfg, 10, VarBuilder::from_varmap(&formula, DType::F32, &Device::Cpu)).unwrap();
    // Their state dict's names and order, the calibration scalars included.
    super::backbone_parity::set_weights_by_kind(
        &formula,
        |i, t| ((i * 7919 + t * 104729) % 2001) as f64 / 1000.0 - 1.0,
        |u| 1.0 + 0.2 * u,
    );
    let varmap = VarMap::new();
    let model = wsol::methods::build(&cfg, 10, VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu)).unwrap();
    let from = formula.data().lock().unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        var.set(&from[name].as_tensor().to_dtype(dtype).unwrap()).unwrap();
    }
    (varmap, model)
}

/// The training forward's quantities and the loss's gradients, in the fixtures' order.
fn train_pass(
    varmap: &VarMap,
    model: &dyn wsol::models::WsolModel,
    x: &Tensor,
) -> Vec<(&'static str, Tensor, &'static str)> {
    let labels = Tensor::new(&[3u32, 7], &Device::Cpu).unwrap();
    let out = model.forward_t(x, true).unwrap();
    let loss = model.loss(&out, &labels).unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    let grad =
        |name: &str| grads.get(data[name].as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}")).clone();
    let scalars: Vec<Tensor> = (0..4)
        .flat_map(|k| [format!("layers.{k}.thred"), format!("layers.{k}.fuse._loss_rate")])
        .map(|name| grad(&name))
        .collect();
    vec![
        ("logits", out.logits.clone(), "train_logits"),
        ("calibrated maps", out.class_maps.clone().unwrap(), "train_maps"),
        ("calibrated attention map", out.aux[0].flatten_from(1).unwrap(), "train_cam"),
        ("loss", loss.reshape(1).unwrap(), "train_loss"),
        ("d loss / d (thred, loss_rate)", Tensor::cat(&scalars, 0).unwrap(), "grad_layers"),
        ("d loss / d head.bias", grad("head.bias"), "grad_head_bias"),
        ("d loss / d cls_token", grad("cls_token"), "grad_cls_token"),
    ]
}

#[test]
fn scm_matches_the_authors_model_in_training_and_inference() {
    let n = 2 * 3 * 224 * 224;
    let x: Vec<f32> = (0..n as u64).map(|i| (((i * 7919) % 2001) as f64 / 1000.0 - 1.0) as f32).collect();
    let x = Tensor::from_vec(x, (2, 3, 224, 224), &Device::Cpu).unwrap();
    // The calibration is ill-conditioned (Newton-Schulz steps on a near-singular matrix):
    // the authors' float32 run is ~1e-2 (relative) from their float64 run. So the same
    // model in float64 is held to their float64 values (stored as float32) tightly, and
    // ours in float32 to them within three times the authors' own float32 error or 2e-2,
    // the float32 noise level here: the fused CPU ops round the transformer differently
    // from PyTorch's kernels (1e-6), and the calibration amplifies that ~1e4-fold (the
    // calibration scalars' gradients land 1.4e-2 from float64 where theirs land 3.5e-3).
    let (varmap64, model64) = build(DType::F64);
    let ours64 = train_pass(&varmap64, model64.as_ref(), &x.to_dtype(DType::F64).unwrap());
    let (varmap, model) = build(DType::F32);
    for ((what, ours, stem), (_, o64, _)) in train_pass(&varmap, model.as_ref(), &x).iter().zip(&ours64) {
        let (theirs, exact) = (read(&format!("{stem}.npy")), read(&format!("{stem}_f64.npy")));
        let o64 = o64.to_dtype(DType::F32).unwrap();
        let (d64, d_ours, d_theirs) = (rel_diff(&o64, &exact), rel_diff(ours, &exact), rel_diff(&theirs, &exact));
        eprintln!(
            "scm train {what}: max abs diff / max abs: float64 ours vs theirs {d64:.1e}; float32 ours vs theirs {:.1e}; \
             float32 vs their float64: ours {d_ours:.1e}, theirs {d_theirs:.1e}",
            rel_diff(ours, &theirs)
        );
        assert!(d64 < 1e-5, "{what}: float64 ours vs theirs {d64:e}");
        assert!(d_ours <= (3.0 * d_theirs).max(2e-2), "{what}: ours {d_ours:e} from float64, theirs {d_theirs:e}");
    }

    let out = model.forward_t(&x, false).unwrap();
    let theirs = read("eval_maps.npy");
    let mut maps = 0f32;
    for k in 0..10u32 {
        let ours = model.cam(&out, &Tensor::new(&[k, k], &Device::Cpu).unwrap()).unwrap();
        maps = maps.max(rel_diff(&ours, &theirs.i((.., k as usize)).unwrap()));
    }
    let eval = [
        ("eval logits", rel_diff(&out.logits, &read("eval_logits.npy"))),
        ("eval attention map", rel_diff(&out.aux[0], &read("eval_pred_cam.npy"))),
        ("eval maps", maps),
    ];
    for (what, d) in eval {
        eprintln!("scm {what}: max abs diff / max abs vs theirs {d:.1e}");
        assert!(d < 1e-4, "{what}: relative diff {d:e}");
    }
}

/// The shipped CUB config, shrunk to the synthetic set (deit_tiny at 48 px, 8 images,
/// 2 steps), trains, scores, and is evaluated again from its run; on a CNN backbone SCM
/// is refused naming `model.method` and the choices.
#[test]
fn scm_config_trains_and_evaluates_and_refuses_a_cnn() {
    use crate::common::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 8, 4, 6);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/cub/deit_small_scm.yaml");
    let sets = [
        "device=cpu",
        "data.metadata_root=synth/metadata",
        "data.image_root=synth",
        "data.num_classes=4",
        "data.image_size=48",
        "data.resize_size=48",
        "data.batch_size=4",
        "data.workers=1",
        "model.backbone=deit_tiny",
        "model.pretrained=null",
        "train.epochs=1",
        "eval.cam_curve_interval=0.01",
        "log.cam_images=0",
    ];
    let mut args = vec!["train", "--config", config, "--out", "run", "--quiet"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    wsol_ok(&args, dir);
    let trained = read_json(&dir.join("run/metrics.json"));
    for key in ["top1_cls", "gt_known_loc", "maxboxacc_v2", "top1_loc_fixed"] {
        let v = trained[key].as_f64().unwrap_or_else(|| panic!("{key}: {trained}"));
        assert!((0.0..=100.0).contains(&v), "{key} = {v}");
    }
    let weights = candle_core::safetensors::load(dir.join("run/checkpoints/last.safetensors"), &Device::Cpu).unwrap();
    for k in 0..4 {
        for name in [format!("layers.{k}.thred"), format!("layers.{k}.fuse._loss_rate")] {
            let v: Vec<f32> = weights[&name].to_vec1().unwrap();
            assert!(v.len() == 1 && v[0].is_finite() && v[0] > 0.0, "{name}: {v:?}");
        }
    }
    wsol_ok(&["eval", "run", "--out", "ev", "--quiet"], dir);
    let m = read_json(&dir.join("ev/metrics.json"));
    assert_eq!(m["maxboxacc_v2"], trained["maxboxacc_v2"], "eval of the run scores what training reported");

    let mut args = vec!["train", "--config", config];
    for s in sets.iter().filter(|s| !s.starts_with("model.backbone")) {
        args.extend(["--set", s]);
    }
    args.extend(["--set", "model.backbone=resnet18"]);
    let err = wsol_err(&args, dir);
    assert!(
        err.contains("model.method")
            && err.contains("`scm`")
            && err.contains("deit_tiny, deit_small")
            && err.contains("cam, acol"),
        "{err}"
    );
    let err = wsol_err(&["train", "--config", config, "--set", "model.scm.first_iterations=0"], dir);
    assert!(err.contains("model.scm.first_iterations"), "{err}");
}
