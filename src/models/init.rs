//! Seeded initialization with the published rules (torchvision's): He-normal (fan_out)
//! for convolutions, N(0, 0.01) for linear layers, ones/zeros for batch norm.
//!
//! candle's CPU device cannot be seeded and its default inits differ from PyTorch's, so
//! every variable is overwritten here from a ChaCha stream keyed by (seed, name): the
//! same seed gives the same weights on any machine, and adding a layer does not shift
//! the others.

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

pub fn initialize(varmap: &VarMap, seed: u64, device: &Device) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("running_var") || (dims.len() == 1 && name.ends_with("weight")) {
            vec![1.0; n]
        } else if dims.len() == 1 {
            vec![0.0; n] // biases, BN beta, running means
        } else {
            let std = if dims.len() == 4 { (2.0 / (dims[0] * dims[2] * dims[3]) as f64).sqrt() } else { 0.01 };
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(name.as_bytes()));
            let normal = Normal::new(0.0, std).expect("valid std");
            (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
        };
        var.set(&Tensor::from_vec(values, dims, device)?)?;
    }
    Ok(())
}

/// Stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}
