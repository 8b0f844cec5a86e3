//! WSOL methods, one file each: what a method adds to a backbone (a head, layers inside
//! it, auxiliary branches), its loss, its batch transform, and its default search range
//! for `wsol sweep`. Its settings are `model.<method>` of the config.
//!
//! | method | file | model | training batch |
//! |---|---|---|---|
//! | `cam` (Zhou et al. 2016) | [`cam`] | GAP + linear classifier | as loaded |
//! | `acol` (Zhang et al. 2018) | [`acol`] | two erasing classifier branches | as loaded |
//! | `spg` (Zhang et al. 2018) | [`spg`] | classifier maps + self-produced guidance branches | as loaded |
//! | `adl` (Choe & Shim 2019) | [`adl`] | CAM with attention-based drop layers in the backbone | as loaded |
//! | `has` (Singh & Lee 2017) | [`has`] | CAM | patches hidden |
//! | `cutmix` (Yun et al. 2019) | [`cutmix`] | CAM | a box pasted from another image |
//! | `bas` (Wu et al. 2022) | [`bas`] | conv classifier + foreground-map generator, erased pass | as loaded |
//! | `tscam` (Gao et al. 2021) | [`tscam`] | DeiT + conv head on patch tokens, class-token attention | as loaded |
//! | `scm` (Bai et al. 2022) | [`scm`] | TS-CAM + spatial calibration layers in training only | as loaded |
//!
//! Adding a method: one file here, one name in [`Method`], and the arms of the matches
//! below (the compiler lists them).

pub mod acol;
pub mod adl;
pub mod bas;
pub mod cam;
pub mod cutmix;

pub mod has;
pub mod scm;
pub mod spg;
pub mod tscam;

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_nn::VarBuilder;

pub use crate::config::Method;
use crate::config::{Backbone, ModelConfig};
use crate::models::{self, InsertedLayer, Trunk, WsolModel};
pub use cutmix::Mix;

use crate::draws::{Draws, LayerDraws};

/// The methods with a layout on a transformer backbone (`deit_*`).
pub const TRANSFORMER_METHODS: [Method; 5] = [Method::Cam, Method::Has, Method::CutMix, Method::TsCam, Method::Scm];
/// The methods that exist on a transformer backbone only.
pub const TRANSFORMER_ONLY: [Method; 2] = [Method::TsCam, Method::Scm];

/// Builds the configured model (backbone + the method's parts) under the root of `vb`.
pub fn build(cfg: &ModelConfig, num_classes: usize, vb: VarBuilder) -> Result<Box<dyn WsolModel>> {
    let method = cfg.method;
    let transformer = models::deit::dims(cfg.backbone).is_some();
    if transformer && !TRANSFORMER_METHODS.contains(&method) {
        let names: Vec<&str> = TRANSFORMER_METHODS.iter().map(|m| m.as_str()).collect();
        bail!(
            "model.method: `{method}` has no layout for the transformer `{}` (its reference code inserts CNN layers); methods for transformers: {}",
            cfg.backbone,
            names.join(", ")
        );
    }
    if TRANSFORMER_ONLY.contains(&method) && !transformer {
        let others: Vec<&str> =
            Method::ALL.iter().filter(|m| !TRANSFORMER_ONLY.contains(m)).map(|m| m.as_str()).collect();
        bail!(
            "model.method: `{method}` needs a transformer backbone (deit_tiny, deit_small, vit_small), not `{}`; methods for CNN backbones: {}",
            cfg.backbone,
            others.join(", ")
        );
    }
    if cfg.backbone == Backbone::EfficientNetLite0 && matches!(method, Method::Adl | Method::Spg) {
        bail!(
            "model.method: `{method}` has no published layout for efficientnet_lite0 (use tiny, resnet18, resnet50, vgg16 or inception_v3)"
        );
    }
    if method == Method::Bas && !bas::BACKBONES.contains(&cfg.backbone) {
        let names: Vec<&str> = bas::BACKBONES.iter().map(|b| b.as_str()).collect();
        bail!(
            "model.backbone: `{}` has no layout for model.method `bas` (BAS runs on: {})",
            cfg.backbone,
            names.join(", ")
        );
    }
    // wsolevaluation builds a different trunk for ACoL and SPG (pools, extra layers, taps),
    // BAS's authors theirs.
    let trunk = match method {
        Method::Acol => Trunk::Acol,
        Method::Spg => Trunk::Spg,
        Method::Bas => Trunk::Bas,
        Method::Cam | Method::Has | Method::CutMix | Method::Adl | Method::TsCam | Method::Scm => Trunk::Standard,
    };
    // What the layers inside the network draw (ADL, Inception's dropout, DeiT's drop
    // path); the model's `begin_step` replaces it every step.
    let draws = LayerDraws::default();
    let inserted: Option<Arc<dyn InsertedLayer>> = match method {
        Method::Adl => Some(Arc::new(adl::Adl::new(&cfg.adl, draws.clone()))),
        _ => None,
    };
    let backbone = models::build_backbone(cfg, trunk, inserted, &draws, vb.clone())?;
    Ok(match method {
        // HaS and CutMix train a CAM model on altered batches; ADL is a CAM model with its
        // layers inside the backbone.
        Method::Cam | Method::Has | Method::CutMix | Method::Adl => {
            Box::new(cam::CamHead::new(backbone, num_classes, draws, vb.pp("fc"))?)
        }
        Method::Acol => {
            let width = cfg.acol.width.unwrap_or_else(|| acol::default_width(cfg.backbone, backbone.out_channels()));
            Box::new(acol::AcolHead::new(backbone, num_classes, &cfg.acol, width, &vb)?)
        }
        Method::Spg => Box::new(spg::SpgHead::new(backbone, num_classes, &cfg.spg, draws, &vb)?),
        Method::Bas => Box::new(bas::BasHead::new(backbone, num_classes, cfg, &draws, &vb)?),
        Method::TsCam => Box::new(tscam::TsCamHead::new(backbone, num_classes, vb)?),
        Method::Scm => Box::new(scm::ScmHead::new(backbone, num_classes, &cfg.scm, vb)?),
    })
}

