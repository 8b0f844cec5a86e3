//! ADL, Attention-based Dropout Layer (Choe & Shim, CVPR 2019), as wsolevaluation places
//! it. At training time each layer takes the channel mean of its input as a
//! self-attention map and multiplies the input by one of two maps, chosen once per
//! forward pass: with probability `drop_rate` the drop mask (0 where the attention is at
//! least `drop_threshold` times the image's maximum, hiding the most discriminative part),
//! otherwise the importance map (the attention's sigmoid, which rewards it). No weights;
//! the identity at evaluation.
//!
//! The network's layer draws ([`LayerDraws`], replaced by the trainer every step) serve
//! every layer in forward order, so a run and its resumption draw the same.
//!
//! The layer's arithmetic is one op of wsol-ops ([`attention_drop`]).

use candle_core::Tensor;
use wsol_ops::attention_drop::attention_drop;

use super::Knob;
use crate::config::AdlConfig;
use crate::draws::LayerDraws;
use crate::models::InsertedLayer;

/// `wsol sweep`'s default search ranges for ADL.
pub const SEARCH: &[(&str, Knob)] =
    &[("model.adl.drop_threshold", Knob::Uniform(0.0, 1.0)), ("model.adl.drop_rate", Knob::Uniform(0.0, 1.0))];

pub struct Adl {
    drop_rate: f64,
    drop_threshold: f64,
    draws: LayerDraws,
}

impl Adl {
    /// `draws`: the network's layer draws, which the trainer replaces every step.
    pub fn new(cfg: &AdlConfig, draws: LayerDraws) -> Adl {
        Adl { drop_rate: cfg.drop_rate, drop_threshold: cfg.drop_threshold, draws }
    }

    /// Whether this forward pass of a layer uses the drop mask: wsolevaluation's
    /// `floor(U[0, 1) + drop_rate) == 1`, in its float32.
    fn draw_drop(&self) -> bool {
        let u = self.draws.uniform();
        u as f32 + self.drop_rate as f32 >= 1.0
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            return Ok(x.clone());
        }
        let drop = self.draw_drop().then_some(self.drop_threshold);
        attention_drop(x, drop)
    }
}

impl InsertedLayer for Adl {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Adl::forward_t(self, x, train)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn adl(drop_rate: f64, drop_threshold: f64) -> Adl {
        Adl::new(&AdlConfig { drop_rate, drop_threshold }, LayerDraws::default())
    }

    #[test]
    fn rate_one_always_drops_and_zero_never() {
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
        let always: Vec<f32> = adl(1.0, 0.9).forward_t(&x, true).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(always, vec![1., 2., 3., 0.]);
        let never: Vec<f32> = adl(0.0, 0.9).forward_t(&x, true).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let sig = |v: f32| v / (1.0 + (-v).exp());
        for (g, v) in never.iter().zip([1f32, 2., 3., 4.]) {
            assert!((g - sig(v)).abs() < 1e-6, "{g} vs {}", sig(v));
        }
        let eval: Vec<f32> = adl(1.0, 0.9).forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(eval, vec![1., 2., 3., 4.]);
    }

    /// Draws are a function of the step's seed and are used in about `drop_rate` of the
    /// passes.
    #[test]
    fn draws_follow_the_step_seed() {
        let layer = adl(0.75, 0.9);
        let draws = |seed: u64, step: usize| {
            layer.draws.set(crate::draws::StepDraws::seeded(seed, step).layers);
            (0..400).map(|_| layer.draw_drop()).collect::<Vec<bool>>()
        };
        let (a, b) = (draws(1, 7), draws(1, 7));
        assert_eq!(a, b);
        assert_ne!(a, draws(1, 8));
        let dropped = a.iter().filter(|&&d| d).count();
        assert!((250..350).contains(&dropped), "{dropped} of 400");
    }
}
