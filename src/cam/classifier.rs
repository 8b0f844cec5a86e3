//! The model's own class map: CAM for GAP + linear heads (Zhou et al. 2016), the fused
//! branch maps for methods whose head produces class maps directly.

use candle_core::Tensor;

use super::{CamExtractor, CamInput};

pub struct Cam;

impl CamExtractor for Cam {
    fn name(&self) -> &'static str {
        "cam"
    }

    fn extract(&self, input: &CamInput) -> candle_core::Result<Tensor> {
        input.model.cam(input.out, input.targets)
    }
}
