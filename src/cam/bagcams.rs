//! BagCAMs (Zhu et al., ECCV 2022): every position of the layer is a local classifier,
//! weighted by how the whole bag of them agrees. With t = g * A (g = d log(s_c) / dA, the
//! target logit's log as the authors' code differentiates it: the backward seeded with
//! 1 / s_c, which flips sign where s_c < 0), the map is sum_k ReLU((mean_hw t_k + 1) * t_k), upsampled bilinearly
//! (half-pixel) to the input and min-max normalized there, as their `generate` does.
//!
//! Their wrapper also clamps the gradient at every ReLU module it crosses on the way back
//! (guided backpropagation, a hook on each `nn.ReLU`): none lies after the last layer, but
//! at earlier layers it changes the map (by up to 0.78 at ResNet-18's layer3), so the
//! backward here runs guided too ([`wsol_ops::activation::with_guided_relu_backward`]).

use candle_core::Tensor;

use wsol_ops::activation::with_guided_relu_backward;
use wsol_ops::upsample::bilinear;

use super::{CamExtractor, CamInput, Layer};

pub struct BagCams {
    pub(super) layer: Layer,
}

impl CamExtractor for BagCams {
    fn name(&self) -> &'static str {
        "bagcams"
    }

    fn extract(&self, input: &CamInput) -> candle_core::Result<Tensor> {
        let (a, g) = with_guided_relu_backward(|| self.layer.activations_and_log_grads(input))?;
        let b = a.dim(0)?;
        let t = (a * g)?;
        let bag = t.affine(1.0, 1.0)?.mean_keepdim(3)?.mean_keepdim(2)?; // mean_hw(t + 1), as theirs
        let map = t.broadcast_mul(&bag)?.relu()?.sum(1)?; // [B, h, w]
        let (_, _, h, w) = input.images.dims4()?;
        let up = bilinear(&map, h, w, false)?;
        // Normalized here, not only by the evaluator: the reference normalizes after its own
        // upsampling, and a map at the input size is not resized again.
        crate::models::minmax_rows(&up.flatten_from(1)?)?.reshape((b, h, w))
    }
}
