//! Bilinear resizing of [.., h, w] maps as two matrix products (rows, then columns): it
//! runs on any device and is differentiable, which candle's nearest-only upsampling is
//! not enough for.

use candle_core::{DType, Device, Tensor};

/// The [out, n] matrix that resamples `n` samples to `out` bilinearly. With
/// `align_corners` the end samples coincide (PyTorch's `UpsamplingBilinear2d`); without,
/// pixel centres are matched and edges clamped (`F.interpolate(mode="bilinear")`'s default).
pub fn interpolation_matrix(out: usize, n: usize, align_corners: bool, dev: &Device) -> candle_core::Result<Tensor> {
    let mut m = vec![0f32; out * n];
    for o in 0..out {
        let pos = if align_corners {
            if out > 1 {
                o as f64 * (n - 1) as f64 / (out - 1) as f64
            } else {
                0.0
            }
        } else {
            ((o as f64 + 0.5) * n as f64 / out as f64 - 0.5).max(0.0)
        };
        let i0 = (pos.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        let f = (pos - i0 as f64).clamp(0.0, 1.0) as f32;
        m[o * n + i0] += 1.0 - f;
        m[o * n + i1] += f;
    }
    Tensor::from_vec(m, (out, n), dev)?.to_dtype(DType::F32)
}

/// `x` [.., h, w] resized to [.., out_h, out_w].
pub fn bilinear(x: &Tensor, out_h: usize, out_w: usize, align_corners: bool) -> candle_core::Result<Tensor> {
    let dims = x.dims();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let lead: usize = dims[..dims.len() - 2].iter().product();
    let my = interpolation_matrix(out_h, h, align_corners, x.device())?.to_dtype(x.dtype())?; // [H, h]
    let mx = interpolation_matrix(out_w, w, align_corners, x.device())?.to_dtype(x.dtype())?.t()?; // [w, W]
    let y = my.broadcast_matmul(&x.reshape((lead, h, w))?)?.broadcast_matmul(&mx)?;
    let mut shape = dims[..dims.len() - 2].to_vec();
    shape.extend([out_h, out_w]);
    y.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch: `F.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
    /// mode="bilinear", align_corners=False)` gives these rows.
    #[test]
    fn half_pixel_bilinear_by_hand() {
        let x = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = bilinear(&x, 4, 4, false).unwrap().to_vec2().unwrap();
        let want = [[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]];
        for (r, w) in y.iter().zip(want) {
            for (a, b) in r.iter().zip(w) {
                assert!((a - b).abs() < 1e-6, "{y:?}");
            }
        }
        let corners: Vec<Vec<f32>> = bilinear(&x, 3, 3, true).unwrap().to_vec2().unwrap();
        assert_eq!(corners, vec![vec![1.0, 1.5, 2.0], vec![2.0, 2.5, 3.0], vec![3.0, 3.5, 4.0]]);
    }
}
