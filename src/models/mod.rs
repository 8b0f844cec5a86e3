//! Models = backbone (feature extractor) + WSOL head (how logits and class maps are made).
//!
//! Adding a backbone or a head is one file plus one line in [`build`].

pub mod autocast;
pub mod deit;
mod efficientnet;
mod inception;
pub mod init;
pub mod pretrained;
mod pth_legacy;
mod resnet;
mod tiny;
mod vgg;

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::config::{Backbone as BackboneName, ModelConfig};

pub use deit::Deit;
pub use efficientnet::EfficientNetLite0;
pub use inception::InceptionV3;
pub use resnet::ResNet;
pub use tiny::Tiny;
pub use vgg::Vgg16;

/// What one forward pass gives the trainer and the evaluator.
pub struct Output {
    /// [B, K] class scores.
    pub logits: Tensor,
    /// [B, C, h, w] the last feature maps (the CAM's input).
    pub features: Tensor,
    /// [B, K, h, w] class maps, for heads that make them directly (ACoL's branch A).
    pub class_maps: Option<Tensor>,
    /// Further outputs the method's loss needs (SPG's auxiliary maps).
    pub aux: Vec<Tensor>,
}

/// Where SPG's auxiliary branches read a backbone: the outputs of stages `b1` and `b2`
/// (indices into the stage list), their channels, and the branches' widths.
#[derive(Debug, Clone, Copy)]
pub struct SpgTaps {
    pub b1: usize,
    pub b2: usize,
    pub b1_channels: usize,
    pub b2_channels: usize,
    /// Width of B1, B2 and their shared layers.
    pub width: usize,
    /// Width of branch C.
    pub c_width: usize,
}

/// A feature extractor ending in a spatial map.
pub trait Backbone: Send + Sync {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
    fn out_channels(&self) -> usize;
    /// Layers a CAM can be read from, in forward order, by their torchvision names; the
    /// last one is the output of [`Backbone::forward_t`].
    fn layers(&self) -> Vec<String>;
    /// The output of layer `k` of [`Backbone::layers`] (eval mode).
    fn forward_to(&self, x: &Tensor, k: usize) -> candle_core::Result<Tensor>;
    /// The rest of the forward pass from layer `k`'s output (eval mode).
    fn forward_from(&self, a: &Tensor, k: usize) -> candle_core::Result<Tensor>;
    /// Layers of the backbone that pretrained weights do not have (VGG's `conv6`).
    fn is_new_layer(&self, _var_name: &str) -> bool {
        false
    }
    /// Runs the stages `stages` of [`Backbone::layers`] on `x`.
    fn forward_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor>;
    /// Where SPG reads this backbone; `None` when it was not built for `head: spg`.
    fn spg_taps(&self) -> Option<SpgTaps>;
    /// Where BAS's foreground-map generator reads this backbone: the index of the stage
    /// whose output it takes, and that output's channels; `None` when it was not built
    /// for `method: bas`.
    fn bas_tap(&self) -> Option<(usize, usize)>;
    /// Whether variable `var_name` of the whole model trains at `new_layer_lr_mult`, when
    /// this backbone's wsolevaluation recipe groups by its own rule; `None`: the new layers do.
    fn new_layer_lr(&self, var_name: &str) -> Option<bool>;
    /// A layer's output (from [`Backbone::forward_to`]) as the map [B, C, h, w] a CAM
    /// reads: the identity for CNNs; a transformer's patch tokens on their grid, the class
    /// token dropped (what users of pytorch-grad-cam write as `reshape_transform`).
    fn to_grid(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        Ok(a.clone())
    }
    /// The transformer behind this backbone, for methods that read its attention.
    fn transformer(&self) -> Option<&Deit> {
        None
    }
}

/// A backbone made of named stages run in order (each a CAM layer); implementing it gives
/// [`Backbone`], so a new backbone only says what its stages are and how to run them.
pub(crate) trait Staged: Send + Sync {
    /// Stage names, in forward order; the last stage's output is the feature map.
    fn stage_names(&self) -> Vec<String>;
    fn channels(&self) -> usize;
    /// Runs `stages` (indices into [`Staged::stage_names`]) on `x`.
    fn run_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor>;
    /// See [`Backbone::is_new_layer`].
    fn new_layer(&self, _var_name: &str) -> bool {
        false
    }
    /// See [`Backbone::spg_taps`].
    fn spg_taps(&self) -> Option<SpgTaps> {
        None
    }
    /// See [`Backbone::new_layer_lr`].
    fn lr_group(&self, _var_name: &str) -> Option<bool> {
        None
    }
    /// See [`Backbone::bas_tap`].
    fn bas_tap(&self) -> Option<(usize, usize)> {
        None
    }
}

impl<T: Staged> Backbone for T {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run_stages(x, 0..self.stage_names().len(), train)
    }

    fn out_channels(&self) -> usize {
        self.channels()
    }

    fn layers(&self) -> Vec<String> {
        self.stage_names()
    }

    fn forward_to(&self, x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        self.run_stages(x, 0..k + 1, false)
    }

    fn forward_from(&self, a: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        self.run_stages(a, k + 1..self.stage_names().len(), false)
    }

    fn is_new_layer(&self, var_name: &str) -> bool {
        self.new_layer(var_name)
    }

    fn forward_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        self.run_stages(x, stages, train)
    }

    fn spg_taps(&self) -> Option<SpgTaps> {
        Staged::spg_taps(self)
    }

    fn new_layer_lr(&self, var_name: &str) -> Option<bool> {
        self.lr_group(var_name)
    }

    fn bas_tap(&self) -> Option<(usize, usize)> {
        Staged::bas_tap(self)
    }
}

