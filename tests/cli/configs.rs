//! Every shipped config loads and validates, and every (backbone, method) pair of the paper
//! grid (`configs/{cub,ilsvrc,openimages}/`) builds and runs a forward pass on CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use wsol::config::Config;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn every_config_loads_and_the_paper_grid_builds() {
    let mut files = Vec::new();
    yaml_files(Path::new("configs"), &mut files);
    files.sort();
    let mut pairs = BTreeMap::new();
    let mut grid = 0;
    for f in &files {
        let cfg = Config::load(f, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        if cfg.data.class_names.is_some() {
            let names = wsol::data::ClassNames::load(&cfg).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            assert!(names.is_known(), "{}", f.display());
        }
        if f.parent().unwrap() != Path::new("configs") {
            grid += 1;
            let stem = f.file_stem().unwrap().to_str().unwrap();
            assert_eq!(stem, format!("{}_{}", cfg.model.backbone, cfg.model.method), "{}", f.display());
            assert!(cfg.model.pretrained.is_some(), "{}: paper runs start from ImageNet weights", f.display());
            pairs.insert((cfg.model.backbone, cfg.model.method), cfg.model.clone());
        }
    }
    assert_eq!(
        grid, 63,
        "3 datasets x 3 backbones x 6 methods, BAS on CUB and ILSVRC x VGG16 and ResNet-50, and on CUB x Inception-v3, TS-CAM and SCM on CUB and ILSVRC x DeiT-S"
    );
    assert_eq!(pairs.len(), 23);
    for ((backbone, head), model_cfg) in pairs {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = wsol::methods::build(&model_cfg, 10, vb).unwrap_or_else(|e| panic!("{backbone}/{head}: {e:#}"));
        let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let out = model.forward_t(&x, false).unwrap();
        assert_eq!(out.logits.dims(), [1, 10], "{backbone}/{head}");
    }
}

/// The starting recipe for one's own data trains without its weights file (saying so), and
/// the demo's `tiny` net warns when the input dwarfs what its map cells see.
#[test]
fn custom_recipe_runs_without_weights_and_tiny_warns_at_large_inputs() {
    use crate::common::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 8, 4, 4);
    let custom = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/custom.yaml");
    let data = ["data.metadata_root=synth/metadata", "data.image_root=synth", "data.num_classes=4"];
    let mut args = vec!["train", "--config", custom, "--out", "custom", "--quiet"];
    for d in &data {
        args.extend(["--set", d]);
    }
    args.extend(["--set", "data.image_size=32", "--set", "train.epochs=1", "--set", "data.batch_size=4"]);
    let out = wsol(&args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resnet18-f37072fd.pth not found: training from scratch"), "{stderr}");
    assert!(!stderr.contains("receptive") && !stderr.contains("map cells see"), "{stderr}");
    // Without pretrained_optional the same missing file is an error naming it.
    args.extend(["--set", "model.pretrained_optional=false"]);
    let strict: Vec<&str> = args.iter().map(|a| if *a == "custom" { "strict" } else { a }).collect();
    let err = wsol_err(&strict, dir);
    assert!(err.contains("resnet18-f37072fd.pth"), "{err}");

    let cfg = write_config(dir, "big", "");
    let c = cfg.to_str().unwrap();
    let out = wsol(&["train", "--config", c, "--set", "data.image_size=96", "--set", "train.epochs=0", "--quiet"], dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("map cells see 25x25 pixels") && stderr.contains("configs/custom.yaml"), "{stderr}");
    let out = wsol(&["train", "--config", c, "--set", "train.epochs=0", "--quiet"], dir);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("map cells see"), "no warning at 48 px");
}
