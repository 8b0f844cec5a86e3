//! Checkpoints: `<tag>.safetensors` (model, with BN running statistics),
//! `<tag>.optim.safetensors` (momentum buffers) and `<tag>.json` (counters). Each file
//! is written to a temp file, fsynced and renamed; the JSON goes last and carries the
//! epoch, so a run killed mid-write resumes from the previous complete checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{safetensors::MmapedSafetensors, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::util::{atomic_write, commit_tmp, tmp_path};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Epochs fully done; training resumes at this epoch index.
    pub epochs_done: usize,
    pub global_step: usize,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub seed: u64,
}

pub fn paths(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{tag}.safetensors")),
        dir.join(format!("{tag}.optim.safetensors")),
        dir.join(format!("{tag}.json")),
    )
}

pub fn save(dir: &Path, tag: &str, varmap: &VarMap, optim: &HashMap<String, Tensor>, state: &TrainState) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (model_path, optim_path, state_path) = paths(dir, tag);
    let tmp = tmp_path(&model_path);
    varmap.save(&tmp).with_context(|| format!("cannot write checkpoint {}", tmp.display()))?;
    commit_tmp(&tmp, &model_path)?;
    let tmp = tmp_path(&optim_path);
    candle_core::safetensors::save(optim, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    commit_tmp(&tmp, &optim_path)?;
    atomic_write(&state_path, serde_json::to_string_pretty(state)?.as_bytes())
}

/// Loads model weights into `varmap`, naming every missing or wrong-shaped tensor.
pub fn load_weights(varmap: &VarMap, path: &Path) -> Result<()> {
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

pub fn load_optim(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| anyhow::anyhow!("cannot read optimizer state {}: {e}", path.display()))
}

pub fn load_state(path: &Path) -> Result<TrainState> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a wsol training state", path.display()))
}
