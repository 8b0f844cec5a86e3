//! Where a training step's random choices come from: HaS's hidden patches, CutMix's box,
//! partner and mixing ratio, ADL's choice of map, Inception's dropout masks, DeiT's
//! drop-path masks. `wsol train` draws from generators seeded by (run seed, step), so a
//! resumed run draws what the uninterrupted one would; a replay of another
//! implementation's run hands over the values that run drew, in the order it drew them
//! (tests/cli/training_parity.rs replays wsolevaluation's). The methods ask in
//! wsolevaluation's order, so one recorded list serves both.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

/// A source of the few kinds of values the methods draw.
pub trait Draws: Send {
    /// Uniform on [0, 1).
    fn uniform(&mut self) -> f64;
    /// Beta(a, a), CutMix's mixing ratio.
    fn beta(&mut self, a: f64) -> f64;
    /// Uniform on 0..n.
    fn below(&mut self, n: usize) -> usize;
    /// A uniform permutation of 0..n.
    fn permutation(&mut self, n: usize) -> Vec<usize>;
    /// n independent Bernoulli(keep) values, a dropout's mask (true: kept).
    fn keep_mask(&mut self, n: usize, keep: f64) -> Vec<bool>;
}

impl Draws for ChaCha8Rng {
    fn uniform(&mut self) -> f64 {
        self.random()
    }

    fn beta(&mut self, a: f64) -> f64 {
        Beta::new(a, a).map(|b| b.sample(self)).unwrap_or(0.5)
    }

    fn below(&mut self, n: usize) -> usize {
        self.random_range(0..n)
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        p.shuffle(self);
        p
    }

    fn keep_mask(&mut self, n: usize, keep: f64) -> Vec<bool> {
        (0..n).map(|_| self.random::<f64>() < keep).collect()
    }
}

/// Values another run drew, handed out in order (a permutation takes `n` of them), and
/// the dropout masks it drew, one per call.
pub struct Recorded {
    values: VecDeque<f64>,
    masks: VecDeque<Vec<bool>>,
}

impl Recorded {
    pub fn new(values: Vec<f64>) -> Recorded {
        Recorded { values: values.into(), masks: VecDeque::new() }
    }

    pub fn with_masks(values: Vec<f64>, masks: Vec<Vec<bool>>) -> Recorded {
        Recorded { values: values.into(), masks: masks.into() }
    }

    /// Values and masks not asked for yet: a replay that leaves some drew less than the
    /// run it replays.
    pub fn remaining(&self) -> usize {
        self.values.len() + self.masks.len()
    }

    fn next(&mut self) -> f64 {
        // Only replays (tests) build a `Recorded`; running out means the two runs disagree
        // on what was drawn, which the replay must report loudly.
        self.values.pop_front().expect("the recorded draws ran out: this step asks for more than the replayed run drew")
    }
}

impl Draws for Recorded {
    fn uniform(&mut self) -> f64 {
        self.next()
    }

    fn beta(&mut self, _a: f64) -> f64 {
        self.next()
    }

    fn below(&mut self, n: usize) -> usize {
        let v = self.next();
        assert!(v >= 0.0 && (v as usize) < n && v.fract() == 0.0, "recorded draw {v} is not an index below {n}");
        v as usize
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.below(n)).collect()
    }

    fn keep_mask(&mut self, n: usize, _keep: f64) -> Vec<bool> {
        let mask = self.masks.pop_front().expect("the recorded dropout masks ran out");
        assert_eq!(mask.len(), n, "a recorded dropout mask of {} values for {n}", mask.len());
        mask
    }
}

/// The draws of the layers inside a network (ADL's choices, dropout masks) for the current
/// step: one source shared by every such layer, replaced by the trainer before each step
/// ([`crate::models::WsolModel::begin_step`]).
#[derive(Clone)]
pub struct LayerDraws(Arc<Mutex<Box<dyn Draws>>>);

impl Default for LayerDraws {
    fn default() -> Self {
        LayerDraws(Arc::new(Mutex::new(Box::new(ChaCha8Rng::seed_from_u64(0)))))
    }
}

impl LayerDraws {
    pub fn set(&self, draws: Box<dyn Draws>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = draws;
    }

    pub fn uniform(&self) -> f64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).uniform()
    }

    pub fn keep_mask(&self, n: usize, keep: f64) -> Vec<bool> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).keep_mask(n, keep)
    }
}

/// One training step's draws: the batch transform's and the network's layers'.
pub struct StepDraws {
    pub batch: Box<dyn Draws>,
    pub layers: Box<dyn Draws>,
}

impl StepDraws {
    /// `wsol train`'s: a function of the run's seed and the global step.
    pub fn seeded(seed: u64, step: usize) -> StepDraws {
        let batch =
            ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64).wrapping_add(0xB5));
        let layers =
            ChaCha8Rng::seed_from_u64((seed ^ 0xAD1_AD1).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(step as u64));
        StepDraws { batch: Box::new(batch), layers: Box::new(layers) }
    }

    /// A replay's: the values a recorded step drew for its batch and in its layers, and
    /// its layers' dropout masks.
    pub fn recorded(batch: Vec<f64>, layers: Vec<f64>, masks: Vec<Vec<bool>>) -> StepDraws {
        StepDraws { batch: Box::new(Recorded::new(batch)), layers: Box::new(Recorded::with_masks(layers, masks)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_come_back_in_order() {
        let mut r = Recorded::new(vec![0.25, 0.5, 2.0, 1.0, 0.0, 3.0]);
        assert_eq!(r.uniform(), 0.25);
        assert_eq!(r.beta(1.0), 0.5);
        assert_eq!(r.below(3), 2);
        assert_eq!(r.permutation(2), vec![1, 0]);
        assert_eq!(r.remaining(), 1);
        let mut m = Recorded::with_masks(vec![], vec![vec![true, false]]);
        assert_eq!(m.keep_mask(2, 0.5), vec![true, false]);
        assert_eq!(m.remaining(), 0);
    }

    #[test]
    fn seeded_masks_keep_about_the_keep_rate() {
        let mask = StepDraws::seeded(3, 1).layers.keep_mask(10_000, 0.5);
        let kept = mask.iter().filter(|&&k| k).count();
        assert!((4_800..5_200).contains(&kept), "{kept}");
    }

    #[test]
    #[should_panic(expected = "not an index below 3")]
    fn a_recorded_index_out_of_range_is_refused() {
        Recorded::new(vec![3.0]).below(3);
    }

    #[test]
    fn seeded_draws_follow_seed_and_step() {
        let take = |seed, step| {
            let mut d = StepDraws::seeded(seed, step);
            (d.batch.uniform(), d.layers.uniform())
        };
        assert_eq!(take(1, 7), take(1, 7));
        assert_ne!(take(1, 7), take(1, 8));
        assert_ne!(take(1, 7), take(2, 7));
    }
}