/// Re-initializes the method's own layers where its authors initialize them otherwise than
/// `models::init` (after it, before pretrained weights load).
pub fn initialize(
    cfg: &ModelConfig,
    varmap: &candle_nn::VarMap,
    seed: u64,
    device: &candle_core::Device,
) -> Result<()> {
    if models::deit::dims(cfg.backbone).is_some() {
        models::deit::initialize(varmap, seed, device)?;
    }
    match cfg.method {
        Method::Bas => bas::initialize(varmap, seed, device),
        Method::Scm => scm::initialize(varmap, &cfg.scm, device),
        Method::Cam | Method::Acol | Method::Has | Method::CutMix | Method::Adl | Method::Spg | Method::TsCam => Ok(()),
    }
}

/// A warning when the method's own layers dwarf the backbone (ACoL's branches at a width
/// set far above the backbone's channels), from the parameter counts of `varmap`.
pub fn cost_warning(cfg: &ModelConfig, varmap: &candle_nn::VarMap) -> Option<String> {
    if cfg.method != Method::Acol {
        return None;
    }
    acol::cost_warning_of(varmap)
}

/// Applies the method's batch transform to `images` ([n, 3, size, size], normalized) in
/// place; returns the label mix for CutMix.
pub fn transform_batch(
    cfg: &ModelConfig,
    images: &mut [f32],
    labels: &[u32],
    size: usize,
    draws: &mut dyn Draws,
) -> Option<Mix> {
    match cfg.method {
        Method::Has => {
            has::hide_patches(images, size, cfg.has.grid_size, cfg.has.drop_rate, draws);
            None
        }
        Method::CutMix => {
            // wsolevaluation draws before it looks at beta.
            let mix = draws.uniform() < cfg.cutmix.prob && cfg.cutmix.beta > 0.0;
            mix.then(|| cutmix::cutmix(images, labels, size, cfg.cutmix.beta, draws))
        }
        Method::Cam | Method::Acol | Method::Spg | Method::Adl | Method::Bas | Method::TsCam | Method::Scm => None,
    }
}

/// A search range of `wsol sweep` (see `train::sweep`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Knob {
    LogUniform(f64, f64),
    Uniform(f64, f64),
}

/// The method's own knobs and their default search ranges (the learning rate is the
/// sweep's for every method).
pub fn search_space(method: Method) -> &'static [(&'static str, Knob)] {
    match method {
        Method::Cam | Method::TsCam | Method::Scm => &[],
        Method::Acol => acol::SEARCH,
        Method::Has => has::SEARCH,
        Method::CutMix => cutmix::SEARCH,
        Method::Adl => adl::SEARCH,
        Method::Spg => spg::SEARCH,
        Method::Bas => bas::SEARCH,
    }
}
