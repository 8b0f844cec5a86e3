//! Checkpoints: `<tag>.safetensors` (model, with BN running statistics),
//! `<tag>.optim.safetensors` (momentum buffers) and `<tag>.json` (counters).
//!
//! Three files cannot be replaced atomically together, so each save writes its tensors
//! under step-stamped names (`<tag>-s<step>.*`, temp file + fsync + rename), then commits
//! `<tag>.json` naming them, and only then points the public names at them (hard links,
//! atomically renamed). The JSON it replaces stays as `<tag>.prev.json` with its files, so
//! a checkpoint damaged after it was written (a disk fault, a copy cut short) still has a
//! good predecessor; older stamped files are deleted. A run killed at any moment leaves a
//! JSON whose files all exist and belong to it; `--resume` reads those.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use wsol_eval::fs::{atomic_write, commit_tmp, tmp_path};

use super::loss_scale::LossScaleState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Epochs fully done; training resumes at this epoch index.
    pub epochs_done: usize,
    pub global_step: usize,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub seed: u64,
    /// Batches of epoch `epochs_done` already trained (an interrupted epoch), and the
    /// running sums of its log line.
    #[serde(default)]
    pub partial_epoch: Option<PartialEpoch>,
    /// The tensor files of this checkpoint (stamped names); absent in older checkpoints,
    /// which used the public names.
    #[serde(default)]
    pub model_file: Option<String>,
    #[serde(default)]
    pub optim_file: Option<String>,
    /// fp16's loss scaler (`train.precision: fp16`); absent in other precisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScaleState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PartialEpoch {
    pub batches_done: usize,
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub skipped: usize,
    /// Steps whose update the loss scaler skipped (fp16 overflows).
    #[serde(default)]
    pub overflows: usize,
}

/// The run directory a checkpoint folder belongs to: `RUN` for `RUN/checkpoints`, else the
/// folder itself.
pub fn run_dir_of(ckpt_dir: &Path) -> &Path {
    match ckpt_dir.file_name().is_some_and(|n| n == "checkpoints") {
        true => ckpt_dir.parent().unwrap_or(Path::new(".")),
        false => ckpt_dir,
    }
}

/// Public names: (model, optim, state).
pub fn paths(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{tag}.safetensors")),
        dir.join(format!("{tag}.optim.safetensors")),
        dir.join(format!("{tag}.json")),
    )
}

/// The state file of the checkpoint saved before `<tag>.json`.
pub fn previous_state_path(dir: &Path, tag: &str) -> PathBuf {
    dir.join(format!("{tag}.prev.json"))
}

/// The (model, optim) files a loaded state belongs to.
pub fn files_of(dir: &Path, tag: &str, state: &TrainState) -> (PathBuf, PathBuf) {
    let (model, optim, _) = paths(dir, tag);
    (state.model_file.as_ref().map_or(model, |f| dir.join(f)), state.optim_file.as_ref().map_or(optim, |f| dir.join(f)))
}

pub fn save(dir: &Path, tag: &str, varmap: &VarMap, optim: &HashMap<String, Tensor>, state: &TrainState) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = format!("{tag}-s{:09}", state.global_step);
    let (model_file, optim_file) = (format!("{stamp}.safetensors"), format!("{stamp}.optim.safetensors"));
    write_tensors(&dir.join(&model_file), |tmp| varmap.save(tmp))?;
    write_tensors(&dir.join(&optim_file), |tmp| candle_core::safetensors::save(optim, tmp))?;

    let state =
        TrainState { model_file: Some(model_file.clone()), optim_file: Some(optim_file.clone()), ..state.clone() };
    let (model_path, optim_path, state_path) = paths(dir, tag);
    let previous = previous_state_path(dir, tag);
    // Both JSONs are whole at every moment: the predecessor is copied, never moved.
    let mut keep = vec![model_file.clone(), optim_file.clone()];
    if let Ok(old) = load_state(&state_path) {
        if old.global_step != state.global_step && old.model_file.is_some() {
            atomic_write(&previous, serde_json::to_string_pretty(&old)?.as_bytes())?;
        }
    }
    if let Ok(prev) = load_state(&previous) {
        keep.extend(prev.model_file.into_iter().chain(prev.optim_file));
    }
    atomic_write(&state_path, serde_json::to_string_pretty(&state)?.as_bytes())?;

    publish(&dir.join(&model_file), &model_path)?;
    publish(&dir.join(&optim_file), &optim_path)?;
    // Stamped files named by neither JSON are no longer needed.
    let prefix = format!("{tag}-s");
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".safetensors") && !keep.contains(&name) {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    Ok(())
}

/// Writes a tensor file through a temp file; on failure (a full disk, say) the temp file
/// is removed and the error names the file.
fn write_tensors(path: &Path, write: impl FnOnce(&Path) -> candle_core::Result<()>) -> Result<()> {
    let tmp = tmp_path(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write checkpoint {}: {e}", path.display());
    }
    commit_tmp(&tmp, path)
}

