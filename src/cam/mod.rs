//! Class activation map extractors. Each method only says how its map is formed from a
//! forward pass; everything after (resize, normalize, threshold, score) is shared.

mod classifier;

use anyhow::{bail, Result};
use candle_core::Tensor;

use crate::models::{Output, WsolModel};

pub use classifier::Cam;

pub trait CamExtractor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Raw (unnormalized) maps [B, h, w] for class `targets[b]` of each image.
    fn extract(&self, model: &dyn WsolModel, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor>;
}

/// Names accepted by [`by_name`].
pub const METHODS: &[&str] = &["cam"];

pub fn by_name(name: &str) -> Result<Box<dyn CamExtractor>> {
    match name {
        "cam" => Ok(Box::new(Cam)),
        other => bail!("eval.cam: unknown CAM method `{other}` (available: cam)"),
    }
}
