//! Batch norm in training mode as fused CPU custom ops. Why: candle_nn's version is a
//! chain of generic tensor ops (transpose + copy, two means, subtract, square, divide,
//! scale, shift, transpose back) whose backward walks the chain again, about a dozen
//! passes over every activation; here the forward is two passes (statistics, normalize)
//! and the backward two (sums, input gradient), with the textbook gradient
//!
//!   dx = gamma / sigma / N * (N dy - sum(dy) - x_hat * sum(dy x_hat)),
//!   dgamma = sum(dy x_hat),  dbeta = sum(dy)   (sums per channel over N = B*H*W).
//!
//! A following ReLU or ReLU6 can be fused in ([`Bn::forward_relu_t`],
//! [`Bn::forward_relu6_t`]): the clamp in the normalize pass, its mask applied to dy
//! inside both backward passes. A residual block's sum with its shortcut (and the ReLU
//! after it) can be fused too ([`Bn::forward_add_t`]), so bn(x) is never stored. On CUDA
//! the same two passes each way are kernels of `channel_ops_cuda`, and the running
//! statistics are updated in place.
//!
//! Synchronized statistics ([`with_synced_stats`], PyTorch's SyncBatchNorm): while a
//! [`StatsReducer`] is installed, training-mode statistics are those of the batch of all
//! processes together. Forward: per-channel sums of x (and the count), summed over the
//! processes, give the global mean; sums of (x - mean)^2, summed, the biased global
//! variance; the running statistics take the global mean and unbiased variance. Backward:
//! sum(dy) and sum(dy x_hat) are summed over the processes and dx uses them with the
//! global count, while dgamma and dbeta stay this process's (the caller averages
//! parameter gradients over the processes as for any weight). This crate knows nothing
//! of how the sums travel.
//!
//! Evaluation mode and frozen statistics normalize with the running statistics as one
//! per-channel affine pass, y = x * scale + shift (PyTorch's CPU form), the ReLU fused
//! in the same way; candle_nn's chain took four passes and a fifth for the ReLU. Its
//! backward keeps the gradients of gamma and beta (frozen-statistics fine-tuning) and of
//! x (Grad-CAM through the layer). Evaluation on other devices uses candle_nn's batch
//! norm, which reads the same running statistics.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, ModuleT, Result, Shape, Tensor, Var};
use candle_nn::{BatchNormConfig, Init, VarBuilder};
use rayon::prelude::*;

use crate::cpu_f32;

/// Sums buffers over the processes that train one batch together (synchronized batch
/// norm); every process makes the same calls in the same order.
pub trait StatsReducer {
    /// Element-wise sum over the processes, in place, on every process.
    fn sum(&self, buf: &mut [f64]) -> Result<()>;
}

