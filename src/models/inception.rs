//! Inception-v3 (Szegedy et al. 2016) as wsolevaluation's CAM model builds it: the
//! torchvision network up to Mixed_6e with the first conv padded, ceil-mode pools,
//! Mixed_6a at stride 1 / padding 1 and one extra max-pool after Mixed_5d (none with
//! `large_feature_map`), 768 channels at 1/16 of the input (14x14 at 224... 17x17 at 299);
//! then the new conv head `SPG_A3_1b` (3x3 768->1024 + ReLU) and `SPG_A3_2b` (3x3
//! 1024->1024 + ReLU). The CAM head's linear layer plays wsolevaluation's 1x1 `SPG_A4`:
//! the mean of a 1x1 conv's map equals the linear layer on the mean, so logits and CAMs
//! are the same. Weight names are torchvision's, so `inception_v3_google-1a9a5a14.pth`
//! loads as it is. In training, the CAM and SPG layouts drop out (p = 0.5) the outputs of
//! Mixed_6e, SPG_A3_1b and SPG_A3_2b, as wsolevaluation's InceptionCam and InceptionSpg do
//! (its ADL and ACoL layouts do not); the masks come from the step's layer draws.
//!
//! `head: acol` ends at Mixed_6e (768 channels), as wsolevaluation's InceptionAcol.
//! `head: adl` adds ADL after Mixed_5d, Mixed_6e and SPG_A3_2b, as wsolevaluation's
//! InceptionAdl. `head: spg` taps B1 after Mixed_5d and its pool (288 channels), B2 after
//! Mixed_6d (768; wsolevaluation reads Mixed_6d's output there, not Mixed_6e's).
//!
//! `method: bas` is its authors' layout (wpy1999/BAS, `Model/inception.py`): no extra pool
//! after Mixed_5d (Mixed_6e, the generator's tap, at 1/8 of the input), then torchvision's
//! Mixed_7a/7b/7c with Mixed_7a's stride-2 convs and pool padded by 1 (2048 channels at
//! 1/16); no dropout, no SPG head.

use std::sync::Arc;

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::activation::relu;
use wsol_ops::conv::{conv2d_layer as conv2d, Conv2d};

use super::{InsertedLayer, Trunk};
use super::{SpgTaps, Staged};
use crate::config::ModelConfig;
use crate::draws::LayerDraws;
use wsol_ops::pool::{avg_pool3_s1, max_pool3};
use wsol_ops::BatchNorm;

/// conv (no bias) -> batch norm (eps 1e-3) -> ReLU, with a rectangular kernel.
struct BasicConv {
    weight: Tensor,
    bn: BatchNorm,
    stride: usize,
    /// (rows, cols) of zero padding on each side.
    pad: (usize, usize),
}

impl BasicConv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        c_in: usize,
        c_out: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
        frozen: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let weight = vb.pp("conv").get((c_out, c_in, k.0, k.1), "weight")?;
        let bn = BatchNorm::new(c_out, 1e-3, 0.1, frozen, vb.pp("bn"))?;
        Ok(BasicConv { weight, bn, stride, pad })
    }

    fn sq(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        frozen: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Self::new(c_in, c_out, (k, k), stride, (pad, pad), frozen, vb)
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = wsol_ops::conv::conv2d(x, &self.weight, self.pad, self.stride, 1)?;
        self.bn.forward_relu_t(&y, train)
    }
}

/// Mixed_5b/c/d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1.
struct InceptionA {
    convs: Vec<BasicConv>,
}

