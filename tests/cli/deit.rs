//! DeiT backbones, their CAMs and TS-CAM against the reference code on the same weights
//! (the formula of backbone_parity.rs) and inputs: timm, pytorch-grad-cam with its ViT
//! `reshape_transform`, attention rollout, the authors' TS-CAM model. Fixtures from
//! scripts/make_deit_parity_fixture.py.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wsol::cam::{self, CamInput, CamMethod};
use wsol::config::{Config, ModelConfig};
use wsol::models::WsolModel;

const FIXTURE: &str = "tests/fixtures/deit_parity";

fn read(name: &str) -> Tensor {
    Tensor::read_npy(Path::new(FIXTURE).join(name)).unwrap()
}

fn max_abs_diff(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn build(backbone: &str, method: &str) -> (VarMap, Box<dyn WsolModel>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg =
        ModelConfig { backbone: backbone.parse().unwrap(), method: method.parse().unwrap(), ..Default::default() };
    let model = wsol::methods::build(&cfg, 10, vb).unwrap();
    super::backbone_parity::set_weights_by_kind(
        &varmap,
        |i, t| ((i * 7919 + t * 104729) % 2001) as f64 / 1000.0 - 1.0,
        |u| 1.0 + 0.2 * u,
    );
    (varmap, model)
}

fn check_backbone(name: &str) {
    check_backbone_against(name, name);
}

/// Our `ours` against timm's `fixture` model (the fixture files' prefix).
fn check_backbone_against(ours: &str, fixture: &str) {
    let name = fixture;
    let (varmap, model) = build(ours, "cam");
    let x = read("input.npy");
    let out = model.forward_t(&x, false).unwrap();
    let deit = model.backbone().transformer().unwrap();
    let tokens = deit.forward_tokens(&x).unwrap();
    let theirs = read(&format!("{name}_tokens.npy"));
    let d_tokens = max_abs_diff(&tokens.tokens, &theirs);
    // The map is the patch tokens on their 4x4 grid.
    let d_features = max_abs_diff(
        &out.features,
        &theirs.i((.., 1..)).unwrap().transpose(1, 2).unwrap().reshape((2, theirs.dim(2).unwrap(), 4, 4)).unwrap(),
    );
    let d_attn = max_abs_diff(&Tensor::stack(&tokens.attention, 0).unwrap(), &read(&format!("{name}_attention.npy")));
    let d_gap = max_abs_diff(&out.logits, &read(&format!("{name}_gap_logits.npy")));
    // timm's own classifier reads the class token; our `fc` holds the same formula weights as its `head`.
    let data = varmap.data().lock().unwrap();
    let (w, b) = (data["fc.weight"].as_tensor(), data["fc.bias"].as_tensor());
    let cls = tokens.tokens.i((.., 0)).unwrap().matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap();
    let d_cls = max_abs_diff(&cls, &read(&format!("{name}_cls_logits.npy")));
    eprintln!(
        "{name} vs timm, max abs diff: tokens {d_tokens:.1e}, feature map {d_features:.1e}, attention {d_attn:.1e}, class-token logits {d_cls:.1e}, GAP logits {d_gap:.1e}"
    );
    for (what, d) in [
        ("tokens", d_tokens),
        ("features", d_features),
        ("attention", d_attn),
        ("cls logits", d_cls),
        ("gap logits", d_gap),
    ] {
        assert!(d < 1e-4, "{name}: {what} differ from timm by {d:e}");
    }
}

#[test]
fn deit_tiny_matches_timm() {
    check_backbone("deit_tiny");
}

#[test]
fn deit_small_matches_timm() {
    check_backbone("deit_small");
}

/// timm's `vit_small_patch16_224` is `deit_small_patch16_224`'s network (the fixture
/// script asserts the same modules and tensor names and shapes), so its fixture serves.
#[test]
fn vit_small_matches_timm() {
    check_backbone_against("vit_small", "deit_small");
}

fn extract(model: &dyn WsolModel, method: CamMethod, layer: Option<&str>, targets: &[u32]) -> Tensor {
    let x = read("input.npy");
    let out = model.forward_t(&x, false).unwrap();
    let targets = Tensor::new(targets, &Device::Cpu).unwrap();
    let extractor = cam::by_name(method, layer, model).unwrap();
    extractor.extract(&CamInput { model, images: &x, out: &out, targets: &targets }).unwrap()
}

#[test]
fn gradcam_on_a_block_matches_pytorch_grad_cam_reshape_transform() {
    let (_varmap, model) = build("deit_tiny", "cam");
    let ours = extract(model.as_ref(), CamMethod::GradCam, Some("blocks.10"), &[3, 7]);
    let theirs = read("deit_tiny_gradcam_block10.npy");
    let d = max_abs_diff(&ours, &theirs);
    let scale: f32 = theirs.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    eprintln!("gradcam on deit_tiny blocks.10 vs pytorch-grad-cam: max abs diff {d:.1e} (map max {scale:.1e})");
    assert!(scale > 1e-3 && d < 1e-5, "diff {d:e}, map max {scale:e}");
}

#[test]
fn every_cam_method_reads_a_deit_block() {
    let (_varmap, model) = build("deit_tiny", "cam");
    for method in CamMethod::ALL.iter().filter(|m| **m != CamMethod::Cam && **m != CamMethod::ScoreCam) {
        let map = extract(model.as_ref(), *method, Some("blocks.5"), &[1, 2]);
        // BagCAMs upsamples to the input before its min-max, as its authors' code does.
        let size = if *method == CamMethod::BagCams { 64 } else { 4 };
        assert_eq!(map.dims(), &[2, size, size], "{method}");
    }
    let map = extract(model.as_ref(), CamMethod::Cam, None, &[1, 2]);
    assert_eq!(map.dims(), &[2, 4, 4]);
}

#[test]
fn attention_rollout_matches_the_reference_formula() {
    for name in ["deit_tiny", "deit_small"] {
        let (_varmap, model) = build(name, "cam");
        let ours = extract(model.as_ref(), CamMethod::AttentionRollout, None, &[0, 0]).reshape((2, 16)).unwrap();
        let d = max_abs_diff(&ours, &read(&format!("{name}_rollout.npy")));
        eprintln!("{name} attention rollout: max abs diff {d:.1e}");
        assert!(d < 1e-5, "{name}: {d:e}");
    }
}

#[test]
fn tscam_matches_the_authors_model() {
    let (_varmap, model) = build("deit_tiny", "tscam");
    let n = 3 * 224 * 224;
    let x: Vec<f32> = (0..n as u64).map(|i| (((i * 7919) % 2001) as f64 / 1000.0 - 1.0) as f32).collect();
    let x = Tensor::from_vec(x, (1, 3, 224, 224), &Device::Cpu).unwrap();
    let out = model.forward_t(&x, false).unwrap();
    let d_logits = max_abs_diff(&out.logits, &read("tscam_tiny_logits.npy"));
    let theirs = read("tscam_tiny_cams.npy");
    let mut worst = 0f32;
    for k in 0..10u32 {
        let ours = model.cam(&out, &Tensor::new(&[k], &Device::Cpu).unwrap()).unwrap();
        worst = worst.max(max_abs_diff(&ours, &theirs.i((.., k as usize)).unwrap()));
    }
    eprintln!("tscam (deit_tiny, 224) vs vasgaowei/TS-CAM: max abs diff logits {d_logits:.1e}, maps {worst:.1e}");
    assert!(d_logits < 1e-4 && worst < 1e-4, "logits {d_logits:e}, maps {worst:e}");
}

/// TS-CAM trains end to end on the synthetic set (deit_tiny at 48 px: a 3x3 token grid),
/// `wsol eval` scores gradient CAMs of a block and attention rollout with the same engine,
/// and `wsol cam` draws both.
#[test]
fn tscam_trains_and_every_map_is_scored() {
    use crate::common::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 48, 8, 12);
    let cfg = write_config(dir, "tscam", "");
    let c = cfg.to_str().unwrap();
    let sets = ["--set", "model.backbone=deit_tiny", "--set", "model.method=tscam", "--set", "train.optimizer.lr=0.01"];
    let mut args = vec!["train", "--config", c, "--set", "train.epochs=2", "--out", "run", "--quiet"];
    args.extend(sets);
    wsol_ok(&args, dir);
    let trained = read_json(&dir.join("run/metrics.json"));
    for key in ["top1_cls", "gt_known_loc", "maxboxacc_v2"] {
        let v = trained[key].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&v), "{key} = {v}");
    }
    let weights = candle_core::safetensors::load(dir.join("run/checkpoints/last.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(weights["head.weight"].dims(), [4, 192, 3, 3]);
    assert_eq!(weights["pos_embed"].dims(), [1, 197, 192], "timm's shape, resampled at run time");

    for (cam, layer) in [("gradcam", "blocks.5"), ("layercam", "blocks.11"), ("attention_rollout", "norm")] {
        let (s1, s2) = (format!("eval.cam={cam}"), format!("eval.cam_layer={layer}"));
        let out = format!("ev-{cam}");
        wsol_ok(&["eval", "run", "--set", &s1, "--set", &s2, "--out", &out, "--quiet"], dir);
        let m = read_json(&dir.join(&out).join("metrics.json"));
        assert_eq!(m["cam"], cam);
        assert!(m["maxboxacc_v2"].as_f64().is_some(), "{cam}: {m}");
    }
    let ckpt = "run/checkpoints/last.safetensors";
    let run_cfg = "run/config.yaml";
    let image = "synth/test/00000.png";
    wsol_ok(
        &["cam", "--config", run_cfg, "--checkpoint", ckpt, "--image", image, "--method", "gradcam,attention_rollout"]
            .into_iter()
            .chain(["--out", "grid.png", "--quiet"])
            .collect::<Vec<_>>(),
        dir,
    );
    assert!(dir.join("grid.png").exists());

    // Bad input, one clear error each, naming the key / file / layer and the choices.
    let err = wsol_err(&["eval", "run", "--set", "eval.cam=gradcam", "--set", "eval.cam_layer=layer4"], dir);
    assert!(err.contains("eval.cam_layer") && err.contains("blocks.0") && err.contains("blocks.11"), "{err}");
    let mut args = vec!["train", "--config", c, "--set", "data.image_size=40"];
    args.extend(sets);
    let err = wsol_err(&args, dir);
    assert!(err.contains("data.image_size") && err.contains("16") && err.contains("48"), "{err}");
    for method in ["spg", "acol", "adl", "bas"] {
        let m = format!("model.method={method}");
        let err = wsol_err(&["train", "--config", c, "--set", "model.backbone=deit_tiny", "--set", &m], dir);
        assert!(err.contains("model.method") && err.contains(method) && err.contains("tscam"), "{err}");
    }
    let err = wsol_err(&["train", "--config", c, "--set", "model.method=tscam"], dir);
    assert!(err.contains("tscam") && err.contains("deit_small"), "{err}");

    // A timm-named file of another width (this deit_tiny run) given to deit_small.
    let p = format!("model.pretrained={ckpt}");
    let err = wsol_err(&["train", "--config", c, "--set", "model.backbone=deit_small", "--set", &p], dir);
    assert!(err.contains(ckpt) && err.contains("another shape") && err.contains("384"), "{err}");
    // A CNN checkpoint given to a DeiT.
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=1", "--out", "cnn", "--quiet"], dir);
    let p = "model.pretrained=cnn/checkpoints/last.safetensors";
    let err = wsol_err(&["train", "--config", c, "--set", "model.backbone=deit_tiny", "--set", p], dir);
    assert!(
        err.contains("missing (blocks.0.") && err.contains("unexpected (features.") && err.contains("timm"),
        "{err}"
    );
}

/// `model.patch_size: 8`: deit_tiny builds with an 8-pixel patch embedding and a 28x28
/// position grid (a 224-pixel input's, as timm's patch-8 models), and a 32-pixel input
/// gives a 4x4 token map, the position embedding resampled to it.
#[test]
fn deit_tiny_runs_at_patch_8() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ModelConfig { backbone: "deit_tiny".parse().unwrap(), patch_size: 8, ..Default::default() };
    let model = wsol::methods::build(&cfg, 5, vb).unwrap();
    {
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["patch_embed.proj.weight"].dims(), [192, 3, 8, 8]);
        assert_eq!(data["pos_embed"].dims(), [1, 1 + 28 * 28, 192]);
    }
    assert_eq!(model.backbone().transformer().unwrap().patch_size(), 8);
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let out = model.forward_t(&x, false).unwrap();
    assert_eq!(out.features.dims(), [2, 192, 4, 4]);
    assert_eq!(out.logits.dims(), [2, 5]);
    let tokens = model.backbone().transformer().unwrap().forward_tokens(&x).unwrap();
    assert_eq!(tokens.attention[0].dims(), [2, 3, 17, 17]);
}

