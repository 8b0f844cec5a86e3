//! ACoL (Zhang et al., CVPR 2018), as wsolevaluation builds it: two classifier branches
//! (conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv1x1 to classes) whose outputs are class
//! maps, logits = their spatial mean. Branch A's GT-class map, min-max normalized, marks
//! where it is most confident (>= `erase_threshold`); those positions are zeroed in the
//! features branch B sees, so B must find the rest of the object. Loss CE(A) + CE(B);
//! classification from A; localization map = max of the two normalized maps.
//! Weight names `classifier_A.{0,2,4}` / `classifier_B.*` follow wsolevaluation.

use candle_core::{Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_layer as conv2d, Conv2d};

use super::Knob;
use crate::config::{AcolConfig, AcolMap, Backbone as BackboneName};
use crate::models::{class_map, minmax_rows, Backbone, Output, WsolModel};

/// The weight prefixes of the two branches (wsolevaluation's names).
const BRANCHES: [&str; 2] = ["classifier_A", "classifier_B"];

/// `wsol sweep`'s default search range for ACoL.
pub const SEARCH: &[(&str, Knob)] = &[("model.acol.erase_threshold", Knob::Uniform(0.0, 1.0))];

/// The branches' width when `model.acol.width` is not set: wsolevaluation's 1024 on the
/// layouts it publishes (VGG16, ResNet-50, Inception-v3), elsewhere the backbone's own
/// channel count up to 1024, so a small net does not carry branches many times its size
/// (1024-wide branches on `tiny`'s 64 channels trained 50x slower and localized worse).
pub fn default_width(backbone: BackboneName, channels: usize) -> usize {
    match backbone {
        BackboneName::Vgg16 | BackboneName::ResNet50 | BackboneName::InceptionV3 => 1024,
        BackboneName::Tiny
        | BackboneName::ResNet18
        | BackboneName::EfficientNetLite0
        | BackboneName::DeitTiny
        | BackboneName::DeitSmall
        | BackboneName::VitSmall => channels.min(1024),
    }
}

/// [`cost_warning`] from the parameters of an ACoL model's `varmap` (batch-norm running
/// statistics are not parameters).
pub fn cost_warning_of(varmap: &candle_nn::VarMap) -> Option<String> {
    let data = varmap.data().lock().expect("varmap lock");
    let (mut head, mut rest, mut shape) = (0usize, 0usize, None);
    for (name, var) in data.iter() {
        if name.starts_with(BRANCHES[0]) || name.starts_with(BRANCHES[1]) {
            head += var.elem_count();
            if name.strip_prefix(BRANCHES[0]) == Some(".0.weight") {
                shape = var.dims4().ok();
            }
        } else if !name.ends_with(".running_mean") && !name.ends_with(".running_var") {
            rest += var.elem_count();
        }
    }
    let (width, channels, _, _) = shape?;
    cost_warning(rest, head, width, channels)
}

/// One warning line when the branches hold many times the backbone's parameters (each
/// 3x3 branch conv runs at the feature map's resolution, so they cost about as much).
pub fn cost_warning(backbone_params: usize, head_params: usize, width: usize, channels: usize) -> Option<String> {
    (head_params > 4 * backbone_params).then(|| {
        format!(
            "warning: ACoL's branches ({width} wide on {channels} channels) have {head_params} parameters, {:.0}x the backbone's {backbone_params}; a smaller model.acol.width trains faster (unset, it follows the backbone)",
            head_params as f64 / backbone_params.max(1) as f64
        )
    })
}

struct Branch {
    conv1: Conv2d,
    conv2: Conv2d,
    classes: Conv2d,
}

impl Branch {
    fn new(c_in: usize, width: usize, num_classes: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        Ok(Branch {
            conv1: conv2d(c_in, width, 3, pad1, vb.pp("0"))?,
            conv2: conv2d(width, width, 3, pad1, vb.pp("2"))?,
            classes: conv2d(width, num_classes, 1, Default::default(), vb.pp("4"))?,
        })
    }

    /// Class maps [B, K, h, w].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.classes.forward(&self.conv2.forward_relu(&self.conv1.forward_relu(x)?)?)
    }
}

pub struct AcolHead {
    backbone: Box<dyn Backbone>,
    branch_a: Branch,
    branch_b: Branch,
    erase_threshold: f64,
    map: AcolMap,
}

