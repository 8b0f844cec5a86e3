//! A configured model on its device: the device, the model built from the registry with
//! its seeded initial and pretrained weights, the inference copy, checkpoint loading.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{safetensors::MmapedSafetensors, DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::config::Config;
use crate::models::{self, WsolModel};

/// The device named by `spec`; `tf32` switches candle's f32 GEMMs on the GPU to TF32,
/// `cudnn_benchmark` times cuDNN's convolution algorithms instead of asking its heuristics.
pub fn device(spec: &str, tf32: bool, cudnn_benchmark: bool) -> Result<Device> {
    candle_core::cuda::set_gemm_reduced_precision_f32(tf32);
    #[cfg(feature = "cudnn")]
    wsol_ops::conv::set_cudnn_benchmark(cudnn_benchmark);
    #[cfg(not(feature = "cudnn"))]
    let _ = cudnn_benchmark;
    let local_rank = match spec {
        "cuda" => crate::distributed::local_rank(|v| std::env::var(v).ok())?,
        _ => None,
    };
    let Some(ordinal) = cuda_ordinal(spec, local_rank)? else {
        return Ok(Device::Cpu);
    };
    Device::new_cuda(ordinal)
        .map_err(|e| anyhow::anyhow!("device {spec}: {e} (build with `--features cuda` on a machine with CUDA)"))
}

/// The GPU `spec` names (`None`: the CPU). `cuda` without an index is the process's
/// rank on its machine when a launcher gave one (one GPU per rank, as PyTorch's
/// `cuda:LOCAL_RANK`), else 0; `cuda:N` is used as given.
fn cuda_ordinal(spec: &str, local_rank: Option<(&str, usize)>) -> Result<Option<usize>> {
    if spec == "cpu" {
        return Ok(None);
    }
    if spec == "cuda" {
        return Ok(Some(local_rank.map_or(0, |(_, r)| r)));
    }
    let n = spec.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok());
    n.map(Some)
        .with_context(|| format!("device: expected `cpu`, `cuda` (the local rank's GPU) or `cuda:N`, got `{spec}`"))
}

pub struct Model {
    pub varmap: VarMap,
    pub net: Box<dyn WsolModel>,
}

/// Builds the configured model with seeded initial weights, then the pretrained ones if any.
pub fn build_model(cfg: &Config, device: &Device) -> Result<Model> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = crate::methods::build(&cfg.model, cfg.data.num_classes, vb)?;
    models::init::initialize(&varmap, cfg.seed, device)?;
    crate::methods::initialize(&cfg.model, &varmap, cfg.seed, device)?;
    if let Some(p) = cfg.model.pretrained.as_ref().filter(|_| pretrained_missing(cfg).is_none()) {
        models::pretrained::load(&varmap, net.as_ref(), p, cfg.model.pretrained_classifier)?;
    }
    Ok(Model { varmap, net })
}

/// With `model.pretrained_optional`, the warning that the weights file is absent (the
/// model then starts from its seeded initial weights).
pub fn pretrained_missing(cfg: &Config) -> Option<String> {
    let p = cfg.model.pretrained.as_ref()?;
    (cfg.model.pretrained_optional && !p.exists()).then(|| {
        format!(
            "warning: model.pretrained {} not found: training from scratch (model.pretrained_optional), every \
             layer at train.optimizer.lr (no new_layer_lr_mult); scripts/get_torchvision_weights.sh fetches torchvision's ImageNet weights on a connected machine",
            p.display()
        )
    })
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
    crate::methods::build(model, num_classes, VarBuilder::from_tensors(weights, DType::F32, &device))
}

