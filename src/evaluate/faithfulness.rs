//! Faithfulness metrics on a model (`eval.faithfulness`): wsol-eval plans each image's
//! perturbed inputs; here the model scores them, in batches of the evaluation's size.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::models::WsolModel;
use wsol_eval::faithfulness::{FaithfulnessConfig, ImageFaithfulness, Plan};

/// Softmax probabilities of `classes[i]` for each input of `x` (`[n, c, h, w]`).
pub fn class_scores(model: &dyn WsolModel, x: &Tensor, classes: &[usize]) -> Result<Vec<f32>> {
    let out = model.forward_t(x, false)?;
    let probs: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&out.logits)?.to_vec2()?;
    Ok(probs.iter().zip(classes).map(|(p, &c)| p[c]).collect())
}

/// The numbers of `n` images (`images`: `[n, c, size, size]` as the model takes them,
/// `maps`: `[n, size, size]` in [0, 1]) for the map's class of each, given its score on
/// the unperturbed image (`base`); `keys` tell the images apart for the ROAD noise. At
/// most `batch` perturbed inputs go through the model at once.
#[allow(clippy::too_many_arguments)]
pub fn score_images(
    model: &dyn WsolModel,
    cfg: &FaithfulnessConfig,
    images: &[f32],
    maps: &[f32],
    (c, size): (usize, usize),
    classes: &[usize],
    base: &[f32],
    keys: &[u64],
    device: &Device,
    batch: usize,
) -> Result<(Vec<ImageFaithfulness>, u64)> {
    let (plane, n) = (size * size, classes.len());
    ensure!(images.len() == n * c * plane && maps.len() == n * plane, "faithfulness: images and maps of other sizes");
    let plans: Vec<Plan> = (0..n)
        .map(|i| {
            let image = &images[i * c * plane..(i + 1) * c * plane];
            Plan::new(cfg, image, &maps[i * plane..(i + 1) * plane], c, size, size, keys[i])
        })
        .collect();
    let jobs: Vec<(usize, usize)> =
        plans.iter().enumerate().flat_map(|(i, p)| (0..p.len()).map(move |j| (i, j))).collect();
    let mut scores: Vec<Vec<f32>> = plans.iter().map(|p| vec![0.0; p.len()]).collect();
    for chunk in jobs.chunks(batch.max(1)) {
        let mut inputs = vec![0.0f32; chunk.len() * c * plane];
        // ROAD's inputs each solve a linear system: worth the cores.
        inputs.par_chunks_mut(c * plane).zip(chunk).for_each(|(out, &(i, j))| plans[i].input(j, out));
        let x = Tensor::from_vec(inputs, (chunk.len(), c, size, size), device)?;
        let of: Vec<usize> = chunk.iter().map(|&(i, _)| classes[i]).collect();
        for (&(i, j), s) in chunk.iter().zip(class_scores(model, &x, &of)?) {
            scores[i][j] = s;
        }
    }
    let results = plans.iter().zip(&scores).zip(base).map(|((p, s), &b)| p.finish(b, s)).collect();
    Ok((results, jobs.len() as u64))
}
