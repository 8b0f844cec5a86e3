//! ResNet-18 and ResNet-50 (He et al. 2016) with torchvision's layer and weight names
//! (`conv1`, `bn1`, `layerN.M.conv1`, `...downsample.0/1`), so ImageNet weights load as
//! they are. As in wsolevaluation's ResNet CAM models, layer4 keeps stride 1 (a 224 input
//! gives a 14x14 map instead of 7x7, fine enough for boxes), and `large_feature_map`
//! keeps layer3 at stride 1 too (28x28).
//!
//! ADL layers sit where wsolevaluation puts them in ResNet-50: after layer3's first
//! block and after layer4's first and last blocks. For SPG, layer3's first block is a
//! stage of its own (`layer3.0`, wsolevaluation's `SPG_A1`), the tap of branch B1.
//!
//! For BAS, the authors' ResNet-50 (wpy1999/BAS `Model/resnet.py`): layer3 at stride 1
//! whatever `large_feature_map` says, its output the generator's input (28x28 at 224),
//! then a 2x2 max-pool before layer4 (14x14).

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_no_bias, Conv2d};

use super::{InsertedLayer, Trunk};
use super::{SpgTaps, Staged};
use crate::config::ModelConfig;
use wsol_ops::pool::max_pool3;
use wsol_ops::Act;
use wsol_ops::BatchNorm;

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    conv2d_no_bias(c_in, c_out, k, Conv2dConfig { padding: k / 2, stride, ..Default::default() }, vb)
}

/// conv -> bn, the unit every ResNet block is made of.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        frozen: bool,
        vb: VarBuilder,
        names: (&str, &str),
    ) -> candle_core::Result<Self> {
        Ok(ConvBn {
            conv: conv(c_in, c_out, k, stride, vb.pp(names.0))?,
            bn: BatchNorm::new(c_out, 1e-5, 0.1, frozen, vb.pp(names.1))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }

    /// relu(bn(conv(x))), the ReLU fused into the batch norm.
    fn forward_relu_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_relu_t(&self.conv.forward(x)?, train)
    }
}

/// ResNet-18's block (two 3x3 convs) or ResNet-50's bottleneck (1x1, 3x3 with the
/// stride as in torchvision's v1.5, 1x1 to 4x the width); the shortcut is projected when
/// the shape changes.
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
    /// An ADL layer on the block's output.
    adl: Option<Arc<dyn InsertedLayer>>,
}

impl Block {
    fn new(
        c_in: usize,
        planes: usize,
        stride: usize,
        bottleneck: bool,
        frozen: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let plan: Vec<(usize, usize, usize, usize)> = if bottleneck {
            vec![(c_in, planes, 1, 1), (planes, planes, 3, stride), (planes, planes * 4, 1, 1)]
        } else {
            vec![(c_in, planes, 3, stride), (planes, planes, 3, 1)]
        };
        let c_out = plan.last().unwrap().1;
        let mut convs = Vec::new();
        for (k, &(i, o, size, s)) in plan.iter().enumerate() {
            let (c, b) = (format!("conv{}", k + 1), format!("bn{}", k + 1));
            convs.push(ConvBn::new(i, o, size, s, frozen, vb.clone(), (&c, &b))?);
        }
        let downsample = if stride != 1 || c_in != c_out {
            Some(ConvBn::new(c_in, c_out, 1, stride, frozen, vb.pp("downsample"), ("0", "1"))?)
        } else {
            None
        };
        Ok(Block { convs, downsample, adl: None })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (last, first) = self.convs.split_last().expect("a block has convs");
        let mut y = x.clone();
        for c in first {
            y = c.forward_relu_t(&y, train)?;
        }
        let z = last.conv.forward(&y)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        // relu(bn(z) + shortcut), bn(z) never stored in training.
        let y = last.bn.forward_add_t(&z, &shortcut, train, Act::Relu)?;
        match &self.adl {
            Some(adl) => adl.forward_t(&y, train),
            None => Ok(y),
        }
    }
}

