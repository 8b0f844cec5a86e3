//! One training step, the same for `wsol train` and `wsol bench train`: the method's batch
//! transform, forward, the method's loss, backward, the SGD update.

use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::{backprop::GradStore, DType, Device, Tensor, D};

use super::optimizer::Optimizer;
use crate::config::ModelConfig;
use crate::distributed::Collective;
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
    /// Images the step trained on (over all ranks in a distributed step).
    pub seen: usize,
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
    /// Sums over the ranks (loss, gradients) in a distributed step.
    pub allreduce: Duration,
}

/// Trains `net` on `batch` for one step at learning rate `lr` (before the parameter groups'
/// multipliers). `draws` feed the method's random choices (HaS patches, CutMix boxes,
/// ADL's layers): [`StepDraws::seeded`] by the run's seed and the global step, so a
/// resumed run draws the same. A non-finite loss stops the step before backward; the
/// caller decides what it means.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &dyn WsolModel,
    sgd: &mut Optimizer,
    method: &ModelConfig,
    draws: StepDraws,
    batch: StepBatch,
    device: &Device,
    lr: f64,
    timed: bool,
) -> Result<StepResult> {
    Ok(train_step_keeping_grads(net, sgd, method, draws, batch, device, lr, timed, false, None, false)?.0)
}

/// [`train_step`], also returning the step's gradients when `keep_grads` (for their
/// histograms): the same store the update read, kept a little longer, nothing copied.
/// With `dist`, `batch` is this rank's shard of the global batch: the loss and hits are
/// summed over the ranks before backward (so every rank sees the global loss and skips a
/// non-finite one together), and the gradients are averaged over the global batch before
/// the update, so every rank makes the single process's update. With `sync_bn` too,
/// training-mode batch norm takes its statistics over the global batch.
#[allow(clippy::too_many_arguments)]
pub fn train_step_keeping_grads(
    net: &dyn WsolModel,
    sgd: &mut Optimizer,
    method: &ModelConfig,
    draws: StepDraws,
    batch: StepBatch,
    device: &Device,
    lr: f64,
    timed: bool,
    keep_grads: bool,
    dist: Option<&dyn Collective>,
    sync_bn: bool,
) -> Result<(StepResult, Option<GradStore>)> {
    let StepBatch { mut images, labels, size } = batch;
    let n = labels.len();
    let StepDraws { batch: mut batch_draws, layers } = draws;
    let t0 = Instant::now();
    // Batch-norm statistics over the ranks (`train.sync_bn`): every rank's forward and
    // backward make the same sums, so none may sit a step out.
    let sync = dist.filter(|_| sync_bn);
    if let Some(c) = sync {
        let mut empty = [(n == 0) as u64];
        c.all_reduce_sum_u64(&mut empty)?;
        if empty[0] > 0 {
            return Err(crate::distributed::Agreed(format!(
                "rank {}: train.sync_bn: {} rank(s) got no image in this step (a split smaller than the global batch, or data.skip_bad_images left a shard empty), and synchronized batch norm needs every rank's batch; use fewer ranks or set train.sync_bn: false",
                c.rank(),
                empty[0]
            ))
            .into());
        }
    }
    // An empty shard (a rank with no images this step) still takes part in the sums.
    let local = match n {
        0 => None,
        _ => crate::distributed::synced_bn(sync, || -> Result<_> {
            let mix = crate::methods::transform_batch(method, &mut images, &labels, size, batch_draws.as_mut());
            let x = Tensor::from_vec(images, (n, 3, size, size), device)?;
            let y = Tensor::from_vec(labels, n, device)?;
            net.begin_step(layers);
            let out = net.forward_t(&x, true)?;
            let loss = match &mix {
                None => net.loss(&out, &y)?,
                Some(m) => {
                    let other = Tensor::from_vec(m.other_labels.clone(), n, device)?;
                    ((net.loss(&out, &y)? * m.lambda)? + (net.loss(&out, &other)? * (1.0 - m.lambda))?)?
                }
            };
            Ok(Some((out, y, loss)))
        })?,
    };
    let forward_issue = t0.elapsed();
    let (mut loss_value, mut correct) = match &local {
        Some((out, y, loss)) => {
            let value = loss.to_scalar::<f32>()? as f64;
            let hits = out.logits.argmax(D::Minus1)?.eq(y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
            (value, hits as usize)
        }
        None => (0.0, 0),
    };
    let forward = t0.elapsed();
    let mut times = StepTimes { forward, forward_issue, ..Default::default() };
    let mut seen = n;
    if let Some(c) = dist {
        let t = Instant::now();
        // Sum of losses (f64 in two f32 halves would lose nothing that matters here: the
        // per-rank means are f32 already), images and hits over the ranks.
        let mut sums = [(loss_value * n as f64) as f32, n as f32, correct as f32];
        c.all_reduce_sum_f32(&mut sums)?;
        times.allreduce += t.elapsed();
        seen = sums[1] as usize;
        loss_value = match seen {
            0 => f64::NAN,
            _ => sums[0] as f64 / seen as f64,
        };
        correct = sums[2] as usize;
    }
    if !loss_value.is_finite() {
        return Ok((StepResult { loss: loss_value, correct: 0, seen, updated: false, times }, None));
    }
    let t1 = Instant::now();
    let mut grads = match &local {
        Some((_, _, loss)) => crate::distributed::synced_bn(sync, || loss.backward())?,
        // No image here: an empty store (a constant's backward holds no variable).
        None => Tensor::zeros((), DType::F32, device)?.backward()?,
    };
    times.backward_issue = t1.elapsed();
    if timed {
        device.synchronize()?; // GPU work is asynchronous: time it, not its launch
    }
    times.backward = t1.elapsed();
    if let Some(c) = dist {
        let vars: Vec<&candle_core::Var> = sgd.params().iter().map(|p| &p.var).collect();
        times.allreduce += crate::distributed::average_gradients(c, &vars, &mut grads, n, seen)?;
    }
    let t2 = Instant::now();
    sgd.step(&grads, lr)?;
    if timed {
        device.synchronize()?;
    }
    times.optimizer = t2.elapsed();
    let result = StepResult { loss: loss_value, correct, seen, updated: true, times };
    Ok((result, keep_grads.then_some(grads)))
}
