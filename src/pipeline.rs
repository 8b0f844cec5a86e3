//! Set-up shared by `train`, `eval` and `cam`: device, dataset, model.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::config::Config;
use crate::data::{self, Dataset};
use crate::models::{self, WsolModel};

/// The device named by `spec`; `tf32` switches candle's f32 GEMMs on the GPU to TF32,
/// `cudnn_benchmark` times cuDNN's convolution algorithms instead of asking its heuristics.
pub fn device(spec: &str, tf32: bool, cudnn_benchmark: bool) -> Result<Device> {
    candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
    #[cfg(feature = "cudnn")]
    models::set_cudnn_benchmark(cudnn_benchmark);
    #[cfg(not(feature = "cudnn"))]
    let _ = cudnn_benchmark;
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = spec
        .strip_prefix("cuda:")
        .or_else(|| (spec == "cuda").then_some("0"))
        .and_then(|n| n.parse::<usize>().ok())
        .with_context(|| format!("device: expected `cpu` or `cuda:N`, got `{spec}`"))?;
    Device::new_cuda(ordinal)
        .map_err(|e| anyhow::anyhow!("device {spec}: {e} (build with `--features cuda` on a machine with CUDA)"))
}

/// Makes sure the configured dataset exists: the synthetic one is generated on first use.
pub fn prepare_data(cfg: &Config, quiet: bool) -> Result<()> {
    let d = &cfg.data;
    let marker = d.metadata_root.join(&d.train_split).join("image_ids.txt");
    if d.format == "synthetic" && !marker.exists() {
        let s = &d.synthetic;
        if !quiet {
            eprintln!(
                "generating the synthetic dataset ({} classes, {}/{}/{} images of {}px) in {}",
                d.num_classes,
                s.train,
                s.val,
                s.test,
                s.size,
                d.image_root.display()
            );
        }
        let opts = data::SynthOptions {
            num_classes: d.num_classes,
            train: s.train,
            val: s.val,
            test: s.test,
            size: s.size,
            seed: s.seed,
            masks: false,
        };
        data::synth::generate(&d.image_root, &d.metadata_root, &opts)?;
    }
    Ok(())
}

pub fn split_exists(cfg: &Config, split: &str) -> bool {
    if cfg.data.format == "cub" {
        return matches!(split, "train" | "test") && data::cub::is_cub_root(&cfg.data.metadata_root);
    }
    if cfg.data.format == "folder" {
        return cfg.data.image_root.join(split).is_dir();
    }
    cfg.data.metadata_root.join(split).join("image_ids.txt").exists()
}

pub fn load_split(cfg: &Config, split: &str) -> Result<Arc<Dataset>> {
    let root = &cfg.data.metadata_root;
    if cfg.data.format == "folder" {
        let meta = data::folder::read_folder_split(&cfg.data.image_root, split, cfg.data.num_classes)?;
        if meta.samples.is_empty() {
            bail!("{}: split `{split}` has no .jpg/.png images", cfg.data.image_root.join(split).display());
        }
        return Ok(Arc::new(Dataset { image_root: cfg.data.image_root.clone(), meta, masks: None }));
    }
    if cfg.data.format == "cub" {
        let meta = data::cub::read_cub_split(root, split, cfg.data.num_classes)?;
        if meta.samples.is_empty() {
            bail!("{}: CUB split `{split}` has no images", root.display());
        }
        return Ok(Arc::new(Dataset { image_root: cfg.data.image_root.clone(), meta, masks: None }));
    }
    if !root.join(split).is_dir() {
        bail!("split `{split}` not found: expected directory {} with image_ids.txt, class_labels.txt, image_sizes.txt (data.metadata_root = {})", root.join(split).display(), root.display());
    }
    if data::masks::is_mask_split(root, split)? {
        return load_mask_split(cfg, split);
    }
    let meta = data::read_split(root, split, cfg.data.num_classes)?;
    if meta.samples.is_empty() {
        bail!("{}: split `{split}` lists no images", root.join(split).join("image_ids.txt").display());
    }
    Ok(Arc::new(Dataset { image_root: cfg.data.image_root.clone(), meta, masks: None }))
}

