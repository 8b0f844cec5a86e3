//! The optimizers of `train.optimizer.name`, with per-parameter learning-rate multipliers
//! and PyTorch's update rules: SGD with momentum, weight decay and Nesterov (candle-nn's
//! SGD has none of these), and AdamW (candle-nn's has no multipliers and keeps its state
//! where a checkpoint cannot reach it).

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{backprop::GradStore, Tensor, Var};
use wsol_ops::sgd::{fusable, Momentum, Step, Update};

use candle_nn::VarMap;

use crate::config::{OptimizerConfig, OptimizerName};
use crate::models::WsolModel;

#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub lr_mult: f64,
    /// Whether `weight_decay` applies to it (see [`model_params`]).
    pub decay: bool,
}

/// The model's variables with their learning-rate multipliers, as `wsol train` groups
/// them: the variables of wsolevaluation's new-layer group ([`WsolModel::has_new_layer_lr`])
/// at `new_layer_lr_mult`, the rest at 1. From scratch (`scratch`: no pretrained weights
/// loaded) nothing is pretrained to keep slow, so all train at 1.
///
/// With `filter_bias_and_bn` (timm's `create_optimizer` default, which TS-CAM and SCM
/// train with) weight decay skips every parameter of one dimension (biases, norm scales
/// and shifts) and the transformer's `pos_embed` and `cls_token` (timm's
/// `no_weight_decay()`); otherwise it applies to all, as PyTorch's plain optimizers.
pub fn model_params(varmap: &VarMap, net: &dyn WsolModel, cfg: &OptimizerConfig, scratch: bool) -> Vec<Param> {
    let data = varmap.data().lock().expect("varmap lock");
    data.iter()
        .map(|(name, var)| {
            let new = !scratch && net.has_new_layer_lr(name);
            let exempt = cfg.filter_bias_and_bn && (var.rank() <= 1 || crate::models::deit::no_weight_decay(name));
            Param {
                name: name.clone(),
                var: var.clone(),
                lr_mult: if new { cfg.new_layer_lr_mult } else { 1.0 },
                decay: !exempt,
            }
        })
        .collect()
}

pub struct Optimizer {
    params: Vec<Param>,
    cfg: OptimizerConfig,
    /// The state by name, absent until a parameter's first step (as in PyTorch): SGD's
    /// momentum buffers under the parameter's name; AdamW's `exp_avg.<name>`,
    /// `exp_avg_sq.<name>` and `step.<name>` (a scalar, f64) as PyTorch calls them.
    state: HashMap<String, Tensor>,
}

/// AdamW's state names for a parameter.
const ADAMW_STATE: [&str; 3] = ["exp_avg", "exp_avg_sq", "step"];

impl Optimizer {
    pub fn new(mut params: Vec<Param>, cfg: &OptimizerConfig) -> Self {
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Optimizer { params, cfg: cfg.clone(), state: HashMap::new() }
    }

