//! SPG, Self-produced Guidance (Zhang et al., ECCV 2018), as wsolevaluation builds it.
//! The classifier is a 1x1 conv to class maps (`SPG_A4`) on the backbone's output, logits
//! = their spatial mean, CAM = the class's map. Three auxiliary branches each predict one
//! foreground map, trained with masks the network produces itself:
//!
//! - B2 (on the backbone at tap `b2`) learns the mask of the GT-class map (thresholds 1),
//! - B1 (at tap `b1`, earlier) learns the mask of B2's sigmoid (thresholds 2),
//! - C (on the backbone's output) learns the mask of mean(sigmoid B1, sigmoid B2)
//!   (thresholds 3).
//!
//! B1 and B2 each start with their own 3x3 conv (`SPG_B_1a`, `SPG_B_2a`) and share the rest
//! (`SPG_B_shared`: 3x3 conv, ReLU, 1x1 conv to one channel). A mask is 1 above its high
//! threshold (or, when fewer than 30 pixels are, above 0.7 of the map's maximum), 0 below
//! its low one, ignored in between; each branch's loss is the binary cross-entropy with
//! logits over the pixels not ignored, all maps at the input size (bilinear). Loss =
//! CE + the three. Weight names follow wsolevaluation.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_layer as conv2d, Conv2d};

use super::Knob;
use crate::config::SpgConfig;
use crate::draws::{Draws, LayerDraws};
use crate::models::{class_map, minmax_rows, Backbone, Output, SpgTaps, WsolModel};

/// `wsol sweep`'s default search range for SPG.
pub const SEARCH: &[(&str, Knob)] = &[("model.spg.threshold_1h", Knob::Uniform(0.5, 1.0))];
use wsol_ops::loss::masked_bce_with_logits;
use wsol_ops::upsample::bilinear;

/// A mask with fewer foreground pixels than this falls back to 0.7 of the map's maximum.
const MIN_FOREGROUND: f64 = 30.0;
const FALLBACK_RATIO: f64 = 0.7;

pub struct SpgHead {
    backbone: Box<dyn Backbone>,
    taps: SpgTaps,
    b1a: Conv2d,
    b2a: Conv2d,
    shared: [Conv2d; 2],
    c: [Conv2d; 2],
    classes: Conv2d,
    thresholds: [(f64, f64); 3],
    /// The draws of the layers inside the network (Inception's dropout), replaced every step.
    draws: LayerDraws,
}

/// 3x3 conv, padding 1.
fn conv3(c_in: usize, c_out: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    conv2d(c_in, c_out, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb)
}

fn conv1(c_in: usize, c_out: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    conv2d(c_in, c_out, 1, Default::default(), vb)
}

impl SpgHead {
    pub fn new(
        backbone: Box<dyn Backbone>,
        num_classes: usize,
        cfg: &SpgConfig,
        draws: LayerDraws,
        vb: &VarBuilder,
    ) -> anyhow::Result<Self> {
        let Some(taps) = backbone.spg_taps() else {
            anyhow::bail!("model.head: spg needs a backbone built with SPG taps");
        };
        let (c, w) = (backbone.out_channels(), taps.width);
        Ok(SpgHead {
            b1a: conv3(taps.b1_channels, w, vb.pp("SPG_B_1a.0"))?,
            b2a: conv3(taps.b2_channels, w, vb.pp("SPG_B_2a.0"))?,
            shared: [conv3(w, w, vb.pp("SPG_B_shared.0"))?, conv1(w, 1, vb.pp("SPG_B_shared.2"))?],
            c: [conv3(c, taps.c_width, vb.pp("SPG_C.0"))?, conv1(taps.c_width, 1, vb.pp("SPG_C.2"))?],
            classes: conv1(c, num_classes, vb.pp("SPG_A4"))?,
            backbone,
            taps,
            thresholds: cfg.pairs(),
            draws,
        })
    }

    fn branch_b(&self, first: &Conv2d, x: &Tensor) -> candle_core::Result<Tensor> {
        self.shared[1].forward(&self.shared[0].forward_relu(&first.forward_relu(x)?)?)
    }
}

/// The self-produced mask of `attention` [B, L] (values in [0, 1]): (target, valid), both
/// [B, L] in {0, 1}; valid = foreground or background, the rest is ignored.
pub(crate) fn spg_mask(attention: &Tensor, high: f64, low: f64) -> candle_core::Result<(Tensor, Tensor)> {
    let a = attention.detach();
    let above = a.gt(high)?;
    let few = above.to_dtype(DType::F32)?.sum_keepdim(1)?.lt(MIN_FOREGROUND)?; // [B, 1]
    let fallback = a.broadcast_gt(&(a.max_keepdim(1)? * FALLBACK_RATIO)?)?;
    let foreground = few.broadcast_as(a.shape())?.where_cond(&fallback, &above)?;
    // Background is written after foreground in the reference, so it wins.
    let background = a.lt(low)?;
    let zero = background.zeros_like()?;
    let target = background.where_cond(&zero, &foreground)?;
    let valid = background.where_cond(&background, &foreground)?;
    Ok((target.to_dtype(a.dtype())?, valid.to_dtype(a.dtype())?))
}