thread_local! {
    /// The reducer of [`with_synced_stats`], while `f` runs on this thread.
    static SYNC: std::cell::Cell<Option<*const (dyn StatsReducer + 'static)>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` (a training step: forward and backward, on this thread) with every
/// training-mode batch norm computing its statistics over the processes of `reducer`.
/// Outside it batch norm is per process, bit for bit as before.
pub fn with_synced_stats<R>(reducer: &dyn StatsReducer, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<*const (dyn StatsReducer + 'static)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SYNC.with(|s| s.set(self.0));
        }
    }
    let ptr: *const (dyn StatsReducer + '_) = reducer;
    // SAFETY: only the lifetime bound of the trait object changes (same fat pointer). The
    // pointer is read by `synced` on this thread only, while `f` runs: `reducer` outlives
    // this call, and `Restore` takes the pointer out again when `f` returns or unwinds.
    let ptr: *const (dyn StatsReducer + 'static) = unsafe { std::mem::transmute(ptr) };
    let _restore = Restore(SYNC.with(|s| s.replace(Some(ptr))));
    f()
}

/// The reducer installed by [`with_synced_stats`] on this thread, if any.
fn synced<R>(f: impl FnOnce(Option<&dyn StatsReducer>) -> R) -> R {
    let ptr = SYNC.with(|s| s.get());
    // SAFETY: a pointer is installed only for the duration of `with_synced_stats`'s `f`,
    // whose caller keeps the reducer alive; we are inside that call on the same thread.
    f(ptr.map(|p| unsafe { &*p }))
}

/// Freezable batch norm (`model.freeze_bn`): frozen, it always normalizes with its
/// running statistics and never updates them, for small batches on pretrained weights.
pub struct Bn {
    running_mean: Var,
    running_var: Var,
    weight: Tensor,
    bias: Tensor,
    eps: f64,
    momentum: f64,
    frozen: bool,
    /// candle_nn's layer on the same tensors, for the paths not fused here.
    fallback: candle_nn::BatchNorm,
}

impl Bn {
    /// `momentum` as PyTorch's (0.1 there by default; TensorFlow-trained nets use 0.01).
    pub fn new(c: usize, eps: f64, momentum: f64, frozen: bool, vb: VarBuilder) -> Result<Bn> {
        let running_mean = vb.get_with_hints(c, "running_mean", Init::Const(0.))?;
        let running_var = vb.get_with_hints(c, "running_var", Init::Const(1.))?;
        let weight = vb.get_with_hints(c, "weight", Init::Const(1.))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.))?;
        let cfg = BatchNormConfig { eps, momentum, ..Default::default() };
        let fallback = candle_nn::batch_norm(c, cfg, vb)?;
        Ok(Bn {
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            weight,
            bias,
            eps,
            momentum,
            frozen,
            fallback,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, Act::Identity)
    }

    /// relu(bn(x)): in training one op, the ReLU's mask applied inside the
    /// backward passes (a ReLU op of its own costs two passes over the activation and a
    /// gradient candle accumulates into a zeroed copy).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, Act::Relu)
    }

    /// min(max(bn(x), 0), 6), fused the same way (candle's clamp is a maximum and a
    /// minimum, each with a comparison mask in its backward).
    pub fn forward_relu6_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, Act::Relu6)
    }

    fn forward_act(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        let batch_stats = train && !self.frozen;
        let ours = x.dtype() == DType::F32 && x.rank() == 4 && !candle_bn_requested();
        if batch_stats && !(ours && x.device().is_cpu()) && synced(|r| r.is_some()) {
            candle_core::bail!(
                "synchronized batch norm runs on f32 CPU tensors only (got {:?} on {:?})",
                x.dtype(),
                x.device().location()
            );
        }
        #[cfg(feature = "cuda")]
        if ours && batch_stats && x.device().is_cuda() {
            let running = (self.running_mean.as_tensor(), self.running_var.as_tensor(), self.momentum);
            let relu = act == Act::Relu;
            let y = crate::cuda::batch_norm_train(x, &self.weight, &self.bias, self.eps, running, relu)?;
            return if act == Act::Relu6 { act.candle(&y) } else { Ok(y) };
        }
        if !ours || !x.device().is_cpu() {
            return act.candle(&self.fallback.forward_t(x, batch_stats)?);
        }
        if !batch_stats {
            return self.normalize_running(x, act);
        }
        let x = x.contiguous()?;
        let stats = self.batch_stats(&x)?;
        x.apply_op3(&self.weight, &self.bias, Normalize { stats, act })
    }

    /// act(bn(x) + residual), `act` the identity or the ReLU: a residual block's last
    /// batch norm, its sum with the shortcut and the activation. On the CPU one op (in
    /// training, and with the running statistics), so bn(x) is never stored (candle keeps
    /// every op's inputs until the step ends: a bottleneck's 4x-wide tensor per block,
    /// ~700 MB of ResNet-50 at batch 32) and the sum costs no pass of its own; the
    /// backward takes the ReLU's mask from the output, as [`crate::activation::add_relu`]
    /// does. Elsewhere our batch norm, then the sum.
    pub fn forward_add_t(&self, x: &Tensor, residual: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        let ours = x.dtype() == DType::F32
            && x.rank() == 4
            && x.device().is_cpu()
            && x.shape() == residual.shape()
            && !candle_bn_requested();
        match act {
            Act::Relu6 => candle_core::bail!("batch norm: no fused sum with ReLU6"),
            _ if ours => {}
            Act::Relu => return crate::activation::add_relu(&self.forward_t(x, train)?, residual),
            Act::Identity => return self.forward_t(x, train)? + residual,
        }
        let x = x.contiguous()?;
        let (op, params) = if train && !self.frozen {
            let op = NormalizeAdd { stats: self.batch_stats(&x)?, act, running: false };
            (op, Tensor::stack(&[&self.weight, &self.bias], 0)?)
        } else {
            let (scale, shift) = self.running_affine()?;
            let op = NormalizeAdd { stats: Stats::unit(x.dim(1)?, Act::Identity, None), act, running: true };
            (op, Tensor::stack(&[scale, shift], 0)?)
        };
        x.apply_op3(&residual.contiguous()?, &params, op)
    }

    /// The batch's per-channel statistics (the running ones updated from them).
    fn batch_stats(&self, x: &Tensor) -> Result<Stats> {
        let (b, c, h, w) = x.dims4()?;
        let span = crate::profile::span(|| format!("batch norm statistics {c}x{h}x{w}"), 0.0);
        let (mean, var, n, global) = synced(|r| -> Result<_> {
            Ok(match r {
                None => {
                    let (mean, var) = channel_stats(x)?;
                    (mean, var, (b * h * w) as f64, None)
                }
                Some(r) => {
                    let (mean, var, n) = synced_channel_stats(x, r)?;
                    (mean, var, n, Some(n))
                }
            })
        })?;
        drop(span);
        let invstd: Vec<f32> = var.iter().map(|v| (1.0 / (v + self.eps).sqrt()) as f32).collect();
        let dev = x.device();
        let mean_t = Tensor::from_vec(mean.iter().map(|&v| v as f32).collect::<Vec<_>>(), c, dev)?;
        let var_t =
            Tensor::from_vec(var.iter().map(|&v| (v * n / (n - 1.0).max(1.0)) as f32).collect::<Vec<_>>(), c, dev)?;
        self.update_running(&mean_t, &var_t)?;
        let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        Ok(Stats { mean, invstd, act: Act::Identity, affine: None, global })
    }

    /// With the running statistics: scale = gamma / sqrt(running_var + eps), shift = beta -
    /// running_mean * scale, computed as candle ops on [C] so gamma and beta get their
    /// gradients through them.
    fn normalize_running(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        let (scale, shift) = self.running_affine()?;
        x.contiguous()?.apply_op3(&scale, &shift, ChannelAffine { act })
    }

    /// (scale, shift) of [`Self::normalize_running`].
    fn running_affine(&self) -> Result<(Tensor, Tensor)> {
        let invstd = (self.running_var.as_detached_tensor() + self.eps)?.sqrt()?.recip()?;
        let scale = (&self.weight * invstd)?;
        let shift = (&self.bias - (self.running_mean.as_detached_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Running statistics as PyTorch (and candle_nn) keep them, from the batch's mean and
    /// unbiased variance.
    fn update_running(&self, mean: &Tensor, unbiased_var: &Tensor) -> Result<()> {
        let m = self.momentum;
        self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased_var * m)?)?)
    }
}

/// The activation fused after the normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Identity = 0,
    Relu = 1,
    Relu6 = 2,
}

