//! TS-CAM (Gao et al., ICCV 2021), as its authors' `TSCAM` (vasgaowei/TS-CAM,
//! lib/models/deit.py): a 3x3 conv `head` turns the final patch tokens on their grid into
//! semantic-aware class maps, whose GAP is the logits (the class token does not classify);
//! the localization map is the target's semantic map times the semantic-agnostic map, the
//! class token's attention to the patches, head-averaged and summed over the blocks.
//! (The paper says averaged over blocks; the code sums: the same map up to a factor.)

use candle_core::{Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_layer as conv2d, Conv2d};

use crate::models::{class_map, Backbone, Deit, Output, WsolModel};

pub struct TsCamHead {
    backbone: Box<dyn Backbone>,
    head: Conv2d,
}

impl TsCamHead {
    pub fn new(backbone: Box<dyn Backbone>, num_classes: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let head = conv2d(backbone.out_channels(), num_classes, 3, pad1, vb.pp("head"))?;
        Ok(TsCamHead { backbone, head })
    }

    fn deit(&self) -> &Deit {
        self.backbone.transformer().expect("TS-CAM is built on a transformer (checked in methods::build)")
    }
}

/// The semantic-agnostic map [B, 1, h, w]: per block, the class token's row of the
/// head-averaged attention over the patches, summed over blocks.
pub fn agnostic_map(attention: &[Tensor], h: usize, w: usize) -> candle_core::Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for a in attention {
        let (b, _, t, _) = a.dims4()?;
        // The class token's row first, then the head mean: the mean of the whole
        // [B, heads, T, T] was ~2% of a DeiT-S training step.
        let row = a.narrow(2, 0, 1)?.narrow(3, 1, t - 1)?.mean(1)?.reshape((b, 1, h, w))?;
        sum = Some(match sum {
            None => row,
            Some(s) => (s + row)?,
        });
    }
    sum.ok_or_else(|| candle_core::Error::Msg("TS-CAM: a transformer without blocks".into()))
}

impl WsolModel for TsCamHead {
    /// `class_maps` are the semantic-aware maps [B, K, h, w]; `aux[0]` the agnostic map.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Output> {
        let tokens = self.deit().forward_tokens_with(x, false, train)?;
        let features = Deit::grid(&tokens.tokens)?;
        let maps = self.head.forward(&features)?;
        let logits = maps.mean(D::Minus1)?.mean(D::Minus1)?;
        let (_, _, h, w) = features.dims4()?;
        let agnostic = agnostic_map(&tokens.attention, h, w)?.detach();
        Ok(Output { logits, features, class_maps: Some(maps), aux: vec![agnostic] })
    }

    fn loss(&self, out: &Output, labels: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::loss::cross_entropy(&out.logits, labels)
    }

    /// The authors detach the semantic maps before the product: maps are read, not trained.
    fn cam(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        let maps = out.class_maps.as_ref().expect("TS-CAM's forward gives class maps").detach();
        class_map(&maps.broadcast_mul(&out.aux[0])?, targets)
    }

    fn is_new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("head.")
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    fn logits_from_features(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(features)?.mean(D::Minus1)?.mean(D::Minus1)
    }

    /// The step's draws for the transformer's drop path.
    fn begin_step(&self, draws: Box<dyn crate::draws::Draws>) {
        self.deit().begin_step(draws);
    }
}