impl AcolHead {
    pub fn new(
        backbone: Box<dyn Backbone>,
        num_classes: usize,
        cfg: &AcolConfig,
        width: usize,
        vb: &VarBuilder,
    ) -> candle_core::Result<Self> {
        let c = backbone.out_channels();
        Ok(AcolHead {
            branch_a: Branch::new(c, width, num_classes, vb.pp(BRANCHES[0]))?,
            branch_b: Branch::new(c, width, num_classes, vb.pp(BRANCHES[1]))?,
            backbone,
            erase_threshold: cfg.erase_threshold,
            map: cfg.map,
        })
    }

    /// Branch B's class maps on the features with A's confident region (for each
    /// image's `targets` class) erased.
    fn branch_b_maps(&self, features: &Tensor, maps_a: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        let attention = normalize_maps(&class_map(maps_a, targets)?.detach())?;
        let keep = attention.lt(self.erase_threshold)?.to_dtype(features.dtype())?.unsqueeze(1)?;
        self.branch_b.forward(&features.broadcast_mul(&keep)?)
    }
}

/// Min-max normalization of each [h, w] map of [B, h, w]; a constant map becomes 0
/// (wsolevaluation divides by zero there, giving NaN, which is never erased either).
fn normalize_maps(maps: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w) = maps.dims3()?;
    minmax_rows(&maps.reshape((b, h * w))?)?.reshape((b, h, w))
}

fn spatial_mean(maps: &Tensor) -> candle_core::Result<Tensor> {
    maps.mean(D::Minus1)?.mean(D::Minus1)
}

