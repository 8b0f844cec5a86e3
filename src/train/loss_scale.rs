//! Dynamic loss scaling for `train.precision: fp16` (or any precision with
//! `train.loss_scale.enabled: true`), with the semantics of PyTorch's
//! `torch.amp.GradScaler` (torch/amp/grad_scaler.py; the arithmetic of ATen's
//! `_amp_foreach_non_finite_check_and_unscale_` and `_amp_update_scale_`, whose CPU and CUDA
//! kernels agree):
//!
//! * the backward pass runs on `loss * scale`, so that small fp16 gradients do not flush to
//!   zero; the scale is an f32 (`init_scale` rounded to f32);
//! * the gradients (fp32, of the fp32 master weights) are multiplied by `inv_scale`, the
//!   reciprocal of the scale computed in f64 and rounded to f32; a gradient that is inf or
//!   NaN *before* that multiplication marks the step as overflowed;
//! * an overflowed step skips the optimizer (weights, momentum, step counters unchanged),
//!   multiplies the scale by `backoff_factor` and restarts the count of clean steps;
//! * a clean step counts; at `growth_interval` clean steps in a row the scale is
//!   multiplied by `growth_factor` (unless that would overflow f32: then it stays) and the
//!   count restarts. Products are taken in f64 and rounded to f32, as the kernels do.
//!
//! The scale and the count are part of a checkpoint ([`LossScaleState`]), so `--resume`
//! continues with the scale the run had.

use anyhow::Result;
use candle_core::{backprop::GradStore, DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::config::LossScaleConfig;

/// What a checkpoint keeps of the scaler: PyTorch's `GradScaler.state_dict()` less its
/// constant arguments (those come from the config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    pub scale: f32,
    /// Clean steps in a row since the last growth or overflow (`_growth_tracker`).
    pub growth_tracker: u32,
}

#[derive(Debug, Clone)]
pub struct LossScaler {
    scale: f32,
    growth_tracker: u32,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u32,
}

impl LossScaler {
    pub fn new(cfg: &LossScaleConfig) -> LossScaler {
        LossScaler {
            scale: cfg.init_scale as f32,
            growth_tracker: 0,
            growth_factor: cfg.growth_factor,
            backoff_factor: cfg.backoff_factor,
            growth_interval: cfg.growth_interval,
        }
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }

    pub fn state(&self) -> LossScaleState {
        LossScaleState { scale: self.scale, growth_tracker: self.growth_tracker }
    }

    pub fn restore(&mut self, state: LossScaleState) {
        self.scale = state.scale;
        self.growth_tracker = state.growth_tracker;
    }

    /// `scale.double().reciprocal().float()`, as `GradScaler.unscale_`.
    pub fn inv_scale(&self) -> f32 {
        (1.0 / self.scale as f64) as f32
    }

