//! SGD with momentum, weight decay, Nesterov and per-parameter learning-rate
//! multipliers, with PyTorch's update rule (candle-nn's SGD has none of these).

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{backprop::GradStore, Tensor, Var};

use crate::config::OptimizerConfig;

pub struct Param {
    pub name: String,
    pub var: Var,
    pub lr_mult: f64,
}

pub struct Sgd {
    params: Vec<Param>,
    cfg: OptimizerConfig,
    /// Momentum buffers by parameter name (absent until the first step, as in PyTorch).
    momentum: HashMap<String, Tensor>,
}

impl Sgd {
    pub fn new(mut params: Vec<Param>, cfg: &OptimizerConfig) -> Self {
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Sgd { params, cfg: cfg.clone(), momentum: HashMap::new() }
    }

    /// One update at learning rate `lr` (before multipliers):
    /// d = g + wd*p; buf = m*buf + d; d = nesterov ? d + m*buf : buf; p -= lr*mult*d.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = &self.cfg;
        for p in &self.params {
            // Variables outside the loss graph (BN running statistics) have no gradient.
            let Some(grad) = grads.get(&p.var) else { continue };
            let value = p.var.as_detached_tensor();
            let mut d = grad.detach();
            if c.weight_decay != 0.0 {
                d = (d + (&value * c.weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let buf = match self.momentum.get(&p.name) {
                    Some(buf) => ((buf * c.momentum)? + &d)?,
                    None => d.clone(),
                }
                .detach();
                d = if c.nesterov { (d + (&buf * c.momentum)?)? } else { buf.clone() };
                self.momentum.insert(p.name.clone(), buf);
            }
            p.var.set(&(value - (d * (lr * p.lr_mult))?)?)?;
        }
        Ok(())
    }

    /// Momentum buffers for the checkpoint.
    pub fn state(&self) -> &HashMap<String, Tensor> {
        &self.momentum
    }

    pub fn load_state(&mut self, state: HashMap<String, Tensor>) -> Result<()> {
        for (name, t) in &state {
            let Some(p) = self.params.iter().find(|p| &p.name == name) else {
                anyhow::bail!("optimizer state has a buffer for unknown parameter `{name}`");
            };
            if t.dims() != p.var.dims() {
                anyhow::bail!("optimizer buffer `{name}` has shape {:?}, parameter has {:?}", t.dims(), p.var.dims());
            }
        }
        self.momentum = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps checked against PyTorch's rule computed by hand.
    #[test]
    fn matches_pytorch_rule() {
        let dev = Device::Cpu;
        let var = Var::from_vec(vec![1.0f32, -2.0], 2, &dev).unwrap();
        let cfg = OptimizerConfig {
            name: "sgd".into(),
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: false,
            new_layer_lr_mult: 1.0,
        };
        let mut sgd = Sgd::new(vec![Param { name: "w".into(), var: var.clone(), lr_mult: 2.0 }], &cfg);
        // loss = sum(p^2) -> grad = 2p
        let mut p = [1.0f64, -2.0];
        let mut buf = [0.0f64; 2];
        for step in 0..2 {
            let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            sgd.step(&grads, 0.1).unwrap();
            for i in 0..2 {
                let d = 2.0 * p[i] + 0.01 * p[i];
                buf[i] = if step == 0 { d } else { 0.9 * buf[i] + d };
                p[i] -= 0.1 * 2.0 * buf[i];
            }
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - p[i]).abs() < 1e-6, "{got:?} vs {p:?}");
        }
    }
}