impl Act {
    const fn id(self) -> u8 {
        self as u8
    }

    const fn from_id(id: u8) -> Act {
        match id {
            0 => Act::Identity,
            1 => Act::Relu,
            _ => Act::Relu6,
        }
    }

    /// The activation of [`Act::from_id`]`(A)` at z.
    #[inline(always)]
    fn apply<const A: u8>(z: f32) -> f32 {
        match Act::from_id(A) {
            Act::Identity => z,
            Act::Relu => z.max(0.0),
            Act::Relu6 => z.clamp(0.0, 6.0),
        }
    }

    /// dy through the activation at the pre-activation z: passed where z >= 0 for the
    /// ReLU (candle's gradient), where 0 < z < 6 for ReLU6 (PyTorch's hardtanh gradient).
    #[inline(always)]
    fn pass<const A: u8>(g: f32, z: f32) -> f32 {
        match Act::from_id(A) {
            Act::Identity => g,
            Act::Relu => {
                if z >= 0.0 {
                    g
                } else {
                    0.0
                }
            }
            Act::Relu6 => g * f32::from(u8::from((z > 0.0) & (z < 6.0))),
        }
    }

    /// The activation as candle ops, for the paths not fused here.
    fn candle(self, y: &Tensor) -> Result<Tensor> {
        match self {
            Act::Identity => Ok(y.clone()),
            Act::Relu => crate::activation::relu(y),
            Act::Relu6 => y.clamp(0f32, 6f32),
        }
    }
}

/// Runs `$body` with the const `$A` naming `act` ([`Act::id`]), so each activation's
/// loops are compiled, and vectorized, on their own: with the activation a value in the
/// loop, ReLU6's backward ran 4x slower, or the ReLU's 2x, by how the mask was written.
macro_rules! with_act {
    ($act:expr, $A:ident => $body:expr) => {
        match $act {
            Act::Identity => {
                const $A: u8 = Act::Identity.id();
                $body
            }
            Act::Relu => {
                const $A: u8 = Act::Relu.id();
                $body
            }
            Act::Relu6 => {
                const $A: u8 = Act::Relu6.id();
                $body
            }
        }
    };
}

/// `WSOL_CANDLE_BN=1` runs candle_nn's batch norm instead (for A/B benchmarks); read once.
fn candle_bn_requested() -> bool {
    crate::switches::get().candle_bn
}

/// Per channel of `x` [B, C, H, W]: mean and biased variance, in two passes (the mean,
/// then squares about it; E[x^2] - E[x]^2 loses the variance of a channel whose mean
/// dwarfs its spread), accumulated in f64 across planes.
fn channel_stats(x: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let (b, c, h, w) = x.dims4()?;
    let plane = h * w;
    // Read in place (a copy of the activation cost as much as the statistics).
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("batch norm: expected a CPU tensor") };
    let data = cpu_f32(cpu, layout, "batch norm")?;
    let n = (b * plane) as f64;
    let stats: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..b).map(|img| &data[(img * c + ch) * plane..][..plane]);
            let mean = planes().map(|p| lane_sums(p, p, |v, _| (v, 0.0)).0).sum::<f64>() / n;
            let m = mean as f32;
            let var = planes().map(|p| lane_sums(p, p, |v, _| ((v - m) * (v - m), 0.0)).0).sum::<f64>() / n;
            (mean, var)
        })
        .collect();
    Ok(stats.into_iter().unzip())
}

/// [`channel_stats`] over the batches of every process of `r`: the same two passes, each
/// channel's sums added over the processes between them (`[sums.., count]`, then
/// `[squares..]`). Also returns the global count of values per channel.
fn synced_channel_stats(x: &Tensor, r: &dyn StatsReducer) -> Result<(Vec<f64>, Vec<f64>, f64)> {
    let (b, c, h, w) = x.dims4()?;
    let plane = h * w;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else { candle_core::bail!("batch norm: expected a CPU tensor") };
    let data = cpu_f32(cpu, layout, "batch norm")?;
    let planes = |ch: usize| (0..b).map(move |img| &data[(img * c + ch) * plane..][..plane]);
    let mut sums: Vec<f64> =
        (0..c).into_par_iter().map(|ch| planes(ch).map(|p| lane_sums(p, p, |v, _| (v, 0.0)).0).sum::<f64>()).collect();
    sums.push((b * plane) as f64);
    r.sum(&mut sums)?;
    let n = sums[c];
    if n < 1.0 {
        candle_core::bail!("synchronized batch norm: no values in the batches of all processes");
    }
    let mean: Vec<f64> = sums[..c].iter().map(|s| s / n).collect();
    let mut squares: Vec<f64> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let m = mean[ch] as f32;
            planes(ch).map(|p| lane_sums(p, p, |v, _| ((v - m) * (v - m), 0.0)).0).sum::<f64>()
        })
        .collect();
    r.sum(&mut squares)?;
    Ok((mean, squares.iter().map(|q| q / n).collect(), n))
}

/// Σ f(a_i, b_i) over two equal slices, as two sums (one per output of `f`), each kept
/// in 16 interleaved f64 partial sums added up in order at the end. One running f32 sum
/// is a chain of dependent adds, an element per add latency (~4 cycles); 16 independent
/// lanes vectorize and give the same bits on any SIMD width. f64, because train-mode
/// outputs amplify the rounding of the mean (x - mean cancels where the mean dwarfs the
/// spread): f32 lanes moved ResNet-50's logits 4x further from PyTorch's.
#[inline]
fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    const L: usize = 16;
    let (mut s, mut t) = ([0f64; L], [0f64; L]);
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (ca, cb) in ca.zip(cb) {
        let (ca, cb): (&[f32; L], &[f32; L]) = (ca.try_into().unwrap(), cb.try_into().unwrap());
        for i in 0..L {
            let (u, v) = f(ca[i], cb[i]);
            s[i] += u as f64;
            t[i] += v as f64;
        }
    }
    for (i, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        let (u, v) = f(x, y);
        s[i] += u as f64;
        t[i] += v as f64;
    }
    (s.iter().sum(), t.iter().sum())
}

