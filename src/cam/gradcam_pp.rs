//! Grad-CAM++ (Chattopadhyay et al., WACV 2018), in the closed form of pytorch-grad-cam:
//! alpha = g^2 / (2 g^2 + sum(A) g^3 + eps) where g != 0, weight = sum(alpha * ReLU(g)).

use candle_core::Tensor;

use super::{spatial_sum, GradientWeights};

pub struct GradCamPlusPlus;

impl GradientWeights for GradCamPlusPlus {
    const NAME: &'static str = "gradcam++";

    fn weights(a: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let g2 = g.sqr()?;
        let g3 = (&g2 * g)?;
        let denom = ((&g2 * 2.0)?.broadcast_add(&spatial_sum(a)?.broadcast_mul(&g3)?)? + 1e-6)?;
        let alpha = g.ne(0f32)?.where_cond(&(&g2 / denom)?, &g.zeros_like()?)?;
        spatial_sum(&(alpha * g.relu()?)?)
    }
}
