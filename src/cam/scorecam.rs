//! Score-CAM (Wang et al., CVPRW 2020): each channel, upsampled (bilinear, corners
//! aligned) and min-max normalized, masks the input; the target's logit on each masked
//! input, softmaxed over channels, weighs the channels. No gradients; C forward passes
//! per image, run `batch` masked images at a time.

use candle_core::{Tensor, D};

use wsol_ops::upsample::bilinear;

use super::{CamExtractor, CamInput, Layer, ProgressFn};

pub struct ScoreCam {
    pub(super) layer: Layer,
    pub(super) batch: usize,
    /// Told (masked inputs scored, of B * C) after each forward pass: one image's map
    /// takes C / `batch` passes, seconds to minutes on a CPU.
    pub(super) progress: Option<ProgressFn>,
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

    fn set_progress(&mut self, report: ProgressFn) {
        self.progress = Some(report);
    }
}

impl ScoreCam {
    /// Channel weights [B, C] (each row sums to one).
    pub(super) fn weights(&self, input: &CamInput, a: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = a.dims4()?;
        let (_, _, big_h, big_w) = input.images.dims4()?;
        let up = bilinear(&a.reshape((b * c, h, w))?, big_h, big_w, true)?; // [BC, H, W]
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
                if let Some(report) = &self.progress {
                    report(i * c + start + n, b * c);
                }
            }
            rows.push(candle_nn::ops::softmax(&Tensor::cat(&scores, 0)?, D::Minus1)?);
        }
        Tensor::stack(&rows, 0)
    }
}
