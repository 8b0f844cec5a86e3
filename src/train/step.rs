//! One training step, the same for `wsol train` and `wsol bench train`: the method's batch
//! transform, forward, the method's loss, backward, the SGD update.

use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::{backprop::GradStore, DType, Device, Tensor, D};

use super::optimizer::Sgd;
use crate::config::ModelConfig;
use crate::draws::StepDraws;
use crate::models::WsolModel;

/// A batch as the loader gives it: normalized images `[n, 3, size, size]` and labels.
pub struct StepBatch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub size: usize,
}

/// What one step did.
pub struct StepResult {
    /// The batch's mean loss; not finite when the step stopped before its update.
    pub loss: f64,
    /// Images whose top-1 prediction was their label (0 without an update).
    pub correct: usize,
    /// Whether the weights were updated (false for a non-finite loss).
    pub updated: bool,
    pub times: StepTimes,
}

/// Where a step's time went (with `timed`, each phase waits for the device first).
#[derive(Debug, Default, Clone, Copy)]
pub struct StepTimes {
    /// Forward and loss, read back.
    pub forward: Duration,
    /// Host time to issue the forward pass (on a GPU, before it ran).
    pub forward_issue: Duration,
    pub backward: Duration,
    pub backward_issue: Duration,
    pub optimizer: Duration,
}

/// Trains `net` on `batch` for one step at learning rate `lr` (before the parameter groups'
/// multipliers). `draws` feed the method's random choices (HaS patches, CutMix boxes,
/// ADL's layers): [`StepDraws::seeded`] by the run's seed and the global step, so a
/// resumed run draws the same. A non-finite loss stops the step before backward; the
/// caller decides what it means.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &dyn WsolModel,
    sgd: &mut Sgd,
    method: &ModelConfig,
    draws: StepDraws,
    batch: StepBatch,
    device: &Device,
    lr: f64,
    timed: bool,
) -> Result<StepResult> {
    Ok(train_step_keeping_grads(net, sgd, method, draws, batch, device, lr, timed, false)?.0)
}

/// [`train_step`], also returning the step's gradients when `keep_grads` (for their
/// histograms): the same store the update read, kept a little longer, nothing copied.
#[allow(clippy::too_many_arguments)]
pub fn train_step_keeping_grads(
    net: &dyn WsolModel,
    sgd: &mut Sgd,
    method: &ModelConfig,
    draws: StepDraws,
    batch: StepBatch,
    device: &Device,
    lr: f64,
    timed: bool,
    keep_grads: bool,
) -> Result<(StepResult, Option<GradStore>)> {
    let StepBatch { mut images, labels, size } = batch;
    let n = labels.len();
    let StepDraws { batch: mut batch_draws, layers } = draws;
    let mix = crate::methods::transform_batch(method, &mut images, &labels, size, batch_draws.as_mut());
    let x = Tensor::from_vec(images, (n, 3, size, size), device)?;
    let y = Tensor::from_vec(labels, n, device)?;
    net.begin_step(layers);
    let t0 = Instant::now();
    let out = net.forward_t(&x, true)?;
    let loss = match &mix {
        None => net.loss(&out, &y)?,
        Some(m) => {
            let other = Tensor::from_vec(m.other_labels.clone(), n, device)?;
            ((net.loss(&out, &y)? * m.lambda)? + (net.loss(&out, &other)? * (1.0 - m.lambda))?)?
        }
    };
    let forward_issue = t0.elapsed();
    let loss_value = loss.to_scalar::<f32>()? as f64;
    let forward = t0.elapsed();
    let mut times = StepTimes { forward, forward_issue, ..Default::default() };
    if !loss_value.is_finite() {
        return Ok((StepResult { loss: loss_value, correct: 0, updated: false, times }, None));
    }
    let t1 = Instant::now();
    let grads = loss.backward()?;
    times.backward_issue = t1.elapsed();
    if timed {
        device.synchronize()?; // GPU work is asynchronous: time it, not its launch
    }
    times.backward = t1.elapsed();
    let t2 = Instant::now();
    sgd.step(&grads, lr)?;
    if timed {
        device.synchronize()?;
    }
    times.optimizer = t2.elapsed();
    let correct = out.logits.argmax(D::Minus1)?.eq(&y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
    let result = StepResult { loss: loss_value, correct, updated: true, times };
    Ok((result, keep_grads.then_some(grads)))
}
