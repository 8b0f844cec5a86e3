//! Class activation map extractors, pytorch-grad-cam's shape: one base pass collects what
//! a method needs (activations of a layer and, for gradient methods, d score / d
//! activation), and each method only says how channel weights or the map are formed.
//! Everything after (resize, normalize, threshold, score) is shared by the evaluator.
//!
//! | `eval.cam` | file | layers |
//! |---|---|---|
//! | `cam` | classifier.rs | last (the classifier's own maps) |
//! | `gradcam`, `gradcam++`, `xgradcam`, `layercam` | one file each | any |
//! | `scorecam`, `eigencam` | one file each | any (no gradients) |
//! | `bagcams` | bagcams.rs | any (guided ReLU backward, as its authors') |

mod bagcams;
mod classifier;
mod eigencam;
mod gradcam;
mod gradcam_pp;
mod layercam;
mod rollout;
mod scorecam;
mod xgradcam;

use std::marker::PhantomData;
use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};

pub use crate::config::CamMethod;
use crate::models::{Output, WsolModel};

pub use bagcams::BagCams;
pub use classifier::Cam;
pub use eigencam::EigenCam;
pub use gradcam::GradCam;
pub use gradcam_pp::GradCamPlusPlus;
pub use layercam::LayerCam;
pub use rollout::AttentionRollout;
pub use scorecam::ScoreCam;
pub use xgradcam::XGradCam;

/// What a method may read for one batch (all in eval mode).
pub struct CamInput<'a> {
    pub model: &'a dyn WsolModel,
    /// [B, 3, H, W] as fed to the model.
    pub images: &'a Tensor,
    pub out: &'a Output,
    /// u32 [B]: the class whose map is wanted, per image.
    pub targets: &'a Tensor,
}

/// Told `(done, total)` as a long extraction goes (Score-CAM: masked inputs scored), so a
/// caller can show progress; the extractor knows nothing of how it is shown.
pub type ProgressFn = Arc<dyn Fn(usize, usize) + Send + Sync>;

pub trait CamExtractor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Raw (unnormalized) maps [B, h, w], one per image for its target class.
    fn extract(&self, input: &CamInput) -> candle_core::Result<Tensor>;
    /// Where to report progress during `extract`; methods that take a moment ignore it.
    fn set_progress(&mut self, _report: ProgressFn) {}
}

/// The extractor `name` reading layer `layer` (a name from the backbone's `layers()`;
/// None: the last feature map).
pub fn by_name(name: CamMethod, layer: Option<&str>, model: &dyn WsolModel) -> Result<Box<dyn CamExtractor>> {
    let layers = model.backbone().layers();
    let layer = match layer {
        None => layers.len() - 1,
        Some(l) => match layers.iter().position(|n| n == l) {
            Some(k) => k,
            None => bail!("eval.cam_layer: unknown layer `{l}` (this backbone has: {})", layers.join(", ")),
        },
    };
    let at = Layer { index: layer, last: layer + 1 == layers.len() };
    Ok(match name {
        CamMethod::Cam if at.last => Box::new(Cam),
        CamMethod::Cam => {
            bail!("eval.cam_layer: `cam` reads the classifier's own maps; use a gradient method for other layers")
        }
        CamMethod::GradCam => Box::new(Gradient::<GradCam> { layer: at, method: PhantomData }),
        CamMethod::GradCamPlusPlus => Box::new(Gradient::<GradCamPlusPlus> { layer: at, method: PhantomData }),
        CamMethod::XGradCam => Box::new(Gradient::<XGradCam> { layer: at, method: PhantomData }),
        CamMethod::LayerCam => Box::new(Gradient::<LayerCam> { layer: at, method: PhantomData }),
        CamMethod::ScoreCam => Box::new(ScoreCam { layer: at, batch: 32, progress: None }),
        CamMethod::EigenCam => Box::new(EigenCam { layer: at }),
        CamMethod::BagCams => Box::new(BagCams { layer: at }),
        CamMethod::AttentionRollout if model.backbone().transformer().is_none() => {
            bail!("eval.cam: `attention_rollout` reads a transformer's attention; this backbone has none (use deit_tiny, deit_small or vit_small)")
        }
        CamMethod::AttentionRollout => Box::new(AttentionRollout),
    })
}

