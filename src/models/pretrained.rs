//! `model.pretrained`: ImageNet (or any) weights under torchvision names, from
//! `.safetensors` or a PyTorch `.pth` (as far as candle's pickle reader goes), loaded
//! over the seeded initialization. Every tensor of the backbone must be there with its
//! shape; the task's new layers (the head) keep their initialization, and the file's own
//! classifier is expected to be left over. Anything else is an error that names the
//! tensors, because a silently half-loaded backbone trains but reproduces nothing.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::WsolModel;

/// torchvision's ImageNet classifiers (ResNet / Inception `fc`, VGG `classifier`, the
/// Inception auxiliary head), the Inception blocks after Mixed_6e (BAS's Inception-v3 has
/// Mixed_7a-7c: they load) and timm's DeiT heads (`head`, the distilled `head_dist`):
/// replaced by the WSOL head, so expected to be left over.
const IMAGENET_HEADS: [&str; 7] = ["fc.", "_fc.", "classifier.", "AuxLogits.", "Mixed_7", "head.", "head_dist."];

/// With `classifier`, the file's ImageNet classifier (`fc.*`, or `_fc.*` in EfficientNet
/// files) also goes into the CAM head's `fc.*`, so a pretrained classifier's own CAMs can
/// be looked at and scored without training (`model.pretrained_classifier`).
pub fn load(varmap: &VarMap, model: &dyn WsolModel, path: &Path, classifier: bool) -> Result<()> {
    let file = read(path)?;
    if let (Some(deit), Some(w)) = (model.backbone().transformer(), file.get("patch_embed.proj.weight")) {
        // Said plainly, rather than as the shapes of several tensors that do not fit.
        let theirs = w.dims().last().copied().unwrap_or(0);
        if theirs != deit.patch_size() {
            bail!(
                "model.pretrained {}: its patch embedding is for {theirs}-pixel patches, this model's model.patch_size is {} (set model.patch_size: {theirs} to load it, or train from scratch without model.pretrained)",
                path.display(),
                deit.patch_size()
            );
        }
    }
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    for name in names {
        if classifier && name.starts_with("fc.") {
            let var = &data[name];
            let t = file.get(name.as_str()).or_else(|| file.get(&format!("_{name}"))).with_context(|| {
                format!("model.pretrained_classifier: {} has no `{name}` (a GAP + linear classifier)", path.display())
            })?;
            if t.dims() != var.dims() {
                bail!(
                    "model.pretrained_classifier: the classifier in {} has shape {:?}, this head {:?} (set data.num_classes to its {} classes)",
                    path.display(),
                    t.dims(),
                    var.dims(),
                    t.dims()[0]
                );
            }
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
            continue;
        }
        if model.is_new_layer(name) {
            continue;
        }
        let var = &data[name];
        match file.get(name.as_str()) {
            None => missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => wrong.push(format!("{name} {:?} (model: {:?})", t.dims(), var.dims())),
            Some(t) => var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?,
        }
    }
    let leftover = |k: &str| k.ends_with("num_batches_tracked") || IMAGENET_HEADS.iter().any(|p| k.starts_with(p));
    let mut unexpected: Vec<&String> =
        file.keys().filter(|k| !data.contains_key(*k) && !leftover(k) && !model.is_new_layer(k)).collect();
    unexpected.sort();
    let list = |v: &[String]| {
        v.iter().take(8).cloned().collect::<Vec<_>>().join(", ") + if v.len() > 8 { ", ..." } else { "" }
    };
    if !missing.is_empty() || !wrong.is_empty() || !unexpected.is_empty() {
        let mut msg = format!("model.pretrained {} does not fit this model:", path.display());
        if !missing.is_empty() {
            msg += &format!(" {} missing ({})", missing.len(), list(&missing));
        }
        if !wrong.is_empty() {
            msg += &format!(" {} of another shape ({})", wrong.len(), list(&wrong));
        }
        if !unexpected.is_empty() {
            let u: Vec<String> = unexpected.iter().map(|s| s.to_string()).collect();
            msg += &format!(" {} unexpected ({})", u.len(), list(&u));
        }
        let naming = if model.backbone().transformer().is_some() {
            format!("timm's names and widths for {} (a timm/DeiT file of this size)", model.backbone().out_channels())
        } else {
            "torchvision names for this backbone".to_string()
        };
        bail!("{msg}; expected {naming} (is it the right model.backbone?)");
    }
    Ok(())
}

