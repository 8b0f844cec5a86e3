//! VGG16 as wsolevaluation builds it (Simonyan & Zisserman 2015; Choe et al. 2020):
//! torchvision's `features` without pool5 (and without pool4 with `large_feature_map`),
//! then `conv6` 3x3 512->1024 + ReLU, a new layer; 14x14 maps at 224 (28x28). Convs keep
//! torchvision's `features.N` names in every layout, so `vgg16-397923af.pth` loads as it
//! is (wsolevaluation renumbers them).
//!
//! `head: adl` adds ADL after pool3, after conv4_3 and after conv5_3. `head: spg` uses
//! wsolevaluation's SPG layout: pool4 becomes a 3x3 stride-2 max-pool (its B1 tap), conv5
//! is the B2 tap, and two new 3x3 512-channel convs (`SPG_A_3`) replace conv6.
//! `head: acol` uses its ACoL layout: every pool 3x3 with padding 1 (stride 2; stride 1
//! for pool5, and for pool4 with `large_feature_map`), then a 3x3 stride-1 average pool,
//! no conv6: the branches read 512 channels. `method: bas` uses its authors' layout
//! (wpy1999/BAS `Model/vgg.py`): pool4 kept, no pool5, no conv6 (512 channels); conv4_3's
//! output (`features.22`, 28x28 at 224) is a stage of its own, the generator's input.

use std::sync::Arc;

use candle_core::Tensor;
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_layer as conv2d, Conv2d};

use super::{InsertedLayer, Trunk};
use super::{SpgTaps, Staged};
use crate::config::ModelConfig;
use wsol_ops::pool::{avg_pool3_s1, max_pool2, max_pool3};

enum Op {
    /// 3x3 conv, padding 1, then ReLU.
    Conv(Conv2d),
    /// 2x2 max-pool, stride 2.
    Pool,
    /// 3x3 max-pool, padding 1, with this stride (SPG's pool4, ACoL's pools).
    Pool3(usize),
    /// 3x3 average pool, stride 1, padding 1 (ACoL's smoothing before its branches).
    Avg3,
    Adl(Arc<dyn InsertedLayer>),
}

pub struct Vgg16 {
    /// (name of the stage's output, its ops), in forward order.
    stages: Vec<(String, Vec<Op>)>,
    channels: usize,
    spg: bool,
    /// BAS: the stage ending at conv4_3's ReLU, and its channels.
    bas_tap: Option<(usize, usize)>,
}

/// torchvision's VGG16 plan: output channels of each conv, `0` = max-pool.
const PLAN: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];

impl Vgg16 {
    pub fn new(
        cfg: &ModelConfig,
        trunk: Trunk,
        adl: Option<Arc<dyn InsertedLayer>>,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let (spg, acol, bas) = (trunk == Trunk::Spg, trunk == Trunk::Acol, trunk == Trunk::Bas);
        let mut bas_tap = None;
        let (mut stages, mut ops) = (Vec::new(), Vec::new());
        let (mut index, mut c_in) = (0, 3);
        for (k, &c_out) in PLAN.iter().enumerate() {
            let pool = c_out == 0;
            if pool {
                if let (Some(a), 13 | 17) = (&adl, k) {
                    ops.push(Op::Adl(a.clone())); // after conv4_3 and conv5_3
                }
                let last = k == PLAN.len() - 1;
                // pool5 goes (ACoL keeps it at stride 1); pool4 too for 28x28 maps.
                let dropped = !acol && (last || (k == 13 && cfg.large_feature_map && !bas));
                if bas && k == 13 {
                    // The generator reads conv4_3 (before pool4); pool4 opens conv5's stage.
                    stages.push((format!("features.{}", index - 1), std::mem::take(&mut ops)));
                    bas_tap = Some((stages.len() - 1, 512));
                    ops.push(Op::Pool);
                    index += 1;
                    continue;
                }
                if acol {
                    let stride1 = last || (k == 13 && cfg.large_feature_map);
                    ops.push(Op::Pool3(if stride1 { 1 } else { 2 }));
                    if last {
                        ops.push(Op::Avg3);
                    }
                } else if !dropped {
                    ops.push(if k == 13 && spg { Op::Pool3(2) } else { Op::Pool });
                }
                // A dropped pool leaves the stage ending at the ReLU before it.
                let name = format!("features.{}", if dropped { index - 1 } else { index });
                stages.push((name, std::mem::take(&mut ops)));
                index += 1;
                if let (Some(a), 9) = (&adl, k) {
                    ops.push(Op::Adl(a.clone())); // after pool3
                }
            } else {
                ops.push(Op::Conv(conv2d(c_in, c_out, 3, pad1, vb.pp(format!("features.{index}")))?));
                c_in = c_out;
                index += 2;
            }
        }
        let channels = if acol || bas {
            512
        } else if spg {
            let head = vec![
                Op::Conv(conv2d(512, 512, 3, pad1, vb.pp("SPG_A_3.0"))?),
                Op::Conv(conv2d(512, 512, 3, pad1, vb.pp("SPG_A_3.2"))?),
            ];
            stages.push(("SPG_A_3".into(), head));
            512
        } else {
            stages.push(("conv6".into(), vec![Op::Conv(conv2d(512, 1024, 3, pad1, vb.pp("conv6"))?)]));
            1024
        };
        Ok(Vgg16 { stages, channels, spg, bas_tap })
    }

    fn run(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (_, ops) in &self.stages[stages] {
            for op in ops {
                x = match op {
                    Op::Conv(c) => c.forward_relu(&x)?,
                    Op::Pool => max_pool2(&x)?,
                    Op::Pool3(stride) => max_pool3(&x, *stride, 1, false)?,
                    Op::Avg3 => avg_pool3_s1(&x)?,
                    Op::Adl(a) => a.forward_t(&x, train)?,
                };
            }
        }
        Ok(x)
    }
}

impl Staged for Vgg16 {
    fn stage_names(&self) -> Vec<String> {
        self.stages.iter().map(|(n, _)| n.clone()).collect()
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn run_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, stages, train)
    }

    fn new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("conv6.") || var_name.starts_with("SPG_")
    }

    /// wsolevaluation's SPG names conv4 and conv5 (`features.17`-`28` here) `SPG_A_1` and
    /// `SPG_A_2`, and its rule, "not under `features.`: lr x lr_classifier_ratio", then
    /// trains these pretrained layers at the new layers' rate; so does wsol.
    fn lr_group(&self, var_name: &str) -> Option<bool> {
        let index: usize = var_name.strip_prefix("features.")?.split('.').next()?.parse().ok()?;
        (self.spg && index >= 17).then_some(true)
    }

    fn bas_tap(&self) -> Option<(usize, usize)> {
        self.bas_tap
    }

    /// B1 reads conv4 after its pool, B2 conv5 (stages 3 and 4).
    fn spg_taps(&self) -> Option<SpgTaps> {
        self.spg.then_some(SpgTaps { b1: 3, b2: 4, b1_channels: 512, b2_channels: 512, width: 512, c_width: 512 })
    }
}
