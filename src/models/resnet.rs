//! ResNet-18 (He et al. 2016) with torchvision's layer and weight names (`conv1`, `bn1`,
//! `layerN.M.conv1`, `...downsample.0/1`), so ImageNet weights load as they are. As in
//! wsolevaluation's ResNet CAM models, layer4 keeps stride 1: a 224 input gives a 14x14
//! map instead of 7x7, fine enough for boxes.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{batch_norm, conv2d_no_bias, BatchNorm, Conv2d, Conv2dConfig, VarBuilder};

use super::Backbone;

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Conv2d> {
    conv2d_no_bias(c_in, c_out, k, Conv2dConfig { padding: k / 2, stride, ..Default::default() }, vb)
}

fn bn(c: usize, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    batch_norm(c, 1e-5, vb)
}

struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let downsample = if stride != 1 || c_in != c_out {
            Some((conv(c_in, c_out, 1, stride, vb.pp("downsample.0"))?, bn(c_out, vb.pp("downsample.1"))?))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: conv(c_in, c_out, 3, stride, vb.pp("conv1"))?,
            bn1: bn(c_out, vb.pp("bn1"))?,
            conv2: conv(c_out, c_out, 3, 1, vb.pp("conv2"))?,
            bn2: bn(c_out, vb.pp("bn2"))?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.bn1.forward_t(&self.conv1.forward(x)?, train)?.relu()?;
        let y = self.bn2.forward_t(&self.conv2.forward(&y)?, train)?;
        let shortcut = match &self.downsample {
            Some((c, b)) => b.forward_t(&c.forward(x)?, train)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

/// torchvision's stem pool, `MaxPool2d(3, stride 2, padding 1)`. candle's pool has no
/// padding and no backward when kernel != stride, so it is built from differentiable
/// ops: per axis, the max of three shifted views, then every second row. The edge is
/// replicated for the padding: every window touching the pad also holds the pixel it
/// copies, so the max equals PyTorch's (which pads with -inf).
pub(crate) fn max_pool_3x3_s2_p1(x: &Tensor) -> candle_core::Result<Tensor> {
    let mut y = x.clone();
    for dim in [2, 3] {
        let n = y.dim(dim)?;
        let out = (n - 1) / 2 + 1;
        let p = y.pad_with_same(dim, 1, 1)?;
        let m = p.narrow(dim, 0, n)?.maximum(&p.narrow(dim, 1, n)?)?.maximum(&p.narrow(dim, 2, n)?)?;
        // Windows start at 0, 2, 4, ...: pad to 2 * out, fold pairs, keep the first.
        let m = if n < 2 * out { m.pad_with_same(dim, 0, 2 * out - n)? } else { m };
        let mut shape = m.dims().to_vec();
        shape.splice(dim..dim + 1, [out, 2]);
        y = m.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?;
    }
    Ok(y)
}

pub struct ResNet18 {
    conv1: Conv2d,
    bn1: BatchNorm,
    /// layer1..layer4, two blocks each.
    layers: Vec<Vec<BasicBlock>>,
}

/// Stage outputs a CAM can be read from.
const LAYERS: [&str; 5] = ["maxpool", "layer1", "layer2", "layer3", "layer4"];

impl ResNet18 {
    pub fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let plan = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 1)];
        let mut layers = Vec::new();
        for (k, &(c_in, c_out, stride)) in plan.iter().enumerate() {
            let vb = vb.pp(format!("layer{}", k + 1));
            layers.push(vec![
                BasicBlock::new(c_in, c_out, stride, vb.pp("0"))?,
                BasicBlock::new(c_out, c_out, 1, vb.pp("1"))?,
            ]);
        }
        Ok(ResNet18 { conv1: conv(3, 64, 7, 2, vb.pp("conv1"))?, bn1: bn(64, vb.pp("bn1"))?, layers })
    }

    /// Runs stages `from..to` of [`LAYERS`] (0 = stem through the max-pool).
    fn run(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for stage in stages {
            x = if stage == 0 {
                let y = self.bn1.forward_t(&self.conv1.forward(&x)?, train)?.relu()?;
                max_pool_3x3_s2_p1(&y)?
            } else {
                let mut y = x;
                for block in &self.layers[stage - 1] {
                    y = block.forward_t(&y, train)?;
                }
                y
            };
        }
        Ok(x)
    }
}

impl Backbone for ResNet18 {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, 0..LAYERS.len(), train)
    }

    fn out_channels(&self) -> usize {
        512
    }

    fn layers(&self) -> Vec<String> {
        LAYERS.iter().map(|s| s.to_string()).collect()
    }

    fn forward_to(&self, x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        self.run(x, 0..k + 1, false)
    }

    fn forward_from(&self, a: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        self.run(a, k + 1..LAYERS.len(), false)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Same values as candle's own (forward-only) pool on the padded input, and a gradient
    /// that flows to each window's maximum.
    #[test]
    fn stem_pool_matches_padded_pool_and_has_a_gradient() {
        for (h, w) in [(8, 8), (7, 9), (5, 6), (1, 3)] {
            let x = Var::from_tensor(&Tensor::rand(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap()).unwrap();
            let ours = max_pool_3x3_s2_p1(x.as_tensor()).unwrap();
            let padded = x.as_tensor().pad_with_same(2, 1, 1).unwrap().pad_with_same(3, 1, 1).unwrap();
            let want = padded.max_pool2d_with_stride(3, 2).unwrap();
            assert_eq!(ours.dims(), want.dims(), "{h}x{w}");
            let d: f32 =
                (&ours - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
            assert_eq!(d, 0.0, "{h}x{w}");
            let g = ours.sum_all().unwrap().backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap();
            let total: f32 = gx.sum_all().unwrap().to_scalar().unwrap();
            // One unit of gradient per output cell (random values: no ties).
            assert_eq!(total, ours.elem_count() as f32, "{h}x{w}");
        }
    }
}
