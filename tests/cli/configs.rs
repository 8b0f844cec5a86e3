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
    assert_eq!(grid, 54, "3 datasets x 3 backbones x 6 methods");
    assert_eq!(pairs.len(), 18);
    for ((backbone, head), model_cfg) in pairs {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = wsol::methods::build(&model_cfg, 10, vb).unwrap_or_else(|e| panic!("{backbone}/{head}: {e:#}"));
        let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let out = model.forward_t(&x, false).unwrap();
        assert_eq!(out.logits.dims(), [1, 10], "{backbone}/{head}");
    }
}