/// A trainable WSOL model: the method decides the loss and how class maps are read.
pub trait WsolModel: Send + Sync {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Output>;
    /// Training loss for u32 `labels` [B].
    fn loss(&self, out: &Output, labels: &Tensor) -> candle_core::Result<Tensor>;
    /// The method's own class activation map for class `targets[b]` of each image: [B, h, w].
    fn cam(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor>;
    /// Variables that are new to the task (not in pretrained weights).
    fn is_new_layer(&self, var_name: &str) -> bool;
    /// Variables that train at `new_layer_lr_mult`: the new layers, unless the backbone's
    /// wsolevaluation recipe groups otherwise ([`Backbone::new_layer_lr`]).
    fn has_new_layer_lr(&self, var_name: &str) -> bool {
        self.backbone().new_layer_lr(var_name).unwrap_or_else(|| self.is_new_layer(var_name))
    }
    fn backbone(&self) -> &dyn Backbone;
    /// Logits from the backbone's output (eval mode): the part of the forward pass that
    /// gradient-based CAMs differentiate through.
    fn logits_from_features(&self, features: &Tensor) -> candle_core::Result<Tensor>;
    /// Called by the trainer before each step with that step's draws for the layers, for
    /// methods that draw inside the network (ADL).
    fn begin_step(&self, _draws: Box<dyn crate::draws::Draws>) {}
}

/// `maps[b, targets[b]]`: [B, K, h, w] -> [B, h, w].
pub fn class_map(maps: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let (b, _, h, w) = maps.dims4()?;
    let index =
        targets.to_dtype(candle_core::DType::U32)?.reshape((b, 1, 1, 1))?.broadcast_as((b, 1, h, w))?.contiguous()?;
    maps.gather(&index, 1)?.squeeze(1)
}

/// Min-max normalization of each row of `[N, L]`; a constant row becomes 0 (the
/// reference code divides by zero there). ACoL's attention and Score-CAM's masks use it.
pub fn minmax_rows(flat: &Tensor) -> candle_core::Result<Tensor> {
    let (lo, hi) = (flat.min_keepdim(1)?, flat.max_keepdim(1)?);
    let range = (&hi - &lo)?;
    let range = range.gt(0f64)?.where_cond(&range, &range.ones_like()?)?;
    flat.broadcast_sub(&lo)?.broadcast_div(&range)
}

/// How wsolevaluation builds a backbone for a method: the same trunk for most, another
/// for ACoL (its pools) and SPG (its taps and extra layers); BAS's trunk is its authors'
/// (wpy1999/BAS: the generator's tap, no `conv6`); see each backbone's doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trunk {
    Standard,
    Acol,
    Spg,
    Bas,
}

/// A weightless layer a method inserts between a backbone's stages, at the places its
/// reference code does (ADL's attention-based drop). The identity at evaluation.
pub trait InsertedLayer: Send + Sync {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

/// A warning when the backbone sees far less than the input: the `tiny` net's cells see
/// 25 pixels, right for 48-pixel shapes, but at 96 px and more an object is classified
/// from its parts and its CAM covers fragments.
pub fn receptive_field_warning(model: &ModelConfig, image_size: usize) -> Option<String> {
    let field = match model.backbone {
        BackboneName::Tiny => tiny::receptive_field(),
        _ => return None,
    };
    (3 * field < image_size).then(|| {
        format!(
            "warning: the `tiny` backbone's map cells see {field}x{field} pixels, far less than the \
             {image_size}-pixel input: objects larger than that are seen in parts; for real images \
             start from configs/custom.yaml (ResNet-18)"
        )
    })
}

/// Builds the configured backbone (`model.backbone`) under the root of `vb`.
pub fn build_backbone(
    cfg: &ModelConfig,
    trunk: Trunk,
    inserted: Option<Arc<dyn InsertedLayer>>,
    draws: &crate::draws::LayerDraws,
    vb: VarBuilder,
) -> Result<Box<dyn Backbone>> {
    Ok(match cfg.backbone {
        BackboneName::Tiny => Box::new(Tiny::new(cfg, trunk, inserted, vb.pp("features"))?),
        BackboneName::ResNet18 => Box::new(ResNet::new(18, cfg, trunk, inserted, vb)?),
        BackboneName::ResNet50 => Box::new(ResNet::new(50, cfg, trunk, inserted, vb)?),
        BackboneName::Vgg16 => Box::new(Vgg16::new(cfg, trunk, inserted, vb)?),
        BackboneName::InceptionV3 => Box::new(InceptionV3::new(cfg, trunk, inserted, draws, vb)?),
        BackboneName::EfficientNetLite0 if inserted.is_some() || matches!(trunk, Trunk::Spg | Trunk::Bas) => {
            bail!("efficientnet_lite0 has no published layout for inserted layers or SPG's taps")
        }
        BackboneName::EfficientNetLite0 => Box::new(EfficientNetLite0::new(cfg, vb)?),
        BackboneName::DeitTiny | BackboneName::DeitSmall | BackboneName::VitSmall
            if inserted.is_some() || trunk != Trunk::Standard =>
        {
            bail!(
                "model.backbone: `{}` is a transformer; model.method `{}` has no layout for it",
                cfg.backbone,
                cfg.method
            )
        }
        BackboneName::DeitTiny | BackboneName::DeitSmall | BackboneName::VitSmall => {
            Box::new(Deit::new(cfg.backbone, cfg.patch_size, cfg.drop_path_rate, draws, vb)?)
        }
    })
}
