//! `tiny`: a small VGG-style GAP network for CPU work and tests. Stride 4 (a stride-2
//! stem, one max-pool), so a 48x48 input gives a 12x12 map — fine enough for CAM boxes
//! on small images. The strided stem instead of a full-resolution conv + pool roughly
//! halves a CPU training step (measured: 36 -> 56 img/s at width 16, 64px, batch 32).
//!
//! Method layouts mirror VGG16's: ADL after the pool and after each later conv block;
//! SPG's B1 reads the pool's output, B2 the next block's. BAS's generator reads the
//! block before the pool, as on VGG16 (conv4_3 there, before pool4).

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_no_bias, Conv2d};

use super::{InsertedLayer, Trunk};
use super::{SpgTaps, Staged};
use crate::config::ModelConfig;
use wsol_ops::BatchNorm;

struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBnRelu {
    /// Weight names follow torchvision's `features.N` numbering: conv at N, BN at N+1.
    /// `frozen`: `model.freeze_bn`, batch norm on its running statistics in training too.
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        index: usize,
        frozen: bool,
        vb: &VarBuilder,
    ) -> candle_core::Result<Self> {
        let cfg = Conv2dConfig { padding: 1, stride, ..Default::default() };
        let conv = conv2d_no_bias(c_in, c_out, 3, cfg, vb.pp(index.to_string()))?;
        let bn = BatchNorm::new(c_out, 1e-5, 0.1, frozen, vb.pp((index + 1).to_string()))?;
        Ok(ConvBnRelu { conv, bn })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_relu_t(&self.conv.forward(x)?, train)
    }
}

enum Layer {
    Conv(ConvBnRelu),
    MaxPool2,
}

pub struct Tiny {
    layers: Vec<Layer>,
    /// `features.N` of each layer's output (a conv block's ReLU, or the pool).
    names: Vec<String>,
    out_channels: usize,
    /// ADL after the pool and after each later layer (`head: adl`).
    adl: Option<Arc<dyn InsertedLayer>>,
    spg: bool,
    bas: bool,
}

/// (in, out, stride) per 3x3 conv; None is a 2x2 max-pool. Dilating the last convs (for a
/// larger receptive field) was tried: faster classification learning, but gridded, less
/// accurate CAMs (GT-known 70.2 -> 67.8 with dilation 2 at 48px).
fn plan(w: usize) -> [Option<(usize, usize, usize)>; 5] {
    [Some((3, w, 2)), Some((w, 2 * w, 1)), None, Some((2 * w, 4 * w, 1)), Some((4 * w, 4 * w, 1))]
}

/// The input pixels one feature-map cell sees (25): each 3x3 conv adds 2 input strides, the
/// 2x2 pool 1, and strides multiply.
pub fn receptive_field() -> usize {
    let (mut field, mut jump) = (1, 1);
    for step in plan(1) {
        let (k, s) = match step {
            Some((_, _, stride)) => (3, stride),
            None => (2, 2),
        };
        field += (k - 1) * jump;
        jump *= s;
    }
    field
}

impl Tiny {
    pub fn new(
        cfg: &ModelConfig,
        trunk: Trunk,
        adl: Option<Arc<dyn InsertedLayer>>,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let (mut layers, mut names) = (Vec::new(), Vec::new());
        let mut index = 0;
        for step in plan(cfg.width) {
            match step {
                Some((c_in, c_out, stride)) => {
                    layers.push(Layer::Conv(ConvBnRelu::new(c_in, c_out, stride, index, cfg.freeze_bn, &vb)?));
                    names.push(format!("features.{}", index + 2));
                    index += 3; // conv, bn, relu
                }
                None => {
                    layers.push(Layer::MaxPool2);
                    names.push(format!("features.{index}"));
                    index += 1;
                }
            }
        }
        Ok(Tiny { layers, names, out_channels: 4 * cfg.width, adl, spg: trunk == Trunk::Spg, bas: trunk == Trunk::Bas })
    }

    fn run(&self, x: &Tensor, layers: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for k in layers {
            x = match &self.layers[k] {
                Layer::Conv(c) => c.forward_t(&x, train)?,
                Layer::MaxPool2 => wsol_ops::pool::max_pool2(&x)?,
            };
            if let (Some(adl), true) = (&self.adl, k >= 2) {
                x = adl.forward_t(&x, train)?;
            }
        }
        Ok(x)
    }
}

impl Staged for Tiny {
    fn stage_names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn channels(&self) -> usize {
        self.out_channels
    }

    fn run_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, stages, train)
    }

    fn spg_taps(&self) -> Option<SpgTaps> {
        let w = self.out_channels / 4;
        self.spg.then_some(SpgTaps {
            b1: 2,
            b2: 3,
            b1_channels: 2 * w,
            b2_channels: 4 * w,
            width: 2 * w,
            c_width: 2 * w,
        })
    }

    fn bas_tap(&self) -> Option<(usize, usize)> {
        self.bas.then_some((1, self.out_channels / 2))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn receptive_field_of_the_plan() {
        // conv s2: 3; conv: 3 + 2*2 = 7; pool: 7 + 1*2 = 9; conv: 9 + 2*4 = 17; conv: 25.
        assert_eq!(super::receptive_field(), 25);
    }
}
