//! Score-CAM (Wang et al., CVPRW 2020): each channel, upsampled (bilinear, corners
//! aligned) and min-max normalized, masks the input; the target's logit on each masked
//! input, softmaxed over channels, weighs the channels. No gradients; C forward passes
//! per image, run `batch` masked images at a time.

use candle_core::{DType, Device, Tensor, D};

use super::{CamExtractor, CamInput, Layer};

pub struct ScoreCam {
    pub(super) layer: Layer,
    pub(super) batch: usize,
}

impl CamExtractor for ScoreCam {
    fn name(&self) -> &'static str {
        "scorecam"
    }

    fn extract(&self, input: &CamInput) -> candle_core::Result<Tensor> {
        let a = self.layer.activations(input)?;
        let weights = self.weights(input, &a)?; // [B, C]
        a.broadcast_mul(&weights.unsqueeze(2)?.unsqueeze(3)?)?.sum(1)?.relu()
    }
}

impl ScoreCam {
    /// Channel weights [B, C] (each row sums to one).
    pub(super) fn weights(&self, input: &CamInput, a: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = a.dims4()?;
        let (_, _, big_h, big_w) = input.images.dims4()?;
        let dev = a.device();
        let my = interpolation_matrix(big_h, h, dev)?; // [H, h]
        let mx = interpolation_matrix(big_w, w, dev)?.t()?; // [w, W]
        let up = my.broadcast_matmul(&a.reshape((b * c, h, w))?)?.broadcast_matmul(&mx)?; // [BC, H, W]
                                                                                          // A constant channel masks everything out.
        let masks = crate::models::minmax_rows(&up.flatten_from(1)?)?.reshape((b, c, 1, big_h, big_w))?;
        let targets: Vec<u32> = input.targets.to_vec1()?;
        let mut rows = Vec::with_capacity(b);
        for (i, &t) in targets.iter().enumerate() {
            let masked = input.images.get(i)?.unsqueeze(0)?.broadcast_mul(&masks.get(i)?)?; // [C, 3, H, W]
            let mut scores = Vec::with_capacity(c);
            for start in (0..c).step_by(self.batch.max(1)) {
                let n = self.batch.max(1).min(c - start);
                // Detached: a kept score would otherwise hold its whole forward graph (the
                // weights are variables), C forward passes per image (2.4 GB at batch 32).
                let logits = input.model.forward_t(&masked.narrow(0, start, n)?, false)?.logits.detach();
                scores.push(logits.narrow(1, t as usize, 1)?.squeeze(1)?);
            }
            rows.push(candle_nn::ops::softmax(&Tensor::cat(&scores, 0)?, D::Minus1)?);
        }
        Tensor::stack(&rows, 0)
    }
}

/// Bilinear interpolation with aligned corners (PyTorch's `UpsamplingBilinear2d`) from
/// `n` to `out` samples, as an [out, n] matrix.
fn interpolation_matrix(out: usize, n: usize, dev: &Device) -> candle_core::Result<Tensor> {
    let mut m = vec![0f32; out * n];
    for o in 0..out {
        let pos = if out > 1 { o as f64 * (n - 1) as f64 / (out - 1) as f64 } else { 0.0 };
        let i0 = (pos.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        let f = (pos - i0 as f64) as f32;
        m[o * n + i0] += 1.0 - f;
        m[o * n + i1] += f;
    }
    Tensor::from_vec(m, (out, n), dev)?.to_dtype(DType::F32)
}
