//! VGG16 as wsolevaluation's CAM model builds it (Simonyan & Zisserman 2015; Choe et al.
//! 2020): torchvision's `features` without pool5 (and without pool4 with
//! `large_feature_map`), then `conv6` 3x3 512->1024 + ReLU, a new layer; 14x14 maps at 224
//! (28x28). Convs keep torchvision's `features.N` names in both layouts, so
//! `vgg16-397923af.pth` loads as it is (wsolevaluation renumbers them for 28x28).

use candle_core::{Module, Tensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};

use super::Staged;
use crate::config::ModelConfig;

enum Op {
    /// 3x3 conv, padding 1, then ReLU.
    Conv(Conv2d),
    /// 2x2 max-pool, stride 2.
    Pool,
}

pub struct Vgg16 {
    /// (name of the stage's output, its ops), in forward order.
    stages: Vec<(String, Vec<Op>)>,
}

/// torchvision's VGG16 plan: output channels of each conv, `0` = max-pool.
const PLAN: [usize; 18] = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];

impl Vgg16 {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let (mut stages, mut ops) = (Vec::new(), Vec::new());
        let (mut index, mut c_in) = (0, 3);
        for (k, &c_out) in PLAN.iter().enumerate() {
            let pool = c_out == 0;
            if pool {
                // pool5 always goes; pool4 too for 28x28 maps.
                let dropped = k == PLAN.len() - 1 || (k == 13 && cfg.large_feature_map);
                if !dropped {
                    ops.push(Op::Pool);
                }
                // A dropped pool leaves the stage ending at the ReLU before it.
                let name = format!("features.{}", if dropped { index - 1 } else { index });
                stages.push((name, std::mem::take(&mut ops)));
                index += 1;
            } else {
                ops.push(Op::Conv(conv2d(c_in, c_out, 3, pad1, vb.pp(format!("features.{index}")))?));
                c_in = c_out;
                index += 2;
            }
        }
        stages.push(("conv6".into(), vec![Op::Conv(conv2d(512, 1024, 3, pad1, vb.pp("conv6"))?)]));
        Ok(Vgg16 { stages })
    }

    fn run(&self, x: &Tensor, stages: std::ops::Range<usize>) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (_, ops) in &self.stages[stages] {
            for op in ops {
                x = match op {
                    Op::Conv(c) => c.forward(&x)?.relu()?,
                    Op::Pool => x.max_pool2d(2)?,
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
        1024
    }

    /// No batch norm or dropout: train and eval are the same function.
    fn run_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, _train: bool) -> candle_core::Result<Tensor> {
        self.run(x, stages)
    }

    fn new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("conv6.")
    }
}