/// The transformer demo (configs/demo_deit.yaml) end to end as a user runs it, shrunk to a
/// few images and one epoch; and the errors of a bad `model.patch_size`, each naming the key,
/// the sizes and (for weights) the file.
#[test]
fn transformer_demo_runs_shrunk_and_bad_patch_sizes_are_named() {
    use crate::common::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/demo_deit.yaml");
    let shrink = ["data.synthetic.train=12", "data.synthetic.val=4", "data.synthetic.test=6", "train.epochs=1"];
    let mut args = vec!["train", "--config", cfg, "--out", "run", "--quiet"];
    for s in shrink {
        args.extend(["--set", s]);
    }
    wsol_ok(&args, dir);
    let m = read_json(&dir.join("run/metrics.json"));
    for key in ["top1_cls", "gt_known_loc", "maxboxacc_v2"] {
        let v = m[key].as_f64().unwrap_or_else(|| panic!("{key}: {m}"));
        assert!((0.0..=100.0).contains(&v), "{key} = {v}");
    }
    let resolved = std::fs::read_to_string(dir.join("run/config.yaml")).unwrap();
    assert!(resolved.contains("patch_size:") && resolved.contains("clutter: false"), "{resolved}");
    let image = image::open(dir.join("data/synth_clean32/test/00000.png")).unwrap().to_rgb8();
    assert!(image.pixels().all(|p| p[0] == p[1] && p[1] == p[2]), "the uncluttered variant is white on black");
    let weights = candle_core::safetensors::load(dir.join("run/checkpoints/last.safetensors"), &Device::Cpu).unwrap();
    let patch = Config::load(Path::new(cfg), &[]).unwrap().model.patch_size;
    assert!(patch < 16, "the demo's point is a patch below timm's 16");
    assert_eq!(weights["patch_embed.proj.weight"].dims(), [192, 3, patch, patch]);
    // The run's own directory evaluates again with its patch size.
    wsol_ok(&["eval", "run", "--out", "ev", "--quiet"], dir);

    let bad = |set: &str| {
        let mut args = vec!["train", "--config", cfg, "--set", set];
        for s in shrink {
            args.extend(["--set", s]);
        }
        wsol_err(&args, dir)
    };
    let err = bad("model.patch_size=5");
    assert!(
        err.contains("data.image_size") && err.contains("5-pixel patch") && err.contains("model.patch_size"),
        "{err}"
    );
    let err = bad("model.patch_size=0");
    assert!(err.contains("model.patch_size") && err.contains("got 0"), "{err}");
    let err = bad("model.backbone=tiny");
    assert!(err.contains("model.patch_size") && err.contains("transformer"), "{err}");
    // timm's weights are 16-pixel ones: refused at another patch, naming the file and both sizes.
    let file = dir.join("patch16.safetensors");
    let w = Tensor::zeros((192, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("patch_embed.proj.weight", w)]), &file).unwrap();
    let err = bad("model.pretrained=patch16.safetensors");
    assert!(
        err.contains("patch16.safetensors") && err.contains("16-pixel") && err.contains(&format!("is {patch}")),
        "{err}"
    );
}
