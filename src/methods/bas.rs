//! BAS, background activation suppression (Wu et al., CVPR 2022), as its authors' code
//! builds it (wpy1999/BAS, `Model/{vgg,resnet,inception}.py`, `train.py`, `BAS_inference.py`).
//!
//! * Classifier: three convs on the backbone's output (3x3 to `width`, ReLU, 3x3, ReLU,
//!   1x1 to the classes, ReLU): class maps; logits are their spatial mean.
//! * Foreground-map generator: a 3x3 conv from an earlier feature map (the backbone's
//!   BAS tap: ResNet's layer3, VGG16's conv4_3, Inception-v3's Mixed_6e) to one map per
//!   class, then a sigmoid.
//! * Loss = CE(logits) + `fg_weight` CE(foreground scores) + mean over images of
//!   (background activation + `area_weight` x mean of the GT class's foreground map).
//!   Foreground scores: the class maps weighted by the foreground map (2x2-averaged to
//!   their size), spatially averaged. Background activation: the GT-class score of the
//!   rest of the network run on the tap's features with the foreground erased (detached
//!   features times 1 - map), divided by the GT-class score of the whole image (detached);
//!   0 where it is not smaller.
//! * The erased pass runs on copies of the weights that the loss does not train (their
//!   `copy.deepcopy` of the layers each forward): here the same stages built on detached
//!   views of the same tensors, so they follow every update and take no gradient; their
//!   batch norm in training normalizes with the erased batch's statistics, and updates
//!   running statistics of its own (the copy's, thrown away as theirs are).
//! * Localization map: the GT class's foreground map, or with `top_k` the mean of the
//!   maps of the `top_k` classes scored highest (their CUB inference).
//!
//! Their weight names: `classifier_cls.{0,2,4}` (`classifier.{0,2,4}` in their Inception-v3
//! file), `classifier_loc.0`.

use candle_core::{DType, Device, Module, Shape, Tensor, D};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Conv2dConfig, Init, VarBuilder};

use wsol_ops::conv::{conv2d_layer as conv2d, Conv2d};

use super::Knob;
use crate::config::{Backbone as BackboneName, BasConfig, ModelConfig};
use crate::models::{class_map, Backbone, Output, Trunk, WsolModel};

/// `wsol sweep`'s default search range for BAS: the area constraint's weight around the
/// authors' values (0.7 to 2.5).
pub const SEARCH: &[(&str, Knob)] = &[("model.bas.area_weight", Knob::Uniform(0.0, 3.0))];

/// The backbones BAS has a layout for (`model.backbone`).
pub const BACKBONES: [BackboneName; 5] = [
    BackboneName::Tiny,
    BackboneName::ResNet18,
    BackboneName::ResNet50,
    BackboneName::Vgg16,
    BackboneName::InceptionV3,
];

/// The authors' CUB area weight for the backbone (`bas_loss` of each model file).
pub fn default_area_weight(backbone: BackboneName) -> f64 {
    match backbone {
        BackboneName::Vgg16 => 0.7,
        BackboneName::InceptionV3 => 1.0,
        _ => 1.2,
    }
}

/// The authors' CUB weight of the foreground scores' CE (`train.py`: 0 on VGG16).
pub fn default_fg_weight(backbone: BackboneName) -> f64 {
    match backbone {
        BackboneName::Vgg16 => 0.0,
        _ => 0.5,
    }
}

/// The classifier convs' width when `model.bas.width` is unset: theirs (1024) on their
/// layouts, the backbone's channels up to 1024 elsewhere (as ACoL's branches).
pub fn default_width(backbone: BackboneName, channels: usize) -> usize {
    match backbone {
        BackboneName::Vgg16 | BackboneName::ResNet50 | BackboneName::InceptionV3 => 1024,
        _ => channels.min(1024),
    }
}

/// The resolved knobs: `model.bas` with the authors' values where unset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    pub area_weight: f64,
    pub fg_weight: f64,
    pub top_k: Option<usize>,
}

impl Knobs {
    pub fn of(cfg: &BasConfig, backbone: BackboneName) -> Knobs {
        Knobs {
            area_weight: cfg.area_weight.unwrap_or_else(|| default_area_weight(backbone)),
            fg_weight: cfg.fg_weight.unwrap_or_else(|| default_fg_weight(backbone)),
            top_k: cfg.top_k,
        }
    }
}

