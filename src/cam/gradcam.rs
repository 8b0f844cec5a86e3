//! Grad-CAM (Selvaraju et al., ICCV 2017): channel weight = spatial mean of the gradient.

use candle_core::Tensor;

use super::GradientWeights;

pub struct GradCam;

impl GradientWeights for GradCam {
    const NAME: &'static str = "gradcam";

    fn weights(_a: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        g.mean_keepdim(3)?.mean_keepdim(2)
    }
}