    /// The loss the backward pass runs on: `loss * scale`, in the loss's f32.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        let s = Tensor::new(self.scale, loss.device())?.to_dtype(loss.dtype())?;
        Ok(loss.broadcast_mul(&s)?)
    }

    /// Multiplies every gradient of `vars` in `grads` by [`Self::inv_scale`] (on their own
    /// device) and says whether any of them held an inf or NaN before. The gradients must
    /// be f32 (the master weights' type): fp16 gradients would overflow in the unscaling
    /// itself, which PyTorch refuses too ("Attempting to unscale FP16 gradients").
    pub fn unscale(&self, vars: &[&Var], grads: &mut GradStore) -> Result<bool> {
        let inv = self.inv_scale();
        // One read-back for all gradients: 0 * x is NaN exactly when x is inf or NaN.
        let mut probe: Option<Tensor> = None;
        let mut unscaled = Vec::new();
        for v in vars {
            let Some(g) = grads.get(v.as_tensor()) else { continue };
            anyhow::ensure!(g.dtype() == DType::F32, "loss scaling: gradients must be f32, got {:?}", g.dtype());
            let zero_or_nan = (g * 0.0)?.sum_all()?;
            probe = Some(match probe {
                None => zero_or_nan,
                Some(p) => (p + zero_or_nan)?,
            });
            let inv = Tensor::new(inv, g.device())?;
            unscaled.push((v.as_tensor().clone(), g.broadcast_mul(&inv)?));
        }
        let found_inf = match probe {
            Some(p) => !p.to_scalar::<f32>()?.is_finite(),
            None => false,
        };
        for (var, g) in unscaled {
            grads.insert(&var, g);
        }
        Ok(found_inf)
    }

    /// [`Self::unscale`] on host values: the reference arithmetic, element by element, as
    /// ATen's CPU kernel (the check reads the value before the multiplication).
    pub fn unscale_values(&self, values: &mut [f32]) -> bool {
        let inv = self.inv_scale();
        let mut found_inf = false;
        for v in values {
            found_inf |= !v.is_finite();
            *v *= inv;
        }
        found_inf
    }

    /// The end of a step: back off after an overflow, else count the clean step and grow
    /// at `growth_interval` of them (`_amp_update_scale_`).
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale = (self.scale as f64 * self.backoff_factor) as f32;
            self.growth_tracker = 0;
            return;
        }
        let successful = self.growth_tracker + 1;
        if successful == self.growth_interval {
            let grown = (self.scale as f64 * self.growth_factor) as f32;
            // Do not grow the scale past f32's range to inf.
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        } else {
            self.growth_tracker = successful;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn scaler(init_scale: f64, growth_interval: u32) -> LossScaler {
        LossScaler::new(&LossScaleConfig { init_scale, growth_interval, ..LossScaleConfig::default() })
    }

    #[test]
    fn defaults_are_pytorchs() {
        let s = LossScaler::new(&LossScaleConfig::default());
        assert_eq!((s.scale(), s.growth_factor, s.backoff_factor, s.growth_interval), (65536.0, 2.0, 0.5, 2000));
        assert_eq!(s.inv_scale(), 1.0 / 65536.0);
    }

    #[test]
    fn backs_off_on_overflow_and_grows_after_a_clean_run() {
        let mut s = scaler(1024.0, 3);
        s.update(true);
        assert_eq!(s.state(), LossScaleState { scale: 512.0, growth_tracker: 0 });
        s.update(false);
        s.update(false);
        assert_eq!(s.state(), LossScaleState { scale: 512.0, growth_tracker: 2 });
        s.update(false);
        assert_eq!(s.state(), LossScaleState { scale: 1024.0, growth_tracker: 0 });
        // An overflow restarts the count.
        s.update(false);
        s.update(true);
        s.update(false);
        s.update(false);
        assert_eq!(s.state(), LossScaleState { scale: 512.0, growth_tracker: 2 });
    }

    #[test]
    fn the_scale_never_grows_to_inf() {
        let mut s = scaler(2f64.powi(127), 1);
        s.update(false);
        assert_eq!(s.state(), LossScaleState { scale: 2f32.powi(127), growth_tracker: 0 });
    }

    #[test]
    fn unscaling_on_the_device_matches_the_reference_and_finds_inf_and_nan() {
        let dev = Device::Cpu;
        let s = scaler(1000.0, 10); // not a power of two: inv_scale is rounded
        let w = Var::from_tensor(&Tensor::zeros(3, DType::F32, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(2, DType::F32, &dev).unwrap()).unwrap();
        for (gw, gb, inf) in [
            (vec![1e3f32, -7.5, 3e-3], vec![0.0f32, 12.0], false),
            (vec![1.0, f32::INFINITY, 2.0], vec![0.0, 1.0], true),
            (vec![1.0, 2.0, 3.0], vec![f32::NAN, 1.0], true),
            (vec![f32::MAX, -f32::MAX, 1.0], vec![0.0, 1.0], false),
        ] {
            let loss = (w.as_tensor().sum_all().unwrap() * 0.0).unwrap();
            let mut grads = loss.backward().unwrap();
            grads.insert(w.as_tensor(), Tensor::new(gw.as_slice(), &dev).unwrap());
            grads.insert(b.as_tensor(), Tensor::new(gb.as_slice(), &dev).unwrap());
            assert_eq!(s.unscale(&[&w, &b], &mut grads).unwrap(), inf, "{gw:?} {gb:?}");
            let (mut rw, mut rb) = (gw.clone(), gb.clone());
            assert_eq!(s.unscale_values(&mut rw) | s.unscale_values(&mut rb), inf);
            let got: Vec<f32> = grads.get(w.as_tensor()).unwrap().to_vec1().unwrap();
            let bits =
                |v: &[f32]| v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&rw));
            let got: Vec<f32> = grads.get(b.as_tensor()).unwrap().to_vec1().unwrap();
            assert_eq!(bits(&got), bits(&rb));
        }
    }

    #[test]
    fn the_state_round_trips_through_json_exactly() {
        let mut s = scaler(3.0e-5, 7);
        s.update(false);
        s.update(true);
        s.update(false);
        let text = serde_json::to_string(&s.state()).unwrap();
        let mut t = scaler(65536.0, 7);
        t.restore(serde_json::from_str(&text).unwrap());
        assert_eq!(t.state(), s.state());
        assert_eq!(t.scale().to_bits(), s.scale().to_bits());
    }
}