/// y = act((x - mean) * invstd * gamma + beta) per channel.
struct Normalize {
    stats: Stats,
    act: Act,
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) =
            (cpu_f32(xs, xl, "batch norm")?, cpu_f32(gs, gl, "batch norm")?, cpu_f32(bs, bl, "batch norm")?);
        let (_, c, h, w) = xl.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("batch norm normalize {c}x{h}x{w}"), 0.0);
        let (scale, shift) = self.stats.affine(gamma, beta);
        Ok((CpuStorage::F32(affine_planes(x, plane, &scale, &shift, self.act)), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let guided = if self.act == Act::Relu { crate::activation::guided(dy)? } else { None };
        let dy = guided.as_ref().unwrap_or(dy).contiguous()?;
        let mut stats = self.stats.clone();
        if self.act != Act::Identity {
            let (g, b) = (gamma.to_vec1::<f32>()?, beta.to_vec1::<f32>()?);
            stats.act = self.act;
            stats.affine = Some(stats.affine(&g, &b));
        }
        let (dx, dgamma, dbeta) = Normalize::grads(stats, x, gamma, &dy)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

impl Normalize {
    /// dx, dgamma and dbeta from the gradient dz of bn(x) (the fused activation's mask
    /// already applied, or `stats.act` naming it).
    fn grads(stats: Stats, x: &Tensor, gamma: &Tensor, dz: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let sums = dz.apply_op2_no_bwd(x, &GradSums(stats.clone()))?; // [2, C]: sum dz, sum dz x_hat
        let mut s: Vec<Vec<f32>> = sums.to_vec2()?;
        let n = match stats.global {
            None => (x.elem_count() / x.dim(1)?) as f32,
            Some(n) => {
                // dx sees the sums over every process's batch; dgamma, dbeta stay ours.
                let mut buf: Vec<f64> = s.iter().flatten().map(|&v| v as f64).collect();
                synced(|r| match r {
                    Some(r) => r.sum(&mut buf),
                    None => candle_core::bail!("synchronized batch norm: backward outside `with_synced_stats`"),
                })?;
                let c = s[0].len();
                s = vec![buf[..c].iter().map(|&v| v as f32).collect(), buf[c..].iter().map(|&v| v as f32).collect()];
                n as f32
            }
        };
        let op = GradInput { stats, sum_dy: s[0].clone(), sum_dy_xhat: s[1].clone(), n };
        let dx = dz.apply_op3_no_bwd(x, gamma, &op)?;
        Ok((dx, sums.get(1)?, sums.get(0)?))
    }
}

/// y = act((x - mean) * invstd * gamma + beta + r) per channel, gamma and beta stacked
/// as one [2, C] input (a custom op takes three). `running`: the statistics are the
/// running ones, folded into the inputs (scale and shift; mean 0 and invstd 1 here), as
/// in [`ChannelAffine`].
struct NormalizeAdd {
    stats: Stats,
    act: Act,
    running: bool,
}

impl CustomOp3 for NormalizeAdd {
    fn name(&self) -> &'static str {
        "batch-norm-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r, gamma_beta) =
            (cpu_f32(xs, xl, "batch norm")?, cpu_f32(rs, rl, "batch norm")?, cpu_f32(ps, pl, "batch norm")?);
        let (_, c, h, w) = xl.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("batch norm normalize + add {c}x{h}x{w}"), 0.0);
        let (scale, shift) = self.stats.affine(&gamma_beta[..c], &gamma_beta[c..]);
        // The sum rounded as bn(x) then + r were, so the bits are those of the two ops.
        let y = with_act!(self.act, A => crate::memory::par_vec(x.len(), plane, |k| {
            let (a, b, at) = (scale[k % c], shift[k % c], k * plane);
            x[at..at + plane].iter().zip(&r[at..at + plane]).map(move |(&v, &r)| Act::apply::<A>((v * a + b) + r))
        }));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// The sum's gradient dz is the shortcut's and the batch norm's output gradient.
    fn bwd(
        &self,
        x: &Tensor,
        _r: &Tensor,
        gamma_beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dz = match self.act {
            Act::Relu => crate::activation::grad_from_output(dy, y)?,
            _ => dy.contiguous()?,
        };
        let (dx, dgamma, dbeta) = if self.running {
            ChannelAffine::grads(self.stats.clone(), gamma_beta.get(0)?.to_vec1()?, x, &dz)?
        } else {
            Normalize::grads(self.stats.clone(), x, &gamma_beta.get(0)?, &dz)?
        };
        Ok((Some(dx), Some(dz), Some(Tensor::stack(&[dgamma, dbeta], 0)?)))
    }
}

/// act(x * scale + shift) per channel of each [h, w] plane.
fn affine_planes(x: &[f32], plane: usize, scale: &[f32], shift: &[f32], act: Act) -> Vec<f32> {
    let c = scale.len();
    with_act!(act, A => crate::memory::par_vec(x.len(), plane, |k| {
        let (a, b) = (scale[k % c], shift[k % c]);
        x[k * plane..][..plane].iter().map(move |&v| Act::apply::<A>(v * a + b))
    }))
}

/// Batch norm with fixed statistics: y = act(x * scale + shift) per channel (scale and
/// shift [C] inputs).
struct ChannelAffine {
    act: Act,
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "batch-norm-running"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, scale, shift) =
            (cpu_f32(xs, xl, "batch norm")?, cpu_f32(ss, sl, "batch norm")?, cpu_f32(bs, bl, "batch norm")?);
        let (_, c, h, w) = xl.shape().dims4()?;
        let _span = crate::profile::span(|| format!("batch norm running stats {c}x{h}x{w}"), 0.0);
        Ok((CpuStorage::F32(affine_planes(x, h * w, scale, shift, self.act)), xl.shape().clone()))
    }

    /// dx = dy * scale, dscale = sum(dy x), dshift = sum(dy), with dy masked where the fused
    /// activation's gradient is zero.
    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b) = (scale.to_vec1::<f32>()?, shift.to_vec1::<f32>()?);
        let affine = (self.act != Act::Identity).then(|| (a.clone(), b));
        let guided = if self.act == Act::Relu { crate::activation::guided(dy)? } else { None };
        let dy = guided.as_ref().unwrap_or(dy).contiguous()?;
        let (dx, dscale, dshift) = ChannelAffine::grads(Stats::unit(a.len(), self.act, affine), a, x, &dy)?;
        Ok((Some(dx), Some(dscale), Some(dshift)))
    }
}