/// A backbone layer, by index in `Backbone::layers()`.
#[derive(Clone, Copy)]
pub struct Layer {
    index: usize,
    last: bool,
}

impl Layer {
    /// The layer's activations [B, C, h, w] (reused from the forward pass when last).
    fn activations(&self, input: &CamInput) -> candle_core::Result<Tensor> {
        if self.last {
            Ok(input.out.features.detach())
        } else {
            let backbone = input.model.backbone();
            backbone.to_grid(&backbone.forward_to(input.images, self.index)?.detach())
        }
    }

    /// Logits from this layer's activations.
    fn logits_from(&self, input: &CamInput, a: &Tensor) -> candle_core::Result<Tensor> {
        let features = if self.last { a.clone() } else { input.model.backbone().forward_from(a, self.index)? };
        input.model.logits_from_features(&features)
    }

    /// Activations and d(target score)/d(activations), batch-wise: eval-mode images do not
    /// interact, so the gradient of the summed scores is each image's own. The graph is
    /// dropped on return, so memory does not grow over a test set.
    /// A transformer block's tokens are differentiated as they are and put on their grid
    /// after (the class token's gradient dropped with it).
    fn activations_and_grads(&self, input: &CamInput) -> candle_core::Result<(Tensor, Tensor)> {
        self.grads_of(input, false)
    }

    /// Activations and d log(target score)/d(activations), as BagCAMs' authors take them:
    /// the backward seeded with 1 / score per image, not the score's gradient divided
    /// afterwards (a guided backward is not linear in its seed's sign).
    fn activations_and_log_grads(&self, input: &CamInput) -> candle_core::Result<(Tensor, Tensor)> {
        self.grads_of(input, true)
    }

    fn grads_of(&self, input: &CamInput, of_log: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let backbone = input.model.backbone();
        let raw =
            if self.last { input.out.features.detach() } else { backbone.forward_to(input.images, self.index)? };
        let a = Var::from_tensor(&raw.detach())?;
        let logits = self.logits_from(input, a.as_tensor())?;
        let scores = logits.gather(&input.targets.unsqueeze(1)?, 1)?.squeeze(1)?;
        let objective = if of_log { (&scores * scores.detach().recip()?)? } else { scores };
        let grads = objective.sum_all()?.backward()?;
        let g = grads.get(a.as_tensor()).cloned().unwrap_or(a.zeros_like()?);
        if self.last {
            Ok((a.as_tensor().detach(), g))
        } else {
            Ok((backbone.to_grid(&a.as_tensor().detach())?, backbone.to_grid(&g)?))
        }
    }
}

/// How a gradient method weighs the activations: [B, C, 1, 1] per channel, or
/// [B, C, h, w] per position.
pub trait GradientWeights: Send + Sync {
    const NAME: &'static str;
    fn weights(a: &Tensor, g: &Tensor) -> candle_core::Result<Tensor>;
}

/// The shared gradient-method map: ReLU(sum_c weights * A_c).
pub struct Gradient<M> {
    layer: Layer,
    method: PhantomData<M>,
}

impl<M: GradientWeights> CamExtractor for Gradient<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn extract(&self, input: &CamInput) -> candle_core::Result<Tensor> {
        let (a, g) = self.layer.activations_and_grads(input)?;
        a.broadcast_mul(&M::weights(&a, &g)?)?.sum(1)?.relu()
    }
}

/// Sum over the spatial dims, kept: [B, C, h, w] -> [B, C, 1, 1].
fn spatial_sum(t: &Tensor) -> candle_core::Result<Tensor> {
    t.sum_keepdim(3)?.sum_keepdim(2)
}

#[cfg(test)]
mod tests;