/// Name -> tensor from `.safetensors`, or a `.pth` state dict (plain, or under
/// `state_dict`; a DataParallel `module.` prefix is dropped).
fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let tensors: Vec<(String, Tensor)> = if is_safetensors {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| {
                anyhow::anyhow!("model.pretrained {}: not a readable .safetensors file ({e})", path.display())
            })?
            .into_iter()
            .collect()
    } else if super::pth_legacy::is_legacy(path) {
        super::pth_legacy::read(path, None)
            .and_then(|t| if t.is_empty() { super::pth_legacy::read(path, Some("state_dict")) } else { Ok(t) })
            .map_err(|e| {
                anyhow::anyhow!("model.pretrained {}: not a readable legacy PyTorch state dict ({e:#})", path.display())
            })?
    } else {
        let plain = candle_core::pickle::read_all(path);
        match plain {
            Ok(t) if !t.is_empty() => t,
            // DeiT's own release files keep the state dict under `model`.
            _ => candle_core::pickle::read_all_with_key(path, Some("state_dict"))
                .ok()
                .filter(|t| !t.is_empty())
                .map_or_else(|| candle_core::pickle::read_all_with_key(path, Some("model")), Ok)
                .with_context(|| {
                    format!("model.pretrained {}: not a readable PyTorch state dict (.pth)", path.display())
                })?,
        }
    };
    if tensors.is_empty() {
        bail!("model.pretrained {}: the file holds no tensors", path.display());
    }
    Ok(tensors.into_iter().map(|(k, v)| (k.strip_prefix("module.").map(str::to_string).unwrap_or(k), v)).collect())
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use candle_nn::VarBuilder;

    use super::*;
    use crate::config::ModelConfig;

    fn resnet(seed: u64) -> (VarMap, Box<dyn WsolModel>) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = ModelConfig { backbone: "resnet18".parse().unwrap(), ..Default::default() };
        let net = crate::methods::build(&cfg, 5, vb).unwrap();
        crate::models::init::initialize(&varmap, seed, &Device::Cpu).unwrap();
        (varmap, net)
    }

    /// A torchvision-style file from a model's weights: its own 1000-class `fc`, BN
    /// `num_batches_tracked` buffers.
    fn torchvision_file(
        varmap: &VarMap,
        dir: &Path,
        edit: impl Fn(&mut HashMap<String, Tensor>),
    ) -> std::path::PathBuf {
        let mut t: HashMap<String, Tensor> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        t.insert("fc.weight".into(), Tensor::zeros((1000, 512), DType::F32, &Device::Cpu).unwrap());
        t.insert("fc.bias".into(), Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap());
        t.insert("layer1.0.bn1.num_batches_tracked".into(), Tensor::new(&[7i64], &Device::Cpu).unwrap());
        edit(&mut t);
        let path = dir.join("resnet18.safetensors");
        candle_core::safetensors::save(&t, &path).unwrap();
        path
    }

    fn get(varmap: &VarMap, name: &str) -> Vec<f32> {
        varmap.data().lock().unwrap()[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn loads_the_backbone_and_keeps_the_new_head() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = resnet(1);
        let path = torchvision_file(&source, dir.path(), |_| {});
        let (target, net) = resnet(2);
        let head_before = get(&target, "fc.weight");
        load(&target, net.as_ref(), &path, false).unwrap();
        for name in ["conv1.weight", "layer3.0.downsample.0.weight", "layer4.1.bn2.running_var"] {
            assert_eq!(get(&target, name), get(&source, name), "{name}");
        }
        assert_eq!(get(&target, "fc.weight"), head_before, "the 5-class head keeps its initialization");
    }

    #[test]
    fn the_pretrained_classifier_is_loaded_when_asked_and_must_fit() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = resnet(1);
        let (target, net) = resnet(2);
        let err = load(&target, net.as_ref(), &torchvision_file(&source, dir.path(), |_| {}), true).unwrap_err();
        assert!(err.to_string().contains("set data.num_classes to its 1000 classes"), "{err}");
        let five = torchvision_file(&source, dir.path(), |t| {
            t.insert("fc.weight".into(), Tensor::full(0.25f32, (5, 512), &Device::Cpu).unwrap());
            t.insert("fc.bias".into(), Tensor::full(-1f32, 5, &Device::Cpu).unwrap());
        });
        load(&target, net.as_ref(), &five, true).unwrap();
        assert_eq!(get(&target, "fc.weight"), vec![0.25; 5 * 512]);
        assert_eq!(get(&target, "fc.bias"), vec![-1.0; 5]);
    }

    #[test]
    fn missing_reshaped_and_unexpected_tensors_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (source, _) = resnet(1);
        let path = torchvision_file(&source, dir.path(), |t| {
            t.remove("layer2.1.conv2.weight");
            t.insert("bn1.weight".into(), Tensor::zeros(32, DType::F32, &Device::Cpu).unwrap());
            t.insert("layer5.0.conv1.weight".into(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
        });
        let (target, net) = resnet(2);
        let err = load(&target, net.as_ref(), &path, false).unwrap_err().to_string();
        for part in [
            "1 missing (layer2.1.conv2.weight)",
            "bn1.weight [32] (model: [64])",
            "1 unexpected (layer5.0.conv1.weight)",
        ] {
            assert!(err.contains(part), "{err}");
        }
        let junk = dir.path().join("junk.pth");
        std::fs::write(&junk, b"not a pickle").unwrap();
        assert!(load(&target, net.as_ref(), &junk, false).unwrap_err().to_string().contains("junk.pth"));
    }

    #[test]
    fn resnet18_keeps_stride_16() {
        let (_vm, net) = resnet(0);
        let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let out = net.forward_t(&x, false).unwrap();
        assert_eq!(out.features.dims(), [1, 512, 4, 4]);
        assert_eq!(out.logits.dims(), [1, 5]);
        assert_eq!(net.backbone().layers(), ["maxpool", "layer1", "layer2", "layer3", "layer4"]);
    }

    /// `tests/fixtures/pth` (scripts/make_pth_fixture.py): the same weights as torch.save
    /// zip checkpoints (plain, and under `state_dict` with `module.` names) and as
    /// safetensors; all three must load the same values.
    #[test]
    fn pth_and_safetensors_give_the_same_weights() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pth");
        let loaded = |file: &str| -> Vec<(String, Vec<f32>)> {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            let net = crate::methods::build(&ModelConfig { width: 2, ..Default::default() }, 3, vb).unwrap();
            crate::models::init::initialize(&varmap, 0, &Device::Cpu).unwrap();
            load(&varmap, net.as_ref(), &dir.join(file), false).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
            names.sort();
            names.into_iter().filter(|n| !n.starts_with("fc.")).map(|n| (n.clone(), get(&varmap, &n))).collect()
        };
        let reference = loaded("tiny_w2.safetensors");
        assert_eq!(reference.len(), 20);
        // features.0.weight[k] = 0.5 sin(0.7 k) in the generator.
        let first = &reference.iter().find(|(n, _)| n == "features.0.weight").unwrap().1;
        assert!((first[3] - 0.5 * (2.1f64).sin() as f32).abs() < 1e-7);
        assert_eq!(loaded("tiny_w2.pth"), reference);
        assert_eq!(loaded("tiny_w2_wrapped.pth"), reference);
        // torch.save(..., _use_new_zipfile_serialization=False) of the same dict (torch 2.15).
        assert_eq!(loaded("tiny_w2_legacy.pth"), reference);
    }
}