/// Loads a checkpoint's model weights and optimizer state; an error names the damaged file.
pub fn load(
    state_path: &Path,
    varmap: &VarMap,
    load_optim_state: impl FnOnce(HashMap<String, Tensor>) -> Result<()>,
) -> Result<TrainState> {
    let state = load_state(state_path)?;
    let dir = state_path.parent().unwrap_or(Path::new("."));
    let tag = state_path.file_name().unwrap_or_default().to_string_lossy();
    let tag = tag.trim_end_matches(".json").trim_end_matches(".prev");
    let (model_path, optim_path) = files_of(dir, tag, &state);
    crate::runtime::load_weights(varmap, &model_path)?;
    load_optim_state(load_optim(&optim_path)?).with_context(|| format!("checkpoint {}", optim_path.display()))?;
    Ok(state)
}

/// Makes `public` name the same file as `stamped` (hard link, or a copy where links are
/// not supported), replacing it atomically.
fn publish(stamped: &Path, public: &Path) -> Result<()> {
    let tmp = tmp_path(public);
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(stamped, &tmp).is_err() {
        std::fs::copy(stamped, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, public).with_context(|| format!("cannot rename {} to {}", tmp.display(), public.display()))
}

pub fn load_optim(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| anyhow::anyhow!("cannot read optimizer state {}: {e}", path.display()))
}

pub fn load_state(path: &Path) -> Result<TrainState> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a wsol training state", path.display()))
}

#[cfg(test)]
mod tests {
    use candle_core::DType;
    use candle_nn::VarBuilder;

    use super::*;

    fn state(step: usize) -> TrainState {
        TrainState {
            epochs_done: step,
            global_step: step,
            best_score: None,
            best_epoch: None,
            seed: 0,
            partial_epoch: None,
            model_file: None,
            optim_file: None,
            loss_scale: None,
        }
    }

    fn weights(varmap: &VarMap) -> Vec<f32> {
        varmap.all_vars()[0].as_tensor().flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn the_loss_scale_is_saved_and_loaded_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let _w = vb.get(2, "w").unwrap();
        let ls = LossScaleState { scale: 3.0517578e-5, growth_tracker: 1234 };
        let st = TrainState { loss_scale: Some(ls), ..state(5) };
        save(dir.path(), "last", &varmap, &HashMap::new(), &st).unwrap();
        let back = load(&dir.path().join("last.json"), &varmap, |_| Ok(())).unwrap();
        assert_eq!(back.loss_scale, Some(ls));
        assert_eq!(back.loss_scale.unwrap().scale.to_bits(), ls.scale.to_bits());
        // Without a scaler the key is absent, and a checkpoint without it loads as None.
        save(dir.path(), "last", &varmap, &HashMap::new(), &state(6)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("last.json")).unwrap();
        assert!(!text.contains("loss_scale"), "{text}");
        assert_eq!(load_state(&dir.path().join("last.json")).unwrap().loss_scale, None);
    }

    #[test]
    fn a_save_interrupted_before_its_json_leaves_the_previous_checkpoint_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let w = vb.get((2, 2), "w").unwrap();
        let optim = HashMap::new();
        varmap.all_vars()[0].set(&Tensor::full(1f32, (2, 2), &Device::Cpu).unwrap()).unwrap();
        save(d, "last", &varmap, &optim, &state(1)).unwrap();
        varmap.all_vars()[0].set(&Tensor::full(2f32, (2, 2), &Device::Cpu).unwrap()).unwrap();
        save(d, "last", &varmap, &optim, &state(2)).unwrap();
        // The current and the previous stamped sets remain, each named by its JSON.
        let names = || {
            let mut v: Vec<String> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(),
            [
                "last-s000000001.optim.safetensors",
                "last-s000000001.safetensors",
                "last-s000000002.optim.safetensors",
                "last-s000000002.safetensors",
                "last.json",
                "last.optim.safetensors",
                "last.prev.json",
                "last.safetensors"
            ]
        );
        let prev = load(&previous_state_path(d, "last"), &varmap, |_| Ok(())).unwrap();
        assert_eq!((prev.global_step, weights(&varmap)), (1, vec![1.0; 4]));
        // A third save killed after writing its model file: step-2 JSON and files still agree.
        varmap.all_vars()[0].set(&Tensor::full(3f32, (2, 2), &Device::Cpu).unwrap()).unwrap();
        varmap.save(d.join("last-s000000003.safetensors")).unwrap();
        let st = load_state(&d.join("last.json")).unwrap();
        assert_eq!(st.global_step, 2);
        let (model, _) = files_of(d, "last", &st);
        crate::runtime::load_weights(&varmap, &model).unwrap();
        assert_eq!(weights(&varmap), vec![2.0; 4]);
        // A complete third save retires step 1.
        save(d, "last", &varmap, &optim, &state(3)).unwrap();
        assert!(!names().iter().any(|n| n.contains("-s000000001")), "{:?}", names());
        assert_eq!(load_state(&previous_state_path(d, "last")).unwrap().global_step, 2);
        drop(w);
    }
}