/// Loads model weights into `varmap`, naming every missing or wrong-shaped tensor. A path
/// that is not a weights file (a run directory, a checkpoint's `.json` index, its
/// optimizer state) gets a message that says what it is and which file to pass.
pub fn load_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    check_weights_path(path)?;
    // SAFETY: the file is mapped read-only and not modified while mapped: checkpoints are
    // written under new names and renamed into place, never rewritten.
    let file = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
        anyhow::anyhow!(
            "cannot read checkpoint {}: {e} (expected a .safetensors file written by `wsol train`)",
            path.display()
        )
    })?;
    let data = varmap.data().lock().expect("varmap lock");
    let available: std::collections::HashSet<String> = file.tensors().into_iter().map(|(n, _)| n).collect();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let missing: Vec<&str> = names.iter().filter(|n| !available.contains(n.as_str())).map(|n| n.as_str()).collect();
    if !missing.is_empty() {
        bail!("checkpoint {} lacks {} tensor(s) of this model: {} (was it trained with another model.backbone/head/width?)", path.display(), missing.len(), missing.join(", "));
    }
    for name in names {
        let var = &data[name];
        let t = file
            .load(name, &Device::Cpu)
            .with_context(|| format!("checkpoint {}: cannot load `{name}`", path.display()))?;
        if t.dims() != var.dims() {
            bail!(
                "checkpoint {}: tensor `{name}` has shape {:?}, the model expects {:?}",
                path.display(),
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Refuses, with the file to pass instead, the paths of a run that hold no weights.
fn check_weights_path(path: &Path) -> Result<()> {
    let shown = path.display();
    if path.is_dir() {
        let ckpt = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_path_buf() };
        bail!(
            "checkpoint {shown} is a directory; pass a weights file such as {}",
            ckpt.join("last.safetensors").display()
        );
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if let Some(stem) = name.strip_suffix(".optim.safetensors") {
        let weights = path.with_file_name(format!("{stem}.safetensors"));
        bail!(
            "checkpoint {shown} is an optimizer-state file (momentum buffers); pass the weights file {}",
            weights.display()
        );
    }
    if let Some(stem) = name.strip_suffix(".json") {
        let tag = stem.trim_end_matches(".prev");
        bail!(
            "checkpoint {shown} is a checkpoint's index (counters and file names); pass the weights file {}",
            path.with_file_name(format!("{tag}.safetensors")).display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn cuda_without_an_index_is_the_local_rank() {
        assert_eq!(cuda_ordinal("cpu", Some(("LOCAL_RANK", 3))).unwrap(), None);
        assert_eq!(cuda_ordinal("cuda", None).unwrap(), Some(0));
        assert_eq!(cuda_ordinal("cuda", Some(("OMPI_COMM_WORLD_LOCAL_RANK", 3))).unwrap(), Some(3));
        assert_eq!(cuda_ordinal("cuda:1", Some(("LOCAL_RANK", 3))).unwrap(), Some(1));
        let err = cuda_ordinal("gpu0", None).unwrap_err().to_string();
        assert!(err.contains("expected `cpu`, `cuda` (the local rank's GPU) or `cuda:N`, got `gpu0`"), "{err}");
    }

    #[test]
    fn the_local_rank_comes_from_the_launchers_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |v: &str| pairs.iter().find(|(k, _)| *k == v).map(|(_, x)| x.to_string())
        };
        let lr = crate::distributed::local_rank;
        assert_eq!(lr(env(&[])).unwrap(), None);
        assert_eq!(lr(env(&[("SLURM_LOCALID", "2")])).unwrap(), Some(("SLURM_LOCALID", 2)));
        assert_eq!(
            lr(env(&[("OMPI_COMM_WORLD_LOCAL_RANK", "1"), ("LOCAL_RANK", "3")])).unwrap(),
            Some(("LOCAL_RANK", 3))
        );
        let err = lr(env(&[("LOCAL_RANK", "one")])).unwrap_err().to_string();
        assert_eq!(err, "LOCAL_RANK=one: expected the process's rank on its machine (0, 1, ...)");
    }

    /// The inference copy gives the variables' eval-mode logits bit for bit, and records no
    /// graph: nothing reaches the weights from its outputs, so its activations are freed
    /// as the pass goes on.
    #[test]
    fn inference_net_shares_the_weights_and_records_no_graph() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let cfg = ModelConfig { backbone: "resnet18".parse().unwrap(), ..Default::default() };
        let net = crate::methods::build(&cfg, 3, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
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