impl WsolModel for SpgHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Output> {
        let (_, _, h, w) = x.dims4()?;
        let n = self.backbone.layers().len();
        let (t1, t2) = (self.taps.b1 + 1, self.taps.b2 + 1);
        let f1 = self.backbone.forward_stages(x, 0..t1, train)?;
        let b1 = self.branch_b(&self.b1a, &f1)?;
        let f2 = self.backbone.forward_stages(&f1, t1..t2, train)?;
        let b2 = self.branch_b(&self.b2a, &f2)?;
        let features = self.backbone.forward_stages(&f2, t2..n, train)?;
        let c = self.c[1].forward(&self.c[0].forward_relu(&features)?)?;
        let maps = self.classes.forward(&features)?;
        let logits = maps.mean(D::Minus1)?.mean(D::Minus1)?;
        // The self-produced masks live at the input size, as the reference's 224.
        let aux =
            [b1, b2, c].iter().map(|m| bilinear(&m.squeeze(1)?, h, w, false)).collect::<candle_core::Result<_>>()?;
        Ok(Output { logits, features, class_maps: Some(maps), aux })
    }

    fn loss(&self, out: &Output, labels: &Tensor) -> candle_core::Result<Tensor> {
        let maps = out.class_maps.as_ref().expect("SPG outputs carry class maps");
        let [b1, b2, c] = [&out.aux[0], &out.aux[1], &out.aux[2]]; // [B, H, W] logits
        let (b, h, w) = b1.dims3()?;
        let flat = |t: &Tensor| t.reshape((b, h * w));
        let attention = minmax_rows(&flat(&bilinear(&class_map(maps, labels)?.detach(), h, w, false)?)?)?;
        let b1_prob = candle_nn::ops::sigmoid(&flat(b1)?.detach())?;
        let b2_prob = candle_nn::ops::sigmoid(&flat(b2)?.detach())?;
        let fused = ((b1_prob + &b2_prob)? * 0.5)?;
        let mut loss = candle_nn::loss::cross_entropy(&out.logits, labels)?;
        for (logits, source, (high, low)) in
            [(b2, &attention, self.thresholds[0]), (b1, &b2_prob, self.thresholds[1]), (c, &fused, self.thresholds[2])]
        {
            let (target, valid) = spg_mask(source, high, low)?;
            loss = (loss + masked_bce_with_logits(&flat(logits)?, &target, &valid)?)?;
        }
        Ok(loss)
    }

    fn cam(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        class_map(out.class_maps.as_ref().expect("SPG outputs carry class maps"), targets)
    }

    fn is_new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("SPG_") || self.backbone.is_new_layer(var_name)
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    fn logits_from_features(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        self.classes.forward(features)?.mean(D::Minus1)?.mean(D::Minus1)
    }

    fn begin_step(&self, draws: Box<dyn Draws>) {
        self.draws.set(draws);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use candle_nn::VarMap;

    use super::*;
    use crate::config::ModelConfig;

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    /// Image 0 has 40 pixels above 0.7 (foreground), 10 below 0.1 (background) and 50
    /// between (ignored). Image 1 has only 5 above 0.7, so its foreground falls back to
    /// > 0.7 * max = 0.56: 25 pixels at 0.6 join the 5 at 0.8.
    #[test]
    fn self_produced_mask_by_hand() {
        let mut a0 = vec![0.9f32; 40];
        a0.extend([0.05; 10]);
        a0.extend([0.4; 50]);
        let mut a1 = vec![0.8f32; 5];
        a1.extend([0.6; 25]);
        a1.extend([0.3; 70]);
        let att = Tensor::from_vec([a0, a1].concat(), (2, 100), &Device::Cpu).unwrap();
        let (target, valid) = spg_mask(&att, 0.7, 0.1).unwrap();
        let (t, v) = (rows(&target), rows(&valid));
        assert_eq!(t[0].iter().sum::<f32>(), 40.0);
        assert_eq!(v[0].iter().sum::<f32>(), 50.0);
        assert_eq!(&v[0][40..50], &[1.0; 10]);
        assert_eq!(&t[0][40..50], &[0.0; 10]);
        assert_eq!(t[1].iter().sum::<f32>(), 30.0);
        assert_eq!(&t[1][..30], &[1.0; 30]);
        assert_eq!(v[1].iter().sum::<f32>(), 30.0);
    }

    /// Background wins where both hold (a map whose maximum is below `low`).
    #[test]
    fn background_overrides_the_fallback_foreground() {
        let att = Tensor::new(&[[0.01f32, 0.02, 0.0]], &Device::Cpu).unwrap();
        let (t, v) = spg_mask(&att, 0.7, 0.05).unwrap();
        assert_eq!(rows(&t), vec![vec![0.0; 3]]);
        assert_eq!(rows(&v), vec![vec![1.0; 3]]);
    }

    /// On the tiny backbone: the loss is CE plus three finite, positive terms, every
    /// branch gets a gradient, and the CAM is the class map at the feature size.
    #[test]
    fn trains_every_branch() {
        let varmap = VarMap::new();
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let cfg = ModelConfig { width: 4, method: "spg".parse().unwrap(), ..Default::default() };
        let net = crate::methods::build(&cfg, 3, vb).unwrap();
        crate::models::init::initialize(&varmap, 3, &dev).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev).unwrap();
        let labels = Tensor::new(&[1u32, 2], &dev).unwrap();
        let out = net.forward_t(&x, true).unwrap();
        assert_eq!(out.aux[0].dims(), [2, 32, 32]);
        let loss = net.loss(&out, &labels).unwrap();
        let ce: f32 = candle_nn::loss::cross_entropy(&out.logits, &labels).unwrap().to_scalar().unwrap();
        let total: f32 = loss.to_scalar().unwrap();
        assert!(total.is_finite() && total > ce + 0.1, "total {total}, ce {ce}");
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for name in
            ["SPG_B_1a.0.weight", "SPG_B_2a.0.weight", "SPG_B_shared.0.weight", "SPG_C.0.weight", "SPG_A4.weight"]
        {
            let g = grads.get(data[name].as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0, "{name}");
        }
        assert_eq!(net.cam(&out, &labels).unwrap().dims(), [2, 8, 8]);
        assert!(net.is_new_layer("SPG_C.0.weight"));
    }
}