/// The authors' initialization of the new layers (`initialize_weights(..., 'xavier')` of
/// their ResNet): Xavier-uniform conv weights, zero biases, from a stream keyed by (seed,
/// name) as `models::init`. (torchvision's He rule, `models::init`, draws the 1x1 class
/// conv ~3x wider: on the demo, from a trained `tiny` backbone, two of five ReLU'd class
/// maps then died.)
pub fn initialize(varmap: &candle_nn::VarMap, seed: u64, device: &Device) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let data = varmap.data().lock().expect("varmap lock");
    for (name, var) in data.iter().filter(|(n, _)| n.starts_with("classifier_cls.") || n.starts_with("classifier_loc."))
    {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() == 4 {
            let field = dims[2] * dims[3];
            let bound = (6.0 / ((dims[0] + dims[1]) * field) as f64).sqrt();
            let key = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ key);
            (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
        } else {
            vec![0.0; n]
        };
        var.set(&Tensor::from_vec(values, dims, device)?)?;
    }
    Ok(())
}

/// Hands out detached views of another builder's tensors (same storage, no gradient), so
/// layers built from it compute with the current weights and train none of them. Batch
/// norm running statistics are shared only when frozen (`model.freeze_bn`: read, never
/// written); otherwise the layers copy them, and their training-mode updates stay there.
struct Detached<'a> {
    root: VarBuilder<'a>,
    share_running: bool,
}

impl SimpleBackend for Detached<'_> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.root.get_with_hints_dtype(s, name, h, dtype)?;
        let running = name.ends_with(".running_mean") || name.ends_with(".running_var");
        Ok(if running && self.share_running { t } else { t.detach() })
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        Ok(self.root.get_unchecked_dtype(name, dtype)?.detach())
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.root.contains_tensor(name)
    }
}

/// conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv1x1 -> ReLU: class maps.
struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    classes: Conv2d,
}

