//! CAM (Zhou et al., CVPR 2016): global average pooling, then a linear classifier; the
//! class map is the classifier-weighted sum of the last feature maps.

use candle_core::{Module, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};

use crate::draws::{Draws, LayerDraws};
use crate::models::{Backbone, Output, WsolModel};

pub struct CamHead {
    backbone: Box<dyn Backbone>,
    fc: Linear,
    /// The draws of the layers inside the network (ADL, Inception's dropout), replaced
    /// every step.
    draws: LayerDraws,
}

impl CamHead {
    pub fn new(
        backbone: Box<dyn Backbone>,
        num_classes: usize,
        draws: LayerDraws,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let fc = linear(backbone.out_channels(), num_classes, vb)?;
        Ok(CamHead { backbone, fc, draws })
    }
}

impl WsolModel for CamHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Output> {
        let features = self.backbone.forward_t(x, train)?;
        let logits = self.logits_from_features(&features)?;
        Ok(Output { logits, features, class_maps: None, aux: Vec::new() })
    }

    fn loss(&self, out: &Output, labels: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::loss::cross_entropy(&out.logits, labels)
    }

    fn cam(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = out.features.dims4()?;
        // The bias shifts every position equally, so CAM leaves it out.
        let weights = self.fc.weight().index_select(targets, 0)?.reshape((b, 1, c))?;
        let maps = weights.matmul(&out.features.reshape((b, c, h * w))?)?;
        maps.reshape((b, h, w))
    }

    fn is_new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("fc.") || self.backbone.is_new_layer(var_name)
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    fn logits_from_features(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        self.fc.forward(&features.mean(D::Minus1)?.mean(D::Minus1)?)
    }

    fn begin_step(&self, draws: Box<dyn Draws>) {
        self.draws.set(draws);
    }
}