impl ChannelAffine {
    /// dx, dscale and dshift from the output gradient dy (`stats` from [`Stats::unit`]:
    /// GradSums' sum(dy * (x - mean) * invstd) is then sum(dy x)).
    fn grads(stats: Stats, scale: Vec<f32>, x: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let sums = dy.apply_op2_no_bwd(x, &GradSums(stats.clone()))?;
        let dx = dy.apply_op2_no_bwd(x, &AffineGradInput { stats, scale })?;
        Ok((dx, sums.get(1)?, sums.get(0)?))
    }
}

/// dx = dy * scale (masked by the fused activation), from (dy, x).
struct AffineGradInput {
    stats: Stats,
    scale: Vec<f32>,
}

impl CustomOp2 for AffineGradInput {
    fn name(&self) -> &'static str {
        "batch-norm-running-grad-input"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (dy, x) = (cpu_f32(ds, dl, "batch norm")?, cpu_f32(xs, xl, "batch norm")?);
        let (_, c, h, w) = xl.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("batch norm running stats grad input {c}x{h}x{w}"), 0.0);
        let dx = with_act!(self.stats.act, A => crate::memory::par_vec(x.len(), plane, |k| {
            let (a, mask) = (self.scale[k % c], self.stats.masked::<A>(k % c));
            let at = k * plane;
            dy[at..at + plane].iter().zip(&x[at..at + plane]).map(move |(&g, &v)| mask(g, v) * a)
        }));
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[derive(Clone)]
struct Stats {
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// The fused activation and, when there is one, the forward's per-channel (scale,
    /// shift), to recompute the pre-activation z for [`Act::pass`].
    act: Act,
    affine: Option<(Vec<f32>, Vec<f32>)>,
    /// Synchronized statistics: the count of values per channel over all processes
    /// (the backward sums go over them too).
    global: Option<f64>,
}

impl Stats {
    /// Mean 0 and invstd 1 for `c` channels: the statistics of a pass whose scale and
    /// shift are already folded in (the running statistics').
    fn unit(c: usize, act: Act, affine: Option<(Vec<f32>, Vec<f32>)>) -> Stats {
        Stats { mean: vec![0.0; c], invstd: vec![1.0; c], act, affine, global: None }
    }

    /// Per channel, y = x * scale + shift.
    fn affine(&self, gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self.invstd.iter().zip(gamma).map(|(s, g)| s * g).collect();
        let shift = beta.iter().zip(&self.mean).zip(&scale).map(|((b, m), a)| b - m * a).collect();
        (scale, shift)
    }

    /// dy through the fused activation of channel `ch`, `A` being `self.act`'s id (see
    /// [`with_act`]).
    #[inline(always)]
    fn masked<const A: u8>(&self, ch: usize) -> impl Fn(f32, f32) -> f32 {
        debug_assert_eq!(A, self.act.id());
        let (a, b) = self.affine.as_ref().map_or((1.0, 0.0), |(a, b)| (a[ch], b[ch]));
        move |g: f32, v: f32| Act::pass::<A>(g, v * a + b)
    }
}

/// Per channel: sum(dy) and sum(dy * x_hat), from (dy, x).
struct GradSums(Stats);

impl CustomOp2 for GradSums {
    fn name(&self) -> &'static str {
        "batch-norm-grad-sums"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (dy, x) = (cpu_f32(ds, dl, "batch norm")?, cpu_f32(xs, xl, "batch norm")?);
        let (b, c, h, w) = xl.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("batch norm grad sums {c}x{h}x{w}"), 0.0);
        let sums: Vec<(f32, f32)> = with_act!(self.0.act, A => (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, s) = (self.0.mean[ch], self.0.invstd[ch]);
                let mask = self.0.masked::<A>(ch);
                let (mut a, mut q) = (0f64, 0f64);
                for img in 0..b {
                    let at = (img * c + ch) * plane;
                    let (pa, pq) = lane_sums(&dy[at..at + plane], &x[at..at + plane], |g, v| {
                        let g = mask(g, v);
                        (g, g * (v - m))
                    });
                    a += pa;
                    q += pq;
                }
                (a as f32, (q * s as f64) as f32)
            })
            .collect());
        let (a, q): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
        Ok((CpuStorage::F32([a, q].concat()), Shape::from((2, c))))
    }
}

