//! `wsol bench train`: images per second of full training steps (forward, loss, backward,
//! SGD with momentum) on random input, after warm-up, and the process's peak memory — the
//! numbers to compare with `scripts/bench_pytorch.py` on the same machine and threads.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::config::{ModelConfig, OptimizerConfig};
use crate::models;
use crate::train::optimizer::{Param, Sgd};

pub struct TrainBench {
    pub backbone: String,
    pub head: String,
    pub batch: usize,
    pub size: usize,
    pub classes: usize,
    pub warmup: usize,
    pub steps: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
}

pub struct TrainBenchResult {
    /// Median over the timed steps.
    pub images_per_s: f64,
    pub step_ms: Vec<f64>,
    pub peak_rss_mb: Option<f64>,
}

pub fn train_step_speed(b: &TrainBench) -> Result<TrainBenchResult> {
    let dev = crate::pipeline::device(&b.device)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = ModelConfig { backbone: b.backbone.clone(), head: b.head.clone(), ..Default::default() };
    let net = models::build(&cfg, b.classes, vb)?;
    models::init::initialize(&varmap, 0, &dev)?;
    let params: Vec<Param> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(name, var)| Param { name: name.clone(), var: var.clone(), lr_mult: 1.0 })
        .collect();
    let mut sgd = Sgd::new(params, &OptimizerConfig::default());
    let x = Tensor::randn(0f32, 1., (b.batch, 3, b.size, b.size), &dev)?;
    let labels: Vec<u32> = (0..b.batch).map(|i| (i % b.classes) as u32).collect();
    let y = Tensor::from_vec(labels, b.batch, &dev)?;
    let mut step_ms = Vec::with_capacity(b.steps);
    for k in 0..b.warmup + b.steps {
        let t0 = Instant::now();
        let out = net.forward_t(&x, true)?;
        let loss = net.loss(&out, &y)?;
        sgd.step(&loss.backward()?, 0.01)?;
        loss.to_scalar::<f32>().context("loss")?;
        if k >= b.warmup {
            step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut sorted = step_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    Ok(TrainBenchResult { images_per_s: b.batch as f64 / (median / 1e3), step_ms, peak_rss_mb: peak_rss_mb() })
}

/// VmHWM from /proc (Linux); None elsewhere.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