/// A mask split (OpenImages): images and labels for training and classification, the
/// masks for PxAP. Its metadata has no image sizes and no boxes.
fn load_mask_split(cfg: &Config, split: &str) -> Result<Arc<Dataset>> {
    let masks = data::masks::read_mask_split(&cfg.data.metadata_root, split)?;
    let labels = masks.localization.with_file_name(data::metadata::CLASS_LABELS);
    let mut samples = Vec::with_capacity(masks.samples.len());
    for s in &masks.samples {
        if s.label >= cfg.data.num_classes {
            bail!(
                "{}: label {} of image `{}` out of range: expected < data.num_classes = {}",
                labels.display(),
                s.label,
                s.image_id,
                cfg.data.num_classes
            );
        }
        samples.push(data::Sample { image_id: s.image_id.clone(), label: s.label, size: (0, 0), boxes: Vec::new() });
    }
    let root = cfg.data.mask_root.clone().unwrap_or_else(|| cfg.data.image_root.clone());
    Ok(Arc::new(Dataset {
        image_root: cfg.data.image_root.clone(),
        meta: data::SplitMetadata { split: split.to_string(), samples },
        masks: Some(data::MaskSet { root, split: masks }),
    }))
}

pub struct Model {
    pub varmap: VarMap,
    pub net: Box<dyn WsolModel>,
}

/// Builds the configured model with seeded initial weights, then the pretrained ones if any.
pub fn build_model(cfg: &Config, device: &Device) -> Result<Model> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = models::build(&cfg.model, cfg.data.num_classes, vb)?;
    models::init::initialize(&varmap, cfg.seed, device)?;
    if let Some(p) = &cfg.model.pretrained {
        models::pretrained::load(&varmap, net.as_ref(), p, cfg.model.pretrained_classifier)?;
    }
    Ok(Model { varmap, net })
}

impl Model {
    /// The network for evaluation: [`inference_net`] on these weights. Take it after
    /// loading or training them.
    pub fn inference_net(&self, cfg: &Config) -> Result<Box<dyn WsolModel>> {
        inference_net(&self.varmap, &cfg.model, cfg.data.num_classes)
    }
}

/// The network on detached handles of `varmap`'s weights (no copy), for evaluation.
/// candle records every op with a variable among its inputs, so a forward pass on the
/// variables kept all of a batch's activations alive until its outputs were dropped
/// (PyTorch has `no_grad` for this): 2.4 GB for ResNet-50 at batch 8, against 0.26 GB
/// here. Gradient CAM methods still differentiate with respect to the activations.
pub fn inference_net(
    varmap: &VarMap,
    model: &crate::config::ModelConfig,
    num_classes: usize,
) -> Result<Box<dyn WsolModel>> {
    let weights: std::collections::HashMap<String, candle_core::Tensor> =
        varmap.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.as_detached_tensor())).collect();
    let device = weights.values().next().map_or(Device::Cpu, |t| t.device().clone());
    models::build(model, num_classes, VarBuilder::from_tensors(weights, DType::F32, &device))
}

pub fn load_checkpoint(model: &Model, path: &Path) -> Result<()> {
    crate::train::checkpoint::load_weights(&model.varmap, path)
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;
    use crate::config::ModelConfig;

    /// The inference copy gives the variables' eval-mode logits bit for bit, and records no
    /// graph: nothing reaches the weights from its outputs, so its activations are freed
    /// as the pass goes on.
    #[test]
    fn inference_net_shares_the_weights_and_records_no_graph() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let cfg = ModelConfig { backbone: "resnet18".into(), ..Default::default() };
        let net = models::build(&cfg, 3, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        models::init::initialize(&varmap, 1, &dev).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev).unwrap();
        let frozen = inference_net(&varmap, &cfg, 3).unwrap();
        let (ours, theirs) = (frozen.forward_t(&x, false).unwrap(), net.forward_t(&x, false).unwrap());
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&ours.logits), flat(&theirs.logits));
        let weight = varmap.data().lock().unwrap()["fc.weight"].as_tensor().clone();
        assert!(theirs.logits.sum_all().unwrap().backward().unwrap().get(&weight).is_some());
        assert!(ours.logits.sum_all().unwrap().backward().unwrap().get(&weight).is_none());
        // Trained weights are seen without taking a new copy (the storage is shared).
        varmap.data().lock().unwrap()["fc.bias"].set(&Tensor::ones(3, DType::F32, &dev).unwrap()).unwrap();
        let moved = frozen.forward_t(&x, false).unwrap();
        assert_ne!(flat(&moved.logits), flat(&ours.logits));
    }
}