/// dx from (dy, x, gamma) and the per-channel sums.
struct GradInput {
    stats: Stats,
    sum_dy: Vec<f32>,
    sum_dy_xhat: Vec<f32>,
    /// Values per channel the sums went over (B*H*W, or over all processes).
    n: f32,
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "batch-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, x, gamma) =
            (cpu_f32(ds, dl, "batch norm")?, cpu_f32(xs, xl, "batch norm")?, cpu_f32(gs, gl, "batch norm")?);
        let (_, c, h, w) = xl.shape().dims4()?;
        let plane = h * w;
        let _span = crate::profile::span(|| format!("batch norm grad input {c}x{h}x{w}"), 0.0);
        let n = self.n;
        let dx = with_act!(self.stats.act, A => crate::memory::par_vec(x.len(), plane, |k| {
            let ch = k % c;
            let (m, s) = (self.stats.mean[ch], self.stats.invstd[ch]);
            let scale = gamma[ch] * s / n;
            let (a, q) = (self.sum_dy[ch], self.sum_dy_xhat[ch]);
            let mask = self.stats.masked::<A>(ch);
            let at = k * plane;
            dy[at..at + plane]
                .iter()
                .zip(&x[at..at + plane])
                .map(move |(&g, &v)| scale * (n * mask(g, v) - a - (v - m) * s * q))
        }));
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use candle_nn::VarMap;

    use super::*;
    use crate::rel_diff as rel;

    /// Output, running statistics and the gradients of input, weight and bias against
    /// candle_nn's batch norm on the same random tensors, run in f64 as the reference.
    /// (With two values per channel the input gradient is almost all cancellation, about
    /// eps / var of dy, and ours in f32 was off by up to 1e-2 relative: not a useful case.)
    #[test]
    fn matches_candle_batch_norm_in_training() {
        check_against_candle(&Device::Cpu, Mode::Train);
    }

    /// Evaluation mode, and training with frozen statistics: the running statistics are
    /// used and left as they were, and gamma, beta and x still get their gradients.
    #[test]
    fn matches_candle_batch_norm_with_running_statistics() {
        check_against_candle(&Device::Cpu, Mode::Eval);
        check_against_candle(&Device::Cpu, Mode::Frozen);
    }

    /// Its fused ReLU gives the bits of the plain layer followed by our ReLU op.
    #[test]
    fn fused_relu_with_running_statistics_equals_batch_norm_then_relu() {
        check_fused_relu(&Device::Cpu, false);
    }

    /// The same on the GPU, where the CUDA kernels of `channel_ops_cuda` run.
    #[cfg(feature = "cuda")]
    #[test]
    fn matches_candle_batch_norm_on_cuda() {
        check_against_candle(&Device::new_cuda(0).unwrap(), Mode::Train);
    }

