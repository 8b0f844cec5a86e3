//! The model's own class map: CAM for GAP + linear heads (Zhou et al. 2016), the fused
//! branch maps for methods whose head produces class maps directly.

use candle_core::Tensor;

use super::CamExtractor;
use crate::models::{Output, WsolModel};

pub struct Cam;

impl CamExtractor for Cam {
    fn name(&self) -> &'static str {
        "cam"
    }

    fn extract(&self, model: &dyn WsolModel, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        model.cam(out, targets)
    }
}
