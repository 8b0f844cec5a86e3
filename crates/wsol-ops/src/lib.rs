//! wsol-ops: the compute kernels of wsol as candle custom ops, and the layers built on
//! them. Knows nothing of WSOL: architectures use it through [`Conv2d`], [`BatchNorm`],
//! the pools, activations and upsampling below.
//!
//! - [`conv`]: convolution: packed GEMM, Winograd F(2x2, 3x3), depthwise, with their
//!   backward passes; candle's or cuDNN's on GPUs.
//! - [`batch_norm`]: batch norm and its fused forms (with ReLU / ReLU6, with a residual sum).
//! - [`pool`], [`activation`], [`upsample`]: pools with padding and `ceil_mode`, the ReLU
//!   family, bilinear upsampling with a backward.
//! - [`rows`], [`self_attention`]: the ops of transformers (LayerNorm, softmax, GELU;
//!   multi-head attention from the qkv projection), one pass each way.
//! - [`sgd`]: the SGD update as in-place passes.
//! - [`cpu`]: the x86 intrinsics every CPU kernel above calls (one place, runtime-dispatched).
//! - [`cuda`]: our CUDA kernels (`.cu` files compiled by NVRTC), in CUDA builds.
//! - [`switches`]: the `WSOL_*` environment switches, read once; [`Kernels`]: what ran.
//! - [`profile`], [`memory`]: per-op timings for `wsol bench --profile`; heap settings.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod activation;
pub mod attention_drop;
pub mod batch_norm;
pub mod conv;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod geometry;
pub mod loss;
pub(crate) mod math;
pub mod memory;
pub mod pool;
pub mod profile;
pub mod rows;
pub mod self_attention;
pub mod sgd;
pub mod switches;
pub mod upsample;

pub use batch_norm::{Act, Bn as BatchNorm};
pub use conv::{conv2d_layer, conv2d_no_bias, Conv2d};

use serde::Serialize;

/// What the kernels of this process run on the CPU: the provenance a run records.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Kernels {
    /// The packed-GEMM microkernel (`avx512`, `avx2`), or `none` (the `gemm` crate's path).
    pub conv_microkernel: String,
    /// Whether 3x3 stride-1 convolutions run Winograd F(2x2, 3x3).
    pub winograd: bool,
    /// `wsol` (our ops) or `candle`.
    pub conv: String,
    /// `wsol` (our ops) or `candle_nn`.
    pub batch_norm: String,
    /// The SIMD features this CPU reports that the kernels can use.
    pub cpu_features: Vec<String>,
    /// The `WSOL_*` variables that were set, as `NAME=value`.
    pub env: Vec<String>,
}

impl Kernels {
    pub fn detect() -> Kernels {
        let s = switches::get();
        let isa = crate::conv::microkernel();
        let mut env = Vec::new();
        if !s.conv_kernel.is_empty() {
            env.push(format!("WSOL_CONV_KERNEL={}", s.conv_kernel));
        }
        if s.candle_conv {
            env.push("WSOL_CANDLE_CONV=1".into());
        }
        if s.candle_bn {
            env.push("WSOL_CANDLE_BN=1".into());
        }
        Kernels {
            conv_microkernel: isa.unwrap_or("none").into(),
            winograd: !s.candle_conv && s.conv_kernel != "direct" && isa.is_some(),
            conv: if s.candle_conv { "candle" } else { "wsol" }.into(),
            batch_norm: if s.candle_bn { "candle_nn" } else { "wsol" }.into(),
            cpu_features: crate::cpu::features(),
            env,
        }
    }

    /// One line for `train.log`.
    pub fn summary(&self) -> String {
        format!(
            "conv {} (microkernel {}, winograd {}), batch norm {}, cpu [{}]{}",
            self.conv,
            self.conv_microkernel,
            if self.winograd { "on" } else { "off" },
            self.batch_norm,
            self.cpu_features.join(" "),
            if self.env.is_empty() { String::new() } else { format!(", {}", self.env.join(" ")) }
        )
    }
}

/// The contiguous f32 data of a custom op's CPU argument.
pub(crate) fn cpu_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expected a contiguous f32 tensor on the CPU"),
    }
}

/// A deterministic test input of `shape`, values spread uniformly over [-spread/2, spread/2).
#[cfg(test)]
pub(crate) fn test_input(shape: &[usize], seed: u64, spread: f32) -> candle_core::Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed);
            ((h >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * spread
        })
        .collect();
    candle_core::Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap()
}

/// max |a - b| / max |b|: how the custom ops are checked against candle's.
#[cfg(test)]
pub(crate) fn rel_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let d: f32 = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    let m: f32 = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    d / m.max(1e-12)
}
