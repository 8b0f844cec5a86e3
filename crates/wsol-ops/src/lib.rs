//! wsol-ops: the compute kernels of wsol as candle custom ops, and the layers built on
//! them. Knows nothing of WSOL: architectures use it through [`Conv2d`], [`BatchNorm`],
//! the pools, activations and upsampling below.
//!
//! - [`conv`]: convolution: packed GEMM, Winograd F(2x2, 3x3), depthwise, with their
//!   backward passes; candle's or cuDNN's on GPUs.
//! - [`batch_norm`]: batch norm and its fused forms (with ReLU / ReLU6, with a residual sum).
//! - [`pool`], [`activation`], [`upsample`]: pools with padding and `ceil_mode`, the ReLU
//!   family, bilinear upsampling with a backward.
//! - [`sgd`]: the SGD update as in-place passes.
//! - [`cpu`]: the x86 intrinsics every CPU kernel above calls (one place, runtime-dispatched).
//! - [`cuda`]: our CUDA kernels (`.cu` files compiled by NVRTC), in CUDA builds.
//! - [`switches`]: the `WSOL_*` environment switches, read once, and what ran ([`switches::Kernels`]).
//! - [`profile`], [`memory`]: per-op timings for `wsol bench --profile`; heap settings.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod activation;
pub mod attention_drop;
pub mod batch_norm;
pub mod conv;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod loss;
pub mod memory;
pub mod pool;
pub mod profile;
pub mod sgd;
pub mod switches;
pub mod upsample;

pub use batch_norm::{Act, Bn as BatchNorm};
pub use conv::{conv2d_layer, conv2d_no_bias, Conv2d};

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

/// max |a - b| / max |b|: how the custom ops are checked against candle's.
#[cfg(test)]
pub(crate) fn rel_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let d: f32 = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    let m: f32 = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    d / m.max(1e-12)
}