    /// One update at learning rate `lr` (before multipliers).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        match self.cfg.name {
            OptimizerName::Sgd => self.sgd_step(grads, lr),
            OptimizerName::AdamW => self.adamw_step(grads, lr),
        }
    }

    /// d = g + wd*p; buf = m*buf + d; d = nesterov ? d + m*buf : buf; p -= lr*mult*d.
    fn sgd_step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = &self.cfg;
        for p in &self.params {
            // Variables outside the loss graph (BN running statistics) have no gradient.
            let Some(grad) = grads.get(&p.var) else { continue };
            let lr = lr * p.lr_mult;
            let weight_decay = if p.decay { c.weight_decay } else { 0.0 };
            if let Some(buf) = self.state.get(&p.name).filter(|b| fusable(&[p.var.as_tensor(), grad, b])) {
                let update = Update { lr: lr as f32, momentum: c.momentum as f32, weight_decay: weight_decay as f32 };
                buf.inplace_op3(grad, p.var.as_tensor(), &Momentum(update))?;
                p.var.as_tensor().inplace_op3(grad, buf, &Step { update, nesterov: c.nesterov })?;
                continue;
            }
            let value = p.var.as_detached_tensor();
            let mut d = grad.detach();
            if weight_decay != 0.0 {
                d = (d + (&value * weight_decay)?)?;
            }
            if c.momentum != 0.0 {
                let buf = match self.state.get(&p.name) {
                    Some(buf) => ((buf * c.momentum)? + &d)?,
                    None => d.clone(),
                }
                .detach();
                d = if c.nesterov { (d + (&buf * c.momentum)?)? } else { buf.clone() };
                self.state.insert(p.name.clone(), buf);
            }
            p.var.set(&(value - (d * lr)?)?)?;
        }
        Ok(())
    }

    /// `torch.optim.AdamW`'s single-tensor step (its CPU default), at lr * mult:
    /// p *= 1 - lr*wd; m = lerp(m, g, 1 - b1); v = b2*v + (1 - b2)*g*g;
    /// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). Candle ops, f32 like
    /// the parameters; the bias corrections in f64, as PyTorch computes them in Python.
    /// A dozen passes per parameter: small beside a transformer's forward and backward.
    fn adamw_step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = &self.cfg;
        let [b1, b2] = c.betas;
        for p in &self.params {
            let Some(grad) = grads.get(&p.var) else { continue };
            let lr = lr * p.lr_mult;
            let g = grad.detach();
            let key = |k: &str| format!("{k}.{}", p.name);
            let (m, v, t) = match (self.state.get(&key("exp_avg")), self.state.get(&key("exp_avg_sq"))) {
                (Some(m), Some(v)) => (m.clone(), v.clone(), self.state[&key("step")].to_vec1::<f64>()?[0]),
                _ => (g.zeros_like()?, g.zeros_like()?, 0.0),
            };
            let t = t + 1.0;
            let weight_decay = if p.decay { c.weight_decay } else { 0.0 };
            let value = (p.var.as_detached_tensor() * (1.0 - lr * weight_decay))?;
            let m = (&m + ((&g - &m)? * (1.0 - b1))?)?;
            let v = ((&v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let step_size = lr / (1.0 - b1.powf(t));
            let denom = ((v.sqrt()? / (1.0 - b2.powf(t)).sqrt())? + c.eps)?;
            p.var.set(&(value - ((&m / denom)? * step_size)?)?)?;
            self.state.insert(key("exp_avg"), m);
            self.state.insert(key("exp_avg_sq"), v);
            self.state.insert(key("step"), Tensor::new(&[t], &candle_core::Device::Cpu)?);
        }
        Ok(())
    }

    /// The parameters it updates, by name.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The optimizer's state for the checkpoint.
    pub fn state(&self) -> &HashMap<String, Tensor> {
        &self.state
    }

    pub fn load_state(&mut self, state: HashMap<String, Tensor>) -> Result<()> {
        let name = self.cfg.name;
        for (key, t) in &state {
            // SGD: the parameter's own name; AdamW: `<state>.<parameter>`.
            let (param, shape) = match name {
                OptimizerName::Sgd => (key.as_str(), None),
                OptimizerName::AdamW => match key.split_once('.') {
                    Some(("step", p)) => (p, Some(vec![1])),
                    Some((k, p)) if ADAMW_STATE.contains(&k) => (p, None),
                    _ => anyhow::bail!(
                        "optimizer state `{key}` is not AdamW's ({}.<parameter>): a checkpoint of another optimizer?",
                        ADAMW_STATE.join(" | ")
                    ),
                },
            };
            let Some(p) = self.params.iter().find(|p| p.name == param) else {
                anyhow::bail!(
                    "optimizer state `{key}` names no parameter of this model (train.optimizer.name is `{name}`: a checkpoint of another optimizer or model?)"
                );
            };
            let expected = shape.unwrap_or_else(|| p.var.dims().to_vec());
            if t.dims() != expected {
                anyhow::bail!("optimizer state `{key}` has shape {:?}, expected {expected:?}", t.dims());
            }
        }
        self.state = state;
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
                ..Default::default()
            };
            let mut sgd =
                Optimizer::new(vec![Param { name: "w".into(), var: var.clone(), lr_mult: 10.0, decay: true }], &cfg);
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
                ..Default::default()
            };
            let p0 = Tensor::randn(0f32, 1., 3001, &Device::Cpu).unwrap();
            let vars = [Var::from_tensor(&p0).unwrap(), Var::from_tensor(&p0.to_device(&gpu).unwrap()).unwrap()];
            let mut sgds = vars
                .clone()
                .map(|var| Optimizer::new(vec![Param { name: "w".into(), var, lr_mult: 10.0, decay: true }], &cfg));
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
            ..Default::default()
        };
        let mut sgd =
            Optimizer::new(vec![Param { name: "w".into(), var: var.clone(), lr_mult: 2.0, decay: true }], &cfg);
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