    /// The fused ReLU gives the bits of our batch norm followed by our ReLU op: output,
    /// and the gradients of input, weight and bias (its mask recomputes the same z).
    /// Both sums against plain f64 ones, for lengths around the 16 lanes.
    #[test]
    fn lane_sums_add_every_element_once() {
        for n in [0usize, 1, 15, 16, 17, 100, 3136] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 104729) % 53) as f32 / 7.0).collect();
            let (s, t) = lane_sums(&a, &b, |u, v| (u, u * v));
            let s64: f64 = a.iter().map(|&u| u as f64).sum();
            let t64: f64 = a.iter().zip(&b).map(|(&u, &v)| (u * v) as f64).sum();
            assert!((s - s64).abs() <= 1e-9 * (1.0 + s64.abs()), "n {n}: {s} vs {s64}");
            assert!((t - t64).abs() <= 1e-9 * (1.0 + t64.abs()), "n {n}: {t} vs {t64}");
        }
    }

    #[test]
    fn fused_relu_equals_batch_norm_then_relu() {
        check_fused_relu(&Device::Cpu, true);
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn fused_relu_equals_batch_norm_then_relu_on_cuda() {
        check_fused_relu(&Device::new_cuda(0).unwrap(), true);
    }

    /// The fused ReLU6 likewise gives the bits of our batch norm then candle's clamp.
    #[test]
    fn fused_relu6_equals_batch_norm_then_clamp() {
        check_fused(&Device::Cpu, true, Act::Relu6);
        check_fused(&Device::Cpu, false, Act::Relu6);
    }

    fn check_fused_relu(dev: &Device, train: bool) {
        check_fused(dev, train, Act::Relu)
    }

    fn check_fused(dev: &Device, train: bool, act: Act) {
        let dev = dev.clone();
        let vm = VarMap::new();
        let bn = Bn::new(6, 1e-5, 0.1, false, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        // ReLU6 needs outputs above 6 as well as below 0.
        let gamma = if act == Act::Relu6 { 4.0 } else { 1.0 };
        {
            let data = vm.data().lock().unwrap();
            data["weight"].set(&Tensor::randn(gamma as f32, 0.5, 6, &dev).unwrap()).unwrap();
            data["bias"].set(&Tensor::randn(0f32, 0.5, 6, &dev).unwrap()).unwrap();
        }
        let x = Var::from_tensor(&Tensor::randn(0.3f32, 2.0, (3, 6, 5, 7), &dev).unwrap()).unwrap();
        let wts = Tensor::randn(0f32, 1., (3, 6, 5, 7), &dev).unwrap();
        let run = |fused: bool| {
            let y = match (fused, act) {
                (true, Act::Relu6) => bn.forward_relu6_t(x.as_tensor(), train).unwrap(),
                (true, _) => bn.forward_relu_t(x.as_tensor(), train).unwrap(),
                (false, Act::Relu6) => bn.forward_t(x.as_tensor(), train).unwrap().clamp(0f32, 6f32).unwrap(),
                (false, _) => crate::activation::relu(&bn.forward_t(x.as_tensor(), train).unwrap()).unwrap(),
            };
            let g = (&y * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let data = vm.data().lock().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let grads =
                [x.as_tensor(), data["weight"].as_tensor(), data["bias"].as_tensor()].map(|t| flat(g.get(t).unwrap()));
            (flat(&y), grads)
        };
        let (fused, plain) = (run(true), run(false));
        assert!(fused.0.contains(&0.0) && fused.0.iter().any(|&v| v > 0.0));
        if act == Act::Relu6 {
            assert!(fused.0.contains(&6.0) && fused.0.iter().any(|&v| v > 0.0 && v < 6.0));
        }
        assert_eq!(fused, plain);
    }

    /// bn(x) + r (then the ReLU) as one op gives the bits of the two ops: output, running
    /// statistics and the gradients of x, r, weight and bias; in training, in eval mode
    /// and with frozen statistics.
    #[test]
    fn fused_sum_equals_batch_norm_then_sum() {
        let dev = Device::Cpu;
        let running0 = (Tensor::randn(0f32, 0.2, 6, &dev).unwrap(), Tensor::rand(0.5f32, 2.0, 6, &dev).unwrap());
        for (act, train, frozen) in
            [Act::Relu, Act::Identity].into_iter().flat_map(|a| [(a, true, false), (a, false, false), (a, true, true)])
        {
            let what = format!("{act:?}, train {train}, frozen {frozen}");
            let vm = VarMap::new();
            let bn = Bn::new(6, 1e-5, 0.1, frozen, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            {
                let data = vm.data().lock().unwrap();
                data["weight"].set(&Tensor::randn(1f32, 0.5, 6, &dev).unwrap()).unwrap();
                data["bias"].set(&Tensor::randn(0f32, 0.5, 6, &dev).unwrap()).unwrap();
            }
            let x = Var::from_tensor(&Tensor::randn(0.3f32, 2.0, (3, 6, 5, 7), &dev).unwrap()).unwrap();
            let r = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 6, 5, 7), &dev).unwrap()).unwrap();
            let wts = Tensor::randn(0f32, 1., (3, 6, 5, 7), &dev).unwrap();
            let run = |fused: bool| {
                {
                    let data = vm.data().lock().unwrap();
                    data["running_mean"].set(&running0.0).unwrap();
                    data["running_var"].set(&running0.1).unwrap();
                }
                let y = if fused {
                    bn.forward_add_t(x.as_tensor(), r.as_tensor(), train, act).unwrap()
                } else {
                    let z = bn.forward_t(x.as_tensor(), train).unwrap();
                    match act {
                        Act::Relu => crate::activation::add_relu(&z, r.as_tensor()).unwrap(),
                        _ => (z + r.as_tensor()).unwrap(),
                    }
                };
                // y is used twice, so its gradient is a sum no one holds alone.
                let g = ((&y * &wts).unwrap().sum_all().unwrap() + y.sum_all().unwrap()).unwrap().backward().unwrap();
                let data = vm.data().lock().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let grads = [x.as_tensor(), r.as_tensor(), data["weight"].as_tensor(), data["bias"].as_tensor()]
                    .map(|t| flat(g.get(t).unwrap()));
                let running = [flat(data["running_mean"].as_tensor()), flat(data["running_var"].as_tensor())];
                (flat(&y), grads, running)
            };
            let (fused, plain) = (run(true), run(false));
            if act == Act::Relu {
                assert!(fused.0.contains(&0.0) && fused.0.iter().any(|&v| v > 0.0), "{what}");
            }
            assert_eq!(fused.0, plain.0, "{what}: output");
            assert_eq!(fused.1, plain.1, "{what}: gradients of x, r, weight, bias");
            assert_eq!(fused.2, plain.2, "{what}: running statistics");
            let moved = fused.2[0] != running0.0.to_vec1::<f32>().unwrap();
            assert_eq!(moved, train && !frozen, "{what}: running statistics updated only in training");
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Train,
        Eval,
        Frozen,
    }

    fn check_against_candle(dev: &Device, mode: Mode) {
        let dev = dev.clone();
        let batch_stats = mode == Mode::Train;
        for (b, c, h, w) in [(4, 3, 5, 7), (1, 6, 4, 4), (2, 5, 2, 2)] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let ours = Bn::new(c, 1e-5, 0.1, mode == Mode::Frozen, vb.pp("a")).unwrap();
            let w0 = Tensor::randn(1f32, 0.3, c, &dev).unwrap();
            let b0 = Tensor::randn(0f32, 0.3, c, &dev).unwrap();
            let rm = Tensor::randn(0f32, 0.1, c, &dev).unwrap();
            let rv = (Tensor::randn(0f32, 0.1, c, &dev).unwrap().abs().unwrap() + 1.0).unwrap();
            {
                let data = vm.data().lock().unwrap();
                data["a.weight"].set(&w0).unwrap();
                data["a.bias"].set(&b0).unwrap();
                data["a.running_mean"].set(&rm).unwrap();
                data["a.running_var"].set(&rv).unwrap();
            }
            let f64v = |t: &Tensor| Var::from_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap();
            let (tw, tb, trm, trv) = (f64v(&w0), f64v(&b0), f64v(&rm), f64v(&rv));
            let theirs = candle_nn::BatchNorm::new(
                c,
                trm.as_tensor().clone(),
                trv.as_tensor().clone(),
                tw.as_tensor().clone(),
                tb.as_tensor().clone(),
                1e-5,
            )
            .unwrap();
            let x = Var::from_tensor(&(Tensor::randn(0.5f32, 2.0, (b, c, h, w), &dev).unwrap())).unwrap();
            let y1 = ours.forward_t(x.as_tensor(), mode != Mode::Eval).unwrap();
            let x64 = Var::from_tensor(&x.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
            let y2 = theirs.forward_t(x64.as_tensor(), batch_stats).unwrap();
            let f32t = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            assert!(rel(&y1, &f32t(&y2)) < 1e-5, "output {b}x{c}x{h}x{w}");
            let data = vm.data().lock().unwrap();
            assert!(rel(data["a.running_mean"].as_tensor(), &f32t(theirs.running_mean())) < 1e-5);
            assert!(rel(data["a.running_var"].as_tensor(), &f32t(theirs.running_var())) < 1e-5);
            if !batch_stats {
                assert_eq!(rel(data["a.running_mean"].as_tensor(), &rm), 0.0, "running mean left as it was");
                assert_eq!(rel(data["a.running_var"].as_tensor(), &rv), 0.0);
            }
            let wts = Tensor::randn(0f32, 1., (b, c, h, w), &dev).unwrap();
            let g1 = (y1 * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (y2 * wts.to_dtype(DType::F64).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = rel(g1.get(x.as_tensor()).unwrap(), &f32t(g2.get(x64.as_tensor()).unwrap()));
            assert!(gx < 1e-4, "input gradient {b}x{c}x{h}x{w}: {gx}");
            let gw = rel(g1.get(&data["a.weight"]).unwrap(), &f32t(g2.get(tw.as_tensor()).unwrap()));
            let gb = rel(g1.get(&data["a.bias"]).unwrap(), &f32t(g2.get(tb.as_tensor()).unwrap()));
            assert!(gw < 1e-5 && gb < 1e-5, "weight {gw}, bias {gb}");
        }
    }

    /// The two halves of a batch in two threads, their statistics summed by a reducer
    /// that meets at a barrier (two processes, as MPI would sum them), give the one-batch
    /// layer's output, running statistics and input gradient; dgamma and dbeta are each
    /// half's share, adding up to the whole's. The fused forms (ReLU, residual sum) too.
    #[test]
    fn synced_halves_equal_the_whole_batch() {
        use std::sync::{Barrier, Mutex};
        struct Meeting {
            slots: Mutex<[Vec<f64>; 2]>,
            barrier: Barrier,
        }
        struct Rank<'a>(&'a Meeting, usize);
        impl StatsReducer for Rank<'_> {
            fn sum(&self, buf: &mut [f64]) -> Result<()> {
                self.0.slots.lock().unwrap()[self.1] = buf.to_vec();
                self.0.barrier.wait();
                let slots = self.0.slots.lock().unwrap();
                buf.iter_mut().zip(slots[0].iter().zip(&slots[1])).for_each(|(v, (a, b))| *v = a + b);
                drop(slots);
                self.0.barrier.wait();
                Ok(())
            }
        }
        let dev = Device::Cpu;
        let (b, c, h, w) = (6, 3, 5, 7);
        let x = Tensor::randn(0.5f32, 2.0, (b, c, h, w), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let wts = Tensor::randn(0f32, 1., (b, c, h, w), &dev).unwrap();
        let gamma = Tensor::randn(1f32, 0.3, c, &dev).unwrap();
        // One layer: y, running mean and var, dx, dgamma, dbeta.
        let run = |lo: usize, len: usize, form: usize| {
            let vm = VarMap::new();
            let bn = Bn::new(c, 1e-5, 0.1, false, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            vm.data().lock().unwrap()["weight"].set(&gamma).unwrap();
            let xv = Var::from_tensor(&x.narrow(0, lo, len).unwrap()).unwrap();
            let xs = xv.as_tensor();
            let y = match form {
                0 => bn.forward_t(xs, true),
                1 => bn.forward_relu_t(xs, true),
                _ => bn.forward_add_t(xs, &r.narrow(0, lo, len).unwrap(), true, Act::Relu),
            }
            .unwrap();
            let g = (&y * wts.narrow(0, lo, len).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            let data = vm.data().lock().unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            [
                v(&y),
                v(data["running_mean"].as_tensor()),
                v(data["running_var"].as_tensor()),
                v(g.get(xs).unwrap()),
                v(g.get(&data["weight"]).unwrap()),
                v(g.get(&data["bias"]).unwrap()),
            ]
        };
        for form in 0..3 {
            let whole = run(0, b, form);
            let meeting = Meeting { slots: Mutex::new([Vec::new(), Vec::new()]), barrier: Barrier::new(2) };
            let halves: Vec<_> = std::thread::scope(|s| {
                let m = &meeting;
                let hs: Vec<_> = [(0, 2), (2, 4)]
                    .into_iter()
                    .enumerate()
                    .map(|(k, (lo, len))| s.spawn(move || with_synced_stats(&Rank(m, k), || run(lo, len, form))))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len(), "{what}");
                for (p, q) in a.iter().zip(b) {
                    assert!((p - q).abs() <= 2e-5 * (1.0 + p.abs()), "form {form}, {what}: {p} vs {q}");
                }
            };
            for (k, what) in [(0, "output"), (3, "input gradient")] {
                close(&whole[k], &[halves[0][k].clone(), halves[1][k].clone()].concat(), what);
            }
            for half in &halves {
                close(&whole[1], &half[1], "running mean");
                close(&whole[2], &half[2], "running variance");
            }
            for (k, what) in [(4, "dgamma"), (5, "dbeta")] {
                let sum: Vec<f32> = halves[0][k].iter().zip(&halves[1][k]).map(|(a, b)| a + b).collect();
                close(&whole[k], &sum, what);
            }
            // Outside the scope the layer is per process again.
            assert_eq!(run(0, 2, form)[0], run(0, 2, form)[0]);
        }
    }
}
