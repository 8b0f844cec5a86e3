//! SGD with momentum, weight decay, Nesterov and per-parameter learning-rate
//! multipliers, with PyTorch's update rule (candle-nn's SGD has none of these).

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{backprop::GradStore, Tensor, Var};
use wsol_ops::sgd::{fusable, Momentum, Step, Update};

use candle_nn::VarMap;

use crate::config::OptimizerConfig;
use crate::models::WsolModel;

pub struct Param {
    pub name: String,
    pub var: Var,
    pub lr_mult: f64,
}

/// The model's variables with their learning-rate multipliers, as `wsol train` groups
/// them: the variables of wsolevaluation's new-layer group ([`WsolModel::has_new_layer_lr`])
/// at `new_layer_lr_mult`, the rest at 1. From scratch (`scratch`: no pretrained weights
/// loaded) nothing is pretrained to keep slow, so all train at 1.
pub fn model_params(varmap: &VarMap, net: &dyn WsolModel, new_layer_lr_mult: f64, scratch: bool) -> Vec<Param> {
    let data = varmap.data().lock().expect("varmap lock");
    data.iter()
        .map(|(name, var)| {
            let new = !scratch && net.has_new_layer_lr(name);
            Param { name: name.clone(), var: var.clone(), lr_mult: if new { new_layer_lr_mult } else { 1.0 } }
        })
        .collect()
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
            let lr = lr * p.lr_mult;
            if let Some(buf) = self.momentum.get(&p.name).filter(|b| fusable(&[p.var.as_tensor(), grad, b])) {
                let update = Update { lr: lr as f32, momentum: c.momentum as f32, weight_decay: c.weight_decay as f32 };
                buf.inplace_op3(grad, p.var.as_tensor(), &Momentum(update))?;
                p.var.as_tensor().inplace_op3(grad, buf, &Step { update, nesterov: c.nesterov })?;
                continue;
            }
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
            p.var.set(&(value - (d * lr)?)?)?;
        }
        Ok(())
    }

    /// The parameters it updates, by name.
    pub fn params(&self) -> &[Param] {
        &self.params
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

    /// From the second step on, the in-place passes run: they must give the bits of the
    /// candle ops they replace (the first step's path), with and without weight decay
    /// and Nesterov.
    #[test]
    fn fused_passes_equal_the_candle_ops_bit_for_bit() {
        let dev = Device::Cpu;
        for (nesterov, wd) in [(false, 0.0), (false, 1e-4), (true, 1e-4)] {
            let p0 = Tensor::randn(0f32, 1., 1000, &dev).unwrap();
            let var = Var::from_tensor(&p0).unwrap();
            let cfg = OptimizerConfig {
                name: crate::config::OptimizerName::Sgd,
                lr: 0.05,
                momentum: 0.9,
                weight_decay: wd,
                nesterov,
                new_layer_lr_mult: 1.0,
            };
            let mut sgd = Sgd::new(vec![Param { name: "w".into(), var: var.clone(), lr_mult: 10.0 }], &cfg);
            let (mut p, mut buf) = (p0.clone(), None::<Tensor>);
            for step in 0..4 {
                let g = Tensor::randn(0f32, 1., 1000, &dev).unwrap();
                // d(sum(p * g))/dp = g exactly.
                let grads = (var.as_tensor() * &g).unwrap().sum_all().unwrap().backward().unwrap();
                sgd.step(&grads, 0.05).unwrap();
                let mut d = g.clone();
                if wd != 0.0 {
                    d = (d + (&p * wd).unwrap()).unwrap();
                }
                let b = match &buf {
                    Some(b) => ((b * 0.9).unwrap() + &d).unwrap(),
                    None => d.clone(),
                };
                d = if nesterov { (d + (&b * 0.9).unwrap()).unwrap() } else { b.clone() };
                buf = Some(b);
                p = (&p - (d * (0.05 * 10.0)).unwrap()).unwrap();
                let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(var.as_tensor()), bits(&p), "step {step}, nesterov {nesterov}, wd {wd}");
            }
        }
    }

    /// The CUDA passes give the CPU's bits, step for step (the first step's candle ops
    /// too: each is one rounding on either device).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_steps_equal_the_cpu_bits() {
        let gpu = Device::new_cuda(0).unwrap();
        for (nesterov, wd) in [(false, 0.0), (false, 1e-4), (true, 1e-4)] {
            let cfg = OptimizerConfig {
                name: crate::config::OptimizerName::Sgd,
                lr: 0.05,
                momentum: 0.9,
                weight_decay: wd,
                nesterov,
                new_layer_lr_mult: 1.0,
            };
            let p0 = Tensor::randn(0f32, 1., 3001, &Device::Cpu).unwrap();
            let vars = [Var::from_tensor(&p0).unwrap(), Var::from_tensor(&p0.to_device(&gpu).unwrap()).unwrap()];
            let mut sgds = vars.clone().map(|var| Sgd::new(vec![Param { name: "w".into(), var, lr_mult: 10.0 }], &cfg));
            for step in 0..4 {
                let g = Tensor::randn(0f32, 1., 3001, &Device::Cpu).unwrap();
                for (var, sgd) in vars.iter().zip(&mut sgds) {
                    let g = g.to_device(var.device()).unwrap();
                    let grads = (var.as_tensor() * &g).unwrap().sum_all().unwrap().backward().unwrap();
                    sgd.step(&grads, 0.05).unwrap();
                }
                let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(vars[0].as_tensor()),
                    bits(vars[1].as_tensor()),
                    "step {step}, nesterov {nesterov}, wd {wd}"
                );
            }
        }
    }

    /// Two steps checked against PyTorch's rule computed by hand.
    #[test]
    fn matches_pytorch_rule() {
        let dev = Device::Cpu;
        let var = Var::from_vec(vec![1.0f32, -2.0], 2, &dev).unwrap();
        let cfg = OptimizerConfig {
            name: crate::config::OptimizerName::Sgd,
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