impl WsolModel for AcolHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Output> {
        let features = self.backbone.forward_t(x, train)?;
        let maps_a = self.branch_a.forward(&features)?;
        Ok(Output { logits: spatial_mean(&maps_a)?, features, class_maps: Some(maps_a), aux: Vec::new() })
    }

    fn loss(&self, out: &Output, labels: &Tensor) -> candle_core::Result<Tensor> {
        let maps_a = out.class_maps.as_ref().expect("ACoL outputs carry branch A's maps");
        let logits_b = spatial_mean(&self.branch_b_maps(&out.features, maps_a, labels)?)?;
        candle_nn::loss::cross_entropy(&out.logits, labels)? + candle_nn::loss::cross_entropy(&logits_b, labels)?
    }

    fn cam(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        let maps_a = out.class_maps.as_ref().expect("ACoL outputs carry branch A's maps");
        let of = |maps: &Tensor| normalize_maps(&class_map(maps, targets)?);
        match self.map {
            AcolMap::Fused => of(maps_a)?.maximum(&of(&self.branch_b_maps(&out.features, maps_a, targets)?)?),
            AcolMap::BranchA => of(maps_a),
            AcolMap::BranchB => of(&self.branch_b_maps(&out.features, maps_a, targets)?),
            AcolMap::BranchBUnerased => of(&self.branch_b.forward(&out.features)?),
        }
    }

    fn is_new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("classifier_") || self.backbone.is_new_layer(var_name)
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    fn logits_from_features(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        spatial_mean(&self.branch_a.forward(features)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;

    #[test]
    fn default_width_is_the_papers_on_their_layouts_and_the_backbones_elsewhere() {
        assert_eq!(default_width(BackboneName::Vgg16, 512), 1024);
        assert_eq!(default_width(BackboneName::ResNet50, 2048), 1024);
        assert_eq!(default_width(BackboneName::InceptionV3, 768), 1024);
        assert_eq!(default_width(BackboneName::Tiny, 64), 64);
        assert_eq!(default_width(BackboneName::ResNet18, 512), 512);
        assert_eq!(default_width(BackboneName::EfficientNetLite0, 1280), 1024);
        assert!(cost_warning(100, 300, 8, 4).is_none());
        assert!(cost_warning(100, 500, 1024, 64).unwrap().contains("5x the backbone's 100"));
    }

    /// `model.acol.map`: the fused map is the maximum of the two branches' maps, and
    /// branch B without erasing differs from branch B on erased features.
    #[test]
    fn each_map_is_readable_and_fused_is_their_maximum() {
        let (_vm, mut head) = acol(0.5);
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        let out = head.forward_t(&x, false).unwrap();
        let t = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let mut read = |map| {
            head.map = map;
            head.cam(&out, &t).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (fused, a, b, whole) =
            (read(AcolMap::Fused), read(AcolMap::BranchA), read(AcolMap::BranchB), read(AcolMap::BranchBUnerased));
        let max: Vec<f32> = a.iter().zip(&b).map(|(a, b)| a.max(*b)).collect();
        assert_eq!(fused, max);
        assert_ne!(b, whole, "erasing changes what branch B sees");
    }

    use crate::config::ModelConfig;

    fn acol(threshold: f64) -> (VarMap, AcolHead) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = ModelConfig { width: 4, ..Default::default() };
        let backbone =
            Box::new(crate::models::Tiny::new(&cfg, crate::models::Trunk::Acol, None, vb.pp("features")).unwrap());
        let acol = AcolConfig { erase_threshold: threshold, width: Some(8), map: AcolMap::Fused };
        let head = AcolHead::new(backbone, 3, &acol, 8, &vb).unwrap();
        crate::models::init::initialize(&varmap, 5, &Device::Cpu).unwrap();
        (varmap, head)
    }

    #[test]
    fn normalize_and_gather_by_hand() {
        let maps = Tensor::new(&[[[1f32, 3.], [2., 5.]], [[4., 4.], [4., 4.]]], &Device::Cpu).unwrap();
        let n: Vec<Vec<Vec<f32>>> = normalize_maps(&maps).unwrap().to_vec3().unwrap();
        assert_eq!(n, vec![vec![vec![0.0, 0.5], vec![0.25, 1.0]], vec![vec![0.0; 2]; 2]]);
        let k = Tensor::new(&[[[[0f32]], [[1.]]], [[[2.]], [[3.]]]], &Device::Cpu).unwrap(); // [2, 2, 1, 1]
        let t = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
        let picked: Vec<f32> = class_map(&k, &t).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(picked, vec![1.0, 2.0]);
    }

    /// Branch B sees exactly the features A is not confident about: compare with B run
    /// on features erased by hand from A's normalized map.
    #[test]
    fn erases_where_branch_a_is_confident() {
        let (_vm, head) = acol(0.5);
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        let out = head.forward_t(&x, false).unwrap();
        let t = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let maps_a = out.class_maps.as_ref().unwrap();
        let got = head.branch_b_maps(&out.features, maps_a, &t).unwrap();

        let a: Vec<Vec<Vec<f32>>> = normalize_maps(&class_map(maps_a, &t).unwrap()).unwrap().to_vec3().unwrap();
        let (b, c, h, w) = out.features.dims4().unwrap();
        let mut f: Vec<f32> = out.features.flatten_all().unwrap().to_vec1().unwrap();
        let mut erased = 0;
        for i in 0..b {
            for y in 0..h {
                for x in 0..w {
                    if a[i][y][x] >= 0.5 {
                        erased += 1;
                        (0..c).for_each(|k| f[((i * c + k) * h + y) * w + x] = 0.0);
                    }
                }
            }
        }
        assert!(erased > 0 && erased < b * h * w, "some but not all positions erased: {erased}");
        let want = head.branch_b.forward(&Tensor::from_vec(f, (b, c, h, w), &Device::Cpu).unwrap()).unwrap();
        let diff: f32 =
            (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(diff < 1e-6, "{diff}");
    }

    #[test]
    fn loss_is_both_branches_and_cam_is_their_max() {
        let (_vm, head) = acol(0.6);
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let out = head.forward_t(&x, false).unwrap();
        let maps_b = head.branch_b_maps(&out.features, out.class_maps.as_ref().unwrap(), &labels).unwrap();
        let ce = |l: &Tensor| candle_nn::loss::cross_entropy(l, &labels).unwrap().to_scalar::<f32>().unwrap();
        let want = ce(&out.logits) + ce(&spatial_mean(&maps_b).unwrap());
        let got: f32 = head.loss(&out, &labels).unwrap().to_scalar().unwrap();
        assert!((got - want).abs() < 1e-5);
        let cam = head.cam(&out, &labels).unwrap();
        let na = normalize_maps(&class_map(out.class_maps.as_ref().unwrap(), &labels).unwrap()).unwrap();
        let nb = normalize_maps(&class_map(&maps_b, &labels).unwrap()).unwrap();
        let ge = |p: &Tensor, q: &Tensor| -> bool {
            let d: Vec<f32> = (p - q).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            d.iter().all(|&v| v >= 0.0)
        };
        assert!(ge(&cam, &na) && ge(&cam, &nb));
        assert_eq!(cam.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap(), 1.0);
    }
}
