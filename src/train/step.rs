//! One training step, the same for `wsol train` and `wsol bench train`: the method's batch
//! transform, forward, the method's loss, backward, the SGD update.

use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::{backprop::GradStore, DType, Device, Tensor, D};

use super::loss_scale::LossScaler;
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
    /// Whether the weights were updated (false for a non-finite loss, or an overflow).
    pub updated: bool,
    /// With a loss scaler (`train.precision: fp16`): a gradient was inf or NaN, so the
    /// update was skipped and the scale backed off; the loss is finite.
    pub overflow: bool,
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
    Ok(train_step_keeping_grads(net, sgd, method, draws, batch, device, lr, timed, false, None, false, None)?.0)
}

/// [`train_step`], also returning the step's gradients when `keep_grads` (for their
/// histograms): the same store the update read, kept a little longer, nothing copied.
/// With `dist`, `batch` is this rank's shard of the global batch: the loss and hits are
/// summed over the ranks before backward (so every rank sees the global loss and skips a
/// non-finite one together), and the gradients are averaged over the global batch before
/// the update, so every rank makes the single process's update. With `sync_bn` too,
/// training-mode batch norm takes its statistics over the global batch.
///
/// With `scaler` (fp16's dynamic loss scaling, PyTorch's `GradScaler`), the backward pass
/// runs on the scaled loss and the (averaged) gradients are unscaled before the update; a
/// gradient that is inf or NaN skips the update (`overflow`), every rank alike since they
/// hold the same averaged gradients, and the scaler backs off.
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
    scaler: Option<&mut LossScaler>,
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
        return Ok((StepResult { loss: loss_value, correct: 0, seen, updated: false, overflow: false, times }, None));
    }
    let t1 = Instant::now();
    let mut grads = match &local {
        Some((_, _, loss)) => {
            let scaled = match &scaler {
                Some(s) => s.scale_loss(loss)?,
                None => loss.clone(),
            };
            crate::distributed::synced_bn(sync, || scaled.backward())?
        }
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
    if let Some(s) = scaler {
        let vars: Vec<&candle_core::Var> = sgd.params().iter().map(|p| &p.var).collect();
        let overflow = s.unscale(&vars, &mut grads)?;
        s.update(overflow);
        if overflow {
            times.optimizer = t2.elapsed();
            let result = StepResult { loss: loss_value, correct, seen, updated: false, overflow: true, times };
            return Ok((result, None));
        }
    }
    sgd.step(&grads, lr)?;
    if timed {
        device.synchronize()?;
    }
    times.optimizer = t2.elapsed();
    let result = StepResult { loss: loss_value, correct, seen, updated: true, overflow: false, times };
    Ok((result, keep_grads.then_some(grads)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LossScaleConfig};
    use crate::train::optimizer::model_params;

    /// A tiny CAM model, its SGD and a batch, the same each call.
    fn setup() -> (crate::runtime::Model, Optimizer, Config, StepBatch) {
        let mut cfg = Config::default();
        cfg.model.width = 4;
        cfg.data.num_classes = 3;
        let model = crate::runtime::build_model(&cfg, &Device::Cpu).unwrap();
        let params = model_params(&model.varmap, model.net.as_ref(), &cfg.train.optimizer, false);
        let sgd = Optimizer::new(params, &cfg.train.optimizer);
        let size = 16;
        let images: Vec<f32> = (0..2 * 3 * size * size).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        (model, sgd, cfg, StepBatch { images, labels: vec![0, 2], size })
    }

    fn weights(model: &crate::runtime::Model) -> Vec<(String, Vec<u32>)> {
        let data = model.varmap.data().lock().unwrap();
        let mut v: Vec<(String, Vec<u32>)> = data
            .iter()
            .map(|(k, t)| {
                let vals: Vec<f32> = t.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                (k.clone(), vals.iter().map(|x| x.to_bits()).collect())
            })
            .collect();
        v.sort();
        v
    }

    fn step(
        model: &crate::runtime::Model,
        sgd: &mut Optimizer,
        cfg: &Config,
        batch: StepBatch,
        scaler: Option<&mut LossScaler>,
    ) -> StepResult {
        let draws = StepDraws::seeded(0, 0);
        let net = model.net.as_ref();
        train_step_keeping_grads(
            net,
            sgd,
            &cfg.model,
            draws,
            batch,
            &Device::Cpu,
            0.1,
            false,
            false,
            None,
            false,
            scaler,
        )
        .unwrap()
        .0
    }

    /// The scaler in the step, in f32 on the CPU: a power-of-two scale changes no bit of
    /// the update (scaling and unscaling by 2^k are exact). A classifier with weights near
    /// 1e36 keeps the loss finite but makes gradients that overflow f32 once scaled by
    /// 65536 (as fp16 gradients overflow at 65504): the step leaves the parameters and
    /// momentum alone and halves the scale.
    #[test]
    fn the_scaled_step_updates_exactly_or_skips_an_overflow() {
        let (plain, mut sgd, cfg, batch) = setup();
        let before = weights(&plain);
        let r = step(&plain, &mut sgd, &cfg, StepBatch { images: batch.images.clone(), ..batch }, None);
        assert!(r.updated && !r.overflow);
        let plain_after = weights(&plain);
        assert_ne!(plain_after, before);

        let (scaled, mut sgd, cfg, batch) = setup();
        let mut scaler = LossScaler::new(&LossScaleConfig::default());
        let keep = batch.images.clone();
        let r = step(&scaled, &mut sgd, &cfg, batch, Some(&mut scaler));
        assert!(r.updated && !r.overflow);
        assert_eq!(weights(&scaled), plain_after, "scaled by 65536 and unscaled: the same bits");
        assert_eq!(scaler.state().growth_tracker, 1);

        let (model, mut sgd, cfg, _) = setup();
        let fc = model.varmap.data().lock().unwrap()["fc.weight"].clone();
        let big: Vec<f32> = (0..fc.elem_count()).map(|i| (i % 3) as f32 * 1e36 - 1e36).collect();
        fc.set(&Tensor::from_vec(big, fc.shape(), &Device::Cpu).unwrap()).unwrap();
        let mut scaler = LossScaler::new(&LossScaleConfig::default());
        let batch = StepBatch { images: keep, labels: vec![0, 2], size: 16 };
        // Batch-norm running statistics are updated by the forward pass itself (as in
        // PyTorch, whose skipped step keeps them too); the parameters are not.
        let only_params = |w: Vec<(String, Vec<u32>)>| -> Vec<(String, Vec<u32>)> {
            w.into_iter().filter(|(k, _)| !k.contains("running_")).collect()
        };
        let before = only_params(weights(&model));
        let r = step(&model, &mut sgd, &cfg, batch, Some(&mut scaler));
        assert!(r.overflow && !r.updated && r.loss.is_finite(), "loss {} overflow {}", r.loss, r.overflow);
        assert_eq!(only_params(weights(&model)), before, "a skipped step changes no parameter");
        assert!(sgd.state().values().all(|t| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() == 0.0));
        let halved = crate::train::loss_scale::LossScaleState { scale: 32768.0, growth_tracker: 0 };
        assert_eq!(scaler.state(), halved);
    }
}
