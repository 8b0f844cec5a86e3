//! XGrad-CAM (Fu et al., BMVC 2020): weight = sum(g * A) / (sum(A) + eps).

use candle_core::Tensor;

use super::{spatial_sum, GradientWeights};

pub struct XGradCam;

impl GradientWeights for XGradCam {
    const NAME: &'static str = "xgradcam";

    fn weights(a: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        spatial_sum(&(g * a)?)?.broadcast_div(&(spatial_sum(a)? + 1e-7)?)
    }
}