impl InceptionA {
    fn new(c_in: usize, pool_features: usize, f: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let convs = vec![
            BasicConv::sq(c_in, 64, 1, 1, 0, f, vb.pp("branch1x1"))?,
            BasicConv::sq(c_in, 48, 1, 1, 0, f, vb.pp("branch5x5_1"))?,
            BasicConv::sq(48, 64, 5, 1, 2, f, vb.pp("branch5x5_2"))?,
            BasicConv::sq(c_in, 64, 1, 1, 0, f, vb.pp("branch3x3dbl_1"))?,
            BasicConv::sq(64, 96, 3, 1, 1, f, vb.pp("branch3x3dbl_2"))?,
            BasicConv::sq(96, 96, 3, 1, 1, f, vb.pp("branch3x3dbl_3"))?,
            BasicConv::sq(c_in, pool_features, 1, 1, 0, f, vb.pp("branch_pool"))?,
        ];
        Ok(InceptionA { convs })
    }

    fn forward_t(&self, x: &Tensor, t: bool) -> candle_core::Result<Tensor> {
        let c = &self.convs;
        let b1 = c[0].forward_t(x, t)?;
        let b5 = c[2].forward_t(&c[1].forward_t(x, t)?, t)?;
        let b3 = c[5].forward_t(&c[4].forward_t(&c[3].forward_t(x, t)?, t)?, t)?;
        let bp = c[6].forward_t(&avg_pool3_s1(x)?, t)?;
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

/// Mixed_6a at stride 1, padding 1: 3x3 | 1x1-3x3-3x3 | maxpool.
struct InceptionB {
    convs: Vec<BasicConv>,
}

impl InceptionB {
    fn new(c_in: usize, f: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let convs = vec![
            BasicConv::sq(c_in, 384, 3, 1, 1, f, vb.pp("branch3x3"))?,
            BasicConv::sq(c_in, 64, 1, 1, 0, f, vb.pp("branch3x3dbl_1"))?,
            BasicConv::sq(64, 96, 3, 1, 1, f, vb.pp("branch3x3dbl_2"))?,
            BasicConv::sq(96, 96, 3, 1, 1, f, vb.pp("branch3x3dbl_3"))?,
        ];
        Ok(InceptionB { convs })
    }

    fn forward_t(&self, x: &Tensor, t: bool) -> candle_core::Result<Tensor> {
        let c = &self.convs;
        let b3 = c[0].forward_t(x, t)?;
        let bd = c[3].forward_t(&c[2].forward_t(&c[1].forward_t(x, t)?, t)?, t)?;
        Tensor::cat(&[b3, bd, max_pool3(x, 1, 1, false)?], 1)
    }
}

/// Mixed_6b..e: factorized 7x7 convolutions.
struct InceptionC {
    convs: Vec<BasicConv>,
}

impl InceptionC {
    fn new(c_in: usize, c7: usize, f: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let (row, col) = ((1, 7), (7, 1));
        let (prow, pcol) = ((0, 3), (3, 0));
        let convs = vec![
            BasicConv::sq(c_in, 192, 1, 1, 0, f, vb.pp("branch1x1"))?,
            BasicConv::sq(c_in, c7, 1, 1, 0, f, vb.pp("branch7x7_1"))?,
            BasicConv::new(c7, c7, row, 1, prow, f, vb.pp("branch7x7_2"))?,
            BasicConv::new(c7, 192, col, 1, pcol, f, vb.pp("branch7x7_3"))?,
            BasicConv::sq(c_in, c7, 1, 1, 0, f, vb.pp("branch7x7dbl_1"))?,
            BasicConv::new(c7, c7, col, 1, pcol, f, vb.pp("branch7x7dbl_2"))?,
            BasicConv::new(c7, c7, row, 1, prow, f, vb.pp("branch7x7dbl_3"))?,
            BasicConv::new(c7, c7, col, 1, pcol, f, vb.pp("branch7x7dbl_4"))?,
            BasicConv::new(c7, 192, row, 1, prow, f, vb.pp("branch7x7dbl_5"))?,
            BasicConv::sq(c_in, 192, 1, 1, 0, f, vb.pp("branch_pool"))?,
        ];
        Ok(InceptionC { convs })
    }

    fn forward_t(&self, x: &Tensor, t: bool) -> candle_core::Result<Tensor> {
        let c = &self.convs;
        let chain = |range: std::ops::Range<usize>| -> candle_core::Result<Tensor> {
            let mut y = x.clone();
            for k in range {
                y = c[k].forward_t(&y, t)?;
            }
            Ok(y)
        };
        let bp = c[9].forward_t(&avg_pool3_s1(x)?, t)?;
        Tensor::cat(&[chain(0..1)?, chain(1..4)?, chain(4..9)?, bp], 1)
    }
}

/// Mixed_7a as BAS builds it: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2, the stride-2
/// convs and the pool padded by 1 (torchvision's are not).
struct InceptionD {
    convs: Vec<BasicConv>,
}

impl InceptionD {
    fn new(c_in: usize, f: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let convs = vec![
            BasicConv::sq(c_in, 192, 1, 1, 0, f, vb.pp("branch3x3_1"))?,
            BasicConv::sq(192, 320, 3, 2, 1, f, vb.pp("branch3x3_2"))?,
            BasicConv::sq(c_in, 192, 1, 1, 0, f, vb.pp("branch7x7x3_1"))?,
            BasicConv::new(192, 192, (1, 7), 1, (0, 3), f, vb.pp("branch7x7x3_2"))?,
            BasicConv::new(192, 192, (7, 1), 1, (3, 0), f, vb.pp("branch7x7x3_3"))?,
            BasicConv::sq(192, 192, 3, 2, 1, f, vb.pp("branch7x7x3_4"))?,
        ];
        Ok(InceptionD { convs })
    }

    fn forward_t(&self, x: &Tensor, t: bool) -> candle_core::Result<Tensor> {
        let c = &self.convs;
        let b3 = c[1].forward_t(&c[0].forward_t(x, t)?, t)?;
        let b7 = c[5].forward_t(&c[4].forward_t(&c[3].forward_t(&c[2].forward_t(x, t)?, t)?, t)?, t)?;
        Tensor::cat(&[b3, b7, max_pool3(x, 2, 1, false)?], 1)
    }
}

/// Mixed_7b/c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avgpool-1x1.
struct InceptionE {
    convs: Vec<BasicConv>,
}

impl InceptionE {
    fn new(c_in: usize, f: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let convs = vec![
            BasicConv::sq(c_in, 320, 1, 1, 0, f, vb.pp("branch1x1"))?,
            BasicConv::sq(c_in, 384, 1, 1, 0, f, vb.pp("branch3x3_1"))?,
            BasicConv::new(384, 384, (1, 3), 1, (0, 1), f, vb.pp("branch3x3_2a"))?,
            BasicConv::new(384, 384, (3, 1), 1, (1, 0), f, vb.pp("branch3x3_2b"))?,
            BasicConv::sq(c_in, 448, 1, 1, 0, f, vb.pp("branch3x3dbl_1"))?,
            BasicConv::sq(448, 384, 3, 1, 1, f, vb.pp("branch3x3dbl_2"))?,
            BasicConv::new(384, 384, (1, 3), 1, (0, 1), f, vb.pp("branch3x3dbl_3a"))?,
            BasicConv::new(384, 384, (3, 1), 1, (1, 0), f, vb.pp("branch3x3dbl_3b"))?,
            BasicConv::sq(c_in, 192, 1, 1, 0, f, vb.pp("branch_pool"))?,
        ];
        Ok(InceptionE { convs })
    }

    fn forward_t(&self, x: &Tensor, t: bool) -> candle_core::Result<Tensor> {
        let c = &self.convs;
        let b1 = c[0].forward_t(x, t)?;
        let b3 = c[1].forward_t(x, t)?;
        let b3 = Tensor::cat(&[c[2].forward_t(&b3, t)?, c[3].forward_t(&b3, t)?], 1)?;
        let bd = c[5].forward_t(&c[4].forward_t(x, t)?, t)?;
        let bd = Tensor::cat(&[c[6].forward_t(&bd, t)?, c[7].forward_t(&bd, t)?], 1)?;
        let bp = c[8].forward_t(&avg_pool3_s1(x)?, t)?;
        Tensor::cat(&[b1, b3, bd, bp], 1)
    }
}

enum Stage {
    Stem(Vec<BasicConv>),
    A(InceptionA),
    B(InceptionB),
    C(InceptionC),
    D(InceptionD),
    E(InceptionE),
    Head(Conv2d),
}

pub struct InceptionV3 {
    /// (CAM layer name, stage), in forward order.
    stages: Vec<(String, Stage)>,
    /// wsolevaluation's max-pool after Mixed_5d (not with `large_feature_map` or BAS).
    extra_pool: bool,
    out_channels: usize,
    bas: bool,
    adl: Option<Arc<dyn InsertedLayer>>,
    /// The layer draws of the dropout, in the layouts that have it.
    dropout: Option<LayerDraws>,
    spg: bool,
}

/// PyTorch's dropout: x * mask / (1 - p), mask ~ Bernoulli(1 - p) per element.
fn dropout(x: &Tensor, draws: &LayerDraws) -> candle_core::Result<Tensor> {
    let scale = (1.0 / (1.0 - DROPOUT)) as f32;
    let mask: Vec<f32> =
        draws.keep_mask(x.elem_count(), 1.0 - DROPOUT).into_iter().map(|k| if k { scale } else { 0.0 }).collect();
    x * Tensor::from_vec(mask, x.shape(), x.device())?
}

/// Stage indices: Mixed_5d (followed by the extra pool), Mixed_6d, Mixed_6e, SPG_A3_2b.
const MIXED_5D: usize = 3;
const MIXED_6D: usize = 7;
const MIXED_6E: usize = 8;
const ADL_AFTER: [usize; 3] = [MIXED_5D, 8, 10];
/// Mixed_6e, SPG_A3_1b, SPG_A3_2b.
const DROPOUT_AFTER: [usize; 3] = [8, 9, 10];
const DROPOUT: f64 = 0.5;

impl InceptionV3 {
    pub fn new(
        cfg: &ModelConfig,
        trunk: Trunk,
        adl: Option<Arc<dyn InsertedLayer>>,
        draws: &LayerDraws,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let f = cfg.freeze_bn;
        let bas = trunk == Trunk::Bas;
        let dropout = (trunk != Trunk::Acol && !bas && adl.is_none()).then(|| draws.clone());
        let stem = vec![
            BasicConv::sq(3, 32, 3, 2, 1, f, vb.pp("Conv2d_1a_3x3"))?,
            BasicConv::sq(32, 32, 3, 1, 0, f, vb.pp("Conv2d_2a_3x3"))?,
            BasicConv::sq(32, 64, 3, 1, 1, f, vb.pp("Conv2d_2b_3x3"))?,
            BasicConv::sq(64, 80, 1, 1, 0, f, vb.pp("Conv2d_3b_1x1"))?,
            BasicConv::sq(80, 192, 3, 1, 0, f, vb.pp("Conv2d_4a_3x3"))?,
        ];
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let mut stages = vec![
            ("Conv2d_4a_3x3".to_string(), Stage::Stem(stem)),
            ("Mixed_5b".into(), Stage::A(InceptionA::new(192, 32, f, vb.pp("Mixed_5b"))?)),
            ("Mixed_5c".into(), Stage::A(InceptionA::new(256, 64, f, vb.pp("Mixed_5c"))?)),
            ("Mixed_5d".into(), Stage::A(InceptionA::new(288, 64, f, vb.pp("Mixed_5d"))?)),
            ("Mixed_6a".into(), Stage::B(InceptionB::new(288, f, vb.pp("Mixed_6a"))?)),
            ("Mixed_6b".into(), Stage::C(InceptionC::new(768, 128, f, vb.pp("Mixed_6b"))?)),
            ("Mixed_6c".into(), Stage::C(InceptionC::new(768, 160, f, vb.pp("Mixed_6c"))?)),
            ("Mixed_6d".into(), Stage::C(InceptionC::new(768, 160, f, vb.pp("Mixed_6d"))?)),
            ("Mixed_6e".into(), Stage::C(InceptionC::new(768, 192, f, vb.pp("Mixed_6e"))?)),
        ];
        let out_channels = match trunk {
            Trunk::Acol => 768,
            Trunk::Bas => {
                stages.push(("Mixed_7a".into(), Stage::D(InceptionD::new(768, f, vb.pp("Mixed_7a"))?)));
                stages.push(("Mixed_7b".into(), Stage::E(InceptionE::new(1280, f, vb.pp("Mixed_7b"))?)));
                stages.push(("Mixed_7c".into(), Stage::E(InceptionE::new(2048, f, vb.pp("Mixed_7c"))?)));
                2048
            }
            Trunk::Standard | Trunk::Spg => {
                stages.push(("SPG_A3_1b".into(), Stage::Head(conv2d(768, 1024, 3, pad1, vb.pp("SPG_A3_1b.0"))?)));
                stages.push(("SPG_A3_2b".into(), Stage::Head(conv2d(1024, 1024, 3, pad1, vb.pp("SPG_A3_2b.0"))?)));
                1024
            }
        };
        let extra_pool = !cfg.large_feature_map && !bas;
        Ok(InceptionV3 { stages, extra_pool, out_channels, bas, adl, dropout, spg: trunk == Trunk::Spg })
    }

    fn run(&self, x: &Tensor, range: std::ops::Range<usize>, t: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for k in range {
            x = match &self.stages[k].1 {
                Stage::Stem(c) => {
                    let y = c[2].forward_t(&c[1].forward_t(&c[0].forward_t(&x, t)?, t)?, t)?;
                    let y = max_pool3(&y, 2, 1, true)?;
                    let y = c[4].forward_t(&c[3].forward_t(&y, t)?, t)?;
                    max_pool3(&y, 2, 1, true)?
                }
                Stage::A(m) => m.forward_t(&x, t)?,
                Stage::B(m) => m.forward_t(&x, t)?,
                Stage::C(m) => m.forward_t(&x, t)?,
                Stage::D(m) => m.forward_t(&x, t)?,
                Stage::E(m) => m.forward_t(&x, t)?,
                Stage::Head(conv) => relu(&conv.forward(&x)?)?,
            };
            if let (Some(adl), true) = (&self.adl, ADL_AFTER.contains(&k)) {
                x = adl.forward_t(&x, t)?;
            }
            if let (Some(draws), true) = (&self.dropout, t && DROPOUT_AFTER.contains(&k)) {
                x = dropout(&x, draws)?;
            }
            if k == MIXED_5D && self.extra_pool {
                x = max_pool3(&x, 2, 0, true)?; // wsolevaluation's extra pool
            }
        }
        Ok(x)
    }
}

impl Staged for InceptionV3 {
    fn stage_names(&self) -> Vec<String> {
        self.stages.iter().map(|(n, _)| n.clone()).collect()
    }

    fn channels(&self) -> usize {
        self.out_channels
    }

    fn run_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, stages, train)
    }

    fn new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("SPG_")
    }

    /// Mixed_6e (768 channels), as their `classifier_loc` reads it.
    fn bas_tap(&self) -> Option<(usize, usize)> {
        self.bas.then_some((MIXED_6E, 768))
    }

    fn spg_taps(&self) -> Option<SpgTaps> {
        self.spg.then_some(SpgTaps {
            b1: MIXED_5D,
            b2: MIXED_6D,
            b1_channels: 288,
            b2_channels: 768,
            width: 512,
            c_width: 512,
        })
    }
}
