//! LayerCAM (Jiang et al., TIP 2021): per-position weights ReLU(g), so the map keeps the
//! layer's spatial detail (useful on early layers).

use candle_core::Tensor;

use super::GradientWeights;

pub struct LayerCam;

impl GradientWeights for LayerCam {
    const NAME: &'static str = "layercam";

    fn weights(_a: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        g.relu()
    }
}