pub struct ResNet {
    stem: ConvBn,
    /// (CAM layer name, blocks) after the stem: layer1..layer4, layer3 split for SPG.
    stages: Vec<(String, Vec<Block>)>,
    out_channels: usize,
    spg_taps: Option<SpgTaps>,
    /// BAS: layer3's stage index and channels; layer4 starts with a 2x2 max-pool.
    bas_tap: Option<(usize, usize)>,
}

impl ResNet {
    /// `depth` 18 or 50; `adl` for `head: adl`.
    pub fn new(
        depth: usize,
        cfg: &ModelConfig,
        trunk: Trunk,
        adl: Option<Arc<dyn InsertedLayer>>,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let (blocks, bottleneck) = match depth {
            18 => ([2, 2, 2, 2], false),
            50 => ([3, 4, 6, 3], true),
            _ => candle_core::bail!("no ResNet-{depth}"),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let bas = trunk == Trunk::Bas;
        let strides = [1, 2, if cfg.large_feature_map || bas { 1 } else { 2 }, 1];
        let frozen = cfg.freeze_bn;
        let spg = trunk == Trunk::Spg;
        let mut stages = Vec::new();
        let mut c_in = 64;
        let mut spg_taps = None;
        let mut bas_tap = None;
        for (k, (&n, &stride)) in blocks.iter().zip(&strides).enumerate() {
            let planes = 64 << k;
            let name = format!("layer{}", k + 1);
            let vb = vb.pp(&name);
            let mut stage = Vec::new();
            for b in 0..n {
                let mut block =
                    Block::new(c_in, planes, if b == 0 { stride } else { 1 }, bottleneck, frozen, vb.pp(b))?;
                c_in = planes * expansion;
                if (k == 2 && b == 0) || (k == 3 && (b == 0 || b == n - 1)) {
                    block.adl = adl.clone();
                }
                stage.push(block);
                if spg && k == 2 && b == 0 {
                    stages.push((format!("{name}.0"), std::mem::take(&mut stage)));
                }
            }
            stages.push((name, stage));
            if bas && k == 2 {
                bas_tap = Some((stages.len(), c_in)); // the stem is stage 0
            }
            if spg && k == 2 {
                // B1 reads layer3.0, B2 layer3 (both 4x the width in ResNet-50).
                // Stage indices count the stem as 0: layer3.0 is stages[len - 2], index len - 1.
                let b1 = stages.len() - 1;
                spg_taps =
                    Some(SpgTaps { b1, b2: b1 + 1, b1_channels: c_in, b2_channels: c_in, width: c_in, c_width: 512 });
            }
        }
        let stem = ConvBn::new(3, 64, 7, 2, frozen, vb, ("conv1", "bn1"))?;
        Ok(ResNet { stem, stages, out_channels: c_in, spg_taps, bas_tap })
    }

    /// Runs stages `from..to` (0 = stem through the max-pool).
    fn run(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for stage in stages {
            x = if stage == 0 {
                // torchvision's stem pool, MaxPool2d(3, stride 2, padding 1).
                max_pool3(&self.stem.forward_relu_t(&x, train)?, 2, 1, false)?
            } else {
                let mut y = match self.bas_tap {
                    Some((tap, _)) if stage == tap + 1 => wsol_ops::pool::max_pool2(&x)?,
                    _ => x,
                };
                for block in &self.stages[stage - 1].1 {
                    y = block.forward_t(&y, train)?;
                }
                y
            };
        }
        Ok(x)
    }
}

impl Staged for ResNet {
    fn stage_names(&self) -> Vec<String> {
        std::iter::once("maxpool".to_string()).chain(self.stages.iter().map(|(n, _)| n.clone())).collect()
    }

    fn channels(&self) -> usize {
        self.out_channels
    }

    fn run_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, stages, train)
    }

    fn spg_taps(&self) -> Option<SpgTaps> {
        self.spg_taps
    }

    fn bas_tap(&self) -> Option<(usize, usize)> {
        self.bas_tap
    }

    /// wsolevaluation's ResNet recipe: layer4 and the CAM classifier `fc` at the new-layer
    /// rate, everything else, ACoL's and SPG's branches included, at the base rate.
    fn lr_group(&self, var_name: &str) -> Option<bool> {
        Some(var_name.starts_with("layer4.") || var_name.starts_with("fc."))
    }
}