impl Classifier {
    fn new(c_in: usize, width: usize, num_classes: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        Ok(Classifier {
            conv1: conv2d(c_in, width, 3, pad1, vb.pp("0"))?,
            conv2: conv2d(width, width, 3, pad1, vb.pp("2"))?,
            classes: conv2d(width, num_classes, 1, Default::default(), vb.pp("4"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.classes.forward_relu(&self.conv2.forward_relu(&self.conv1.forward_relu(x)?)?)
    }
}

/// The loss and its terms (each averaged over the batch), for logging and parity.
pub struct LossTerms {
    /// CE of the logits.
    pub cls: Tensor,
    /// CE of the foreground scores.
    pub fg: Tensor,
    /// Background activation ratio.
    pub bg: Tensor,
    /// Mean of the GT class's foreground map.
    pub area: Tensor,
    /// Per image: the GT-class score of the whole image and of the erased features.
    pub score: Tensor,
    pub erased_score: Tensor,
    /// cls + fg_weight fg + bg + area_weight area.
    pub total: Tensor,
}

pub struct BasHead {
    backbone: Box<dyn Backbone>,
    classifier: Classifier,
    generator: Conv2d,
    /// The stages after the tap and the classifier on detached weights: the erased pass.
    frozen_backbone: Box<dyn Backbone>,
    frozen_classifier: Classifier,
    tap: usize,
    knobs: Knobs,
}

impl BasHead {
    pub fn new(
        backbone: Box<dyn Backbone>,
        num_classes: usize,
        cfg: &ModelConfig,
        draws: &crate::draws::LayerDraws,
        vb: &VarBuilder,
    ) -> anyhow::Result<Self> {
        let Some((tap, tap_channels)) = backbone.bas_tap() else {
            anyhow::bail!("model.backbone: `{}` was not built with BAS's layout", cfg.backbone);
        };
        let c = backbone.out_channels();
        let width = cfg.bas.width.unwrap_or_else(|| default_width(cfg.backbone, c));
        let classifier = Classifier::new(c, width, num_classes, vb.pp("classifier_cls"))?;
        let generator = conv2d(
            tap_channels,
            num_classes,
            3,
            Conv2dConfig { padding: 1, ..Default::default() },
            vb.pp("classifier_loc.0"),
        )?;
        let root = vb.root();
        let detached = Detached { root: root.clone(), share_running: cfg.freeze_bn };
        let frozen = VarBuilder::from_backend(Box::new(detached), root.dtype(), root.device().clone());
        let frozen_backbone = crate::models::build_backbone(cfg, Trunk::Bas, None, draws, frozen.clone())?;
        let frozen_classifier = Classifier::new(c, width, num_classes, frozen.pp("classifier_cls"))?;
        Ok(BasHead {
            backbone,
            classifier,
            generator,
            frozen_backbone,
            frozen_classifier,
            tap,
            knobs: Knobs::of(&cfg.bas, cfg.backbone),
        })
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs
    }

    /// The loss terms; `train`: the batch norm mode of the erased pass (training uses the
    /// detached copy; in eval mode the weights take no step, so the model's own layers).
    pub fn loss_terms(&self, out: &Output, labels: &Tensor, train: bool) -> candle_core::Result<LossTerms> {
        let (tap_features, fg_all) = tap_and_maps(out);
        let class_maps = out.class_maps.as_ref().expect("BAS outputs carry the class maps");
        let fg = class_map(fg_all, labels)?; // [B, H, W]
        let (b, h, w) = fg.dims3()?;
        let labels_col = labels.to_dtype(DType::U32)?.reshape((b, 1))?;
        let score = out.logits.gather(&labels_col, 1)?.squeeze(1)?.detach();

        let erased = tap_features.detach().broadcast_mul(&fg.affine(-1.0, 1.0)?.unsqueeze(1)?)?;
        let n = self.backbone.layers().len();
        let (rest, classifier) = if train {
            (self.frozen_backbone.as_ref(), &self.frozen_classifier)
        } else {
            (self.backbone.as_ref(), &self.classifier)
        };
        let erased_features = rest.forward_stages(&erased, self.tap + 1..n, train)?;
        let erased_logits = spatial_mean(&classifier.forward(&erased_features)?)?;
        let residual = erased_logits.gather(&labels_col, 1)?.squeeze(1)?;
        let ratio = residual.broadcast_div(&(&score + 1e-8)?)?;
        // Their `res[x_res >= x_sum] = 0`: no suppression asked once nothing is left to suppress.
        let bg = residual.lt(&score)?.where_cond(&ratio, &ratio.zeros_like()?)?;
        let area = fg.reshape((b, h * w))?.mean(1)?;

        let fg_small = fg.unsqueeze(1)?.avg_pool2d(2)?;
        if fg_small.dims()[2..] != class_maps.dims()[2..] {
            candle_core::bail!(
                "BAS: the foreground map ({h}x{w}) halved is not the class maps' size ({:?})",
                &class_maps.dims()[2..]
            );
        }
        let fg_logits = spatial_mean(&class_maps.broadcast_mul(&fg_small)?)?;
        let cls = candle_nn::loss::cross_entropy(&out.logits, labels)?;
        let fg_ce = candle_nn::loss::cross_entropy(&fg_logits, labels)?;
        let bg = bg.mean_all()?;
        let area = area.mean_all()?;
        let total = ((&cls + (&fg_ce * self.knobs.fg_weight)?)? + (&bg + (&area * self.knobs.area_weight)?)?)?;
        Ok(LossTerms { cls, fg: fg_ce, bg, area, total, score, erased_score: residual })
    }

    /// The localization map of each image: its `targets` class's foreground map, or the
    /// mean of its `top_k` highest-scored classes' maps.
    pub fn localization_maps(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        let (_, fg_all) = tap_and_maps(out);
        let Some(k) = self.knobs.top_k else {
            return class_map(fg_all, targets);
        };
        let (b, classes, h, w) = fg_all.dims4()?;
        let k = k.min(classes);
        let scores: Vec<Vec<f64>> = out.logits.to_dtype(DType::F64)?.to_vec2()?;
        let mut index = Vec::with_capacity(b * k);
        for row in &scores {
            let mut order: Vec<u32> = (0..classes as u32).collect();
            // Highest first; equal scores by class index, as a stable sort gives.
            order.sort_by(|&i, &j| row[j as usize].total_cmp(&row[i as usize]));
            index.extend_from_slice(&order[..k]);
        }
        let index = Tensor::from_vec(index, (b, k, 1, 1), fg_all.device())?.broadcast_as((b, k, h, w))?.contiguous()?;
        fg_all.gather(&index, 1)?.mean(1)
    }
}

/// The tap's features and the foreground maps of every class, as `forward_t` stores them.
fn tap_and_maps(out: &Output) -> (&Tensor, &Tensor) {
    match out.aux.as_slice() {
        [tap, maps, ..] => (tap, maps),
        _ => panic!("BAS outputs carry the tap's features and the foreground maps"),
    }
}

fn spatial_mean(maps: &Tensor) -> candle_core::Result<Tensor> {
    maps.mean(D::Minus1)?.mean(D::Minus1)
}

impl WsolModel for BasHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Output> {
        let n = self.backbone.layers().len();
        let tap = self.backbone.forward_stages(x, 0..self.tap + 1, train)?;
        let features = self.backbone.forward_stages(&tap, self.tap + 1..n, train)?;
        let class_maps = self.classifier.forward(&features)?;
        let logits = spatial_mean(&class_maps)?;
        let fg_all = candle_nn::ops::sigmoid(&self.generator.forward(&tap)?)?;
        Ok(Output { logits, features, class_maps: Some(class_maps), aux: vec![tap, fg_all] })
    }

    fn loss(&self, out: &Output, labels: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.loss_terms(out, labels, true)?.total)
    }

    fn cam(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        self.localization_maps(out, targets)
    }

    fn is_new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("classifier_") || self.backbone.is_new_layer(var_name)
    }

    /// Their optimizer: everything named `classifier` at 10x (and the rest at 1x),
    /// whatever wsolevaluation's recipe for the backbone says.
    fn has_new_layer_lr(&self, var_name: &str) -> bool {
        self.is_new_layer(var_name)
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    fn logits_from_features(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        spatial_mean(&self.classifier.forward(features)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::config::Method;

    fn bas(top_k: Option<usize>) -> (VarMap, BasHead) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = ModelConfig {
            width: 4,
            method: Method::Bas,
            bas: BasConfig { top_k, ..Default::default() },
            ..Default::default()
        };
        let draws = crate::draws::LayerDraws::default();
        let backbone = crate::models::build_backbone(&cfg, Trunk::Bas, None, &draws, vb.clone()).unwrap();
        let head = BasHead::new(backbone, 3, &cfg, &draws, &vb).unwrap();
        crate::models::init::initialize(&varmap, 5, &Device::Cpu).unwrap();
        (varmap, head)
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// The erased pass's copy computes what the model's own layers compute (same weights,
    /// also after they change), and gives them no gradient.
    #[test]
    fn the_frozen_copy_follows_the_weights_and_trains_none() {
        let (varmap, head) = bas(None);
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        let n = head.backbone.layers().len();
        let run = |b: &dyn Backbone, c: &Classifier| {
            let t = b.forward_stages(&x, 0..head.tap + 1, false).unwrap();
            c.forward(&b.forward_stages(&t, head.tap + 1..n, false).unwrap()).unwrap()
        };
        let same = |h: &BasHead| {
            max_abs(&run(h.backbone.as_ref(), &h.classifier), &run(h.frozen_backbone.as_ref(), &h.frozen_classifier))
        };
        assert_eq!(same(&head), 0.0);
        // The optimizer's updates (in place); the copy's running statistics are its own
        // (it runs in training mode, on batch statistics).
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if !name.contains("running_") {
                var.set(&(var.as_tensor() * 1.5).unwrap()).unwrap();
            }
        }
        assert_eq!(same(&head), 0.0, "the copy sees updated weights");

        let out = head.forward_t(&x, true).unwrap();
        let labels = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let t = head.loss_terms(&out, &labels, true).unwrap();
        let grads = t.bg.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let has = |name: &str| grads.get(data[name].as_tensor()).is_some();
        assert!(has("classifier_loc.0.weight"), "the background term trains the generator");
        assert!(!has("classifier_cls.0.weight"), "and not the classifier it reads");
    }

    #[test]
    fn total_is_the_weighted_terms_and_maps_are_gt_or_top_k() {
        let (_vm, head) = bas(None);
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let out = head.forward_t(&x, false).unwrap();
        let t = head.loss_terms(&out, &labels, false).unwrap();
        let s = |t: &Tensor| t.to_scalar::<f32>().unwrap();
        let k = head.knobs();
        assert_eq!(k, Knobs { area_weight: 1.2, fg_weight: 0.5, top_k: None });
        assert!((s(&t.total) - (s(&t.cls) + 0.5 * s(&t.fg) + s(&t.bg) + 1.2 * s(&t.area))).abs() < 1e-5);
        assert!(s(&t.bg) >= 0.0 && s(&t.bg) < 1.0 && s(&t.area) > 0.0 && s(&t.area) < 1.0);
        let gt = head.cam(&out, &labels).unwrap();
        assert_eq!(max_abs(&gt, &class_map(&out.aux[1], &labels).unwrap()), 0.0);

        let (_vm, all) = bas(Some(3));
        let out = all.forward_t(&x, false).unwrap();
        let mean = out.aux[1].mean(1).unwrap();
        assert!(max_abs(&all.cam(&out, &labels).unwrap(), &mean) < 1e-6, "top-k of all classes: their mean");
    }
}
