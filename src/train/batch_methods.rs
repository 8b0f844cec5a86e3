//! WSOL methods that act on the training batch rather than on the network (both train a
//! CAM model; evaluation is unchanged):
//!
//! - HaS, Hide-and-Seek (Singh & Lee, ICCV 2017): the image is cut into square patches of
//!   `grid_size` pixels and each is hidden (set to 0, the mean colour after
//!   normalization) with probability `drop_rate`, so the network must find every part of
//!   the object, not only the most discriminative one.
//! - CutMix (Yun et al., ICCV 2019): a box of area ratio 1 - lambda, lambda ~ Beta(beta,
//!   beta), is pasted from another image of the batch (a random permutation); the loss is
//!   lambda * CE(label) + (1 - lambda) * CE(other label) with lambda recomputed from the
//!   clipped box.
//!
//! Defaults are wsolevaluation's (grid 4, drop rate 0.5; beta 1, probability 1). The
//! randomness of step `s` comes from a generator seeded by (seed, s), so a resumed run
//! draws the same patches and boxes.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

use crate::config::ModelConfig;

/// The second label set of a CutMix batch and its loss weight `1 - lambda`.
pub struct Mix {
    pub other_labels: Vec<u32>,
    pub lambda: f64,
}

/// The generator of training step `step`.
pub fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64).wrapping_add(0xB5))
}

/// Applies the configured batch method to `images` ([n, 3, size, size], normalized) in
/// place; returns the label mix for CutMix.
pub fn apply(cfg: &ModelConfig, images: &mut [f32], labels: &[u32], size: usize, rng: &mut ChaCha8Rng) -> Option<Mix> {
    match cfg.head.as_str() {
        "has" => {
            hide_patches(images, size, cfg.has.grid_size, cfg.has.drop_rate, rng);
            None
        }
        "cutmix" if cfg.cutmix.beta > 0.0 && rng.random::<f64>() < cfg.cutmix.prob => {
            Some(cutmix(images, labels, size, cfg.cutmix.beta, rng))
        }
        _ => None,
    }
}

pub fn hide_patches(images: &mut [f32], size: usize, grid: usize, drop_rate: f64, rng: &mut ChaCha8Rng) {
    if grid == 0 {
        return;
    }
    let plane = size * size;
    for image in images.chunks_mut(3 * plane) {
        for y0 in (0..size).step_by(grid) {
            for x0 in (0..size).step_by(grid) {
                if rng.random::<f64>() >= drop_rate {
                    continue;
                }
                for c in 0..3 {
                    for y in y0..(y0 + grid).min(size) {
                        let row = c * plane + y * size;
                        image[row + x0..row + (x0 + grid).min(size)].fill(0.0);
                    }
                }
            }
        }
    }
}

/// The CutMix box for area ratio `1 - lambda`, centred at a random pixel and clipped:
/// (x0, y0, x1, y1), end exclusive.
fn cut_box(size: usize, lambda: f64, rng: &mut ChaCha8Rng) -> (usize, usize, usize, usize) {
    let cut = (size as f64 * (1.0 - lambda).sqrt()) as usize;
    let (cx, cy) = (rng.random_range(0..size), rng.random_range(0..size));
    let lo = |c: usize| c.saturating_sub(cut / 2);
    let hi = |c: usize| (c + cut / 2).min(size);
    (lo(cx), lo(cy), hi(cx), hi(cy))
}

pub fn cutmix(images: &mut [f32], labels: &[u32], size: usize, beta: f64, rng: &mut ChaCha8Rng) -> Mix {
    let n = labels.len();
    let lambda = Beta::new(beta, beta).map(|b| b.sample(rng)).unwrap_or(0.5);
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(rng);
    let (x0, y0, x1, y1) = cut_box(size, lambda, rng);
    let plane = size * size;
    let source = images.to_vec();
    for (i, &j) in perm.iter().enumerate() {
        for c in 0..3 {
            for y in y0..y1 {
                let row = (i * 3 + c) * plane + y * size;
                let from = (j * 3 + c) * plane + y * size;
                images[row + x0..row + x1].copy_from_slice(&source[from + x0..from + x1]);
            }
        }
    }
    let pasted = ((x1 - x0) * (y1 - y0)) as f64 / plane as f64;
    Mix { other_labels: perm.iter().map(|&j| labels[j]).collect(), lambda: 1.0 - pasted }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_hides_whole_grid_patches_at_about_the_drop_rate() {
        let size = 32;
        let mut images = vec![1f32; 4 * 3 * size * size];
        hide_patches(&mut images, size, 8, 0.5, &mut step_rng(0, 0));
        let hidden = images.iter().filter(|&&v| v == 0.0).count() as f64 / images.len() as f64;
        assert!((0.25..0.75).contains(&hidden), "{hidden}");
        // Every 8x8 patch of every channel is all hidden or all kept.
        for p in images.chunks(size * size) {
            for (py, px) in (0..4).flat_map(|a| (0..4).map(move |b| (a, b))) {
                let v: Vec<f32> = (0..64).map(|k| p[(py * 8 + k / 8) * size + px * 8 + k % 8]).collect();
                assert!(v.iter().all(|&x| x == v[0]));
            }
        }
        let mut none = vec![1f32; 3 * size * size];
        hide_patches(&mut none, size, 8, 0.0, &mut step_rng(0, 0));
        assert!(none.iter().all(|&v| v == 1.0));
        hide_patches(&mut none, size, 5, 1.0, &mut step_rng(0, 0));
        assert!(none.iter().all(|&v| v == 0.0), "a ragged last patch is hidden too");
    }

    #[test]
    fn cutmix_pastes_one_box_and_weighs_labels_by_its_area() {
        let (size, n) = (16, 4);
        // Image i is filled with the value i.
        let mut images: Vec<f32> = (0..n).flat_map(|i| vec![i as f32; 3 * size * size]).collect();
        let labels = [10, 11, 12, 13];
        let mix = cutmix(&mut images, &labels, size, 1.0, &mut step_rng(3, 7));
        for i in 0..n {
            let img = &images[i * 3 * size * size..(i + 1) * 3 * size * size];
            let other = (mix.other_labels[i] - 10) as f32;
            let from_other = img.iter().filter(|&&v| v == other && other != i as f32).count();
            if other != i as f32 {
                let area = from_other as f64 / img.len() as f64;
                assert!((area - (1.0 - mix.lambda)).abs() < 1e-9, "{area} vs {}", mix.lambda);
            }
        }
        let mut sorted = mix.other_labels.clone();
        sorted.sort();
        assert_eq!(sorted, labels, "a permutation of the batch's labels");
        // Same step, same draw.
        let mut again: Vec<f32> = (0..n).flat_map(|i| vec![i as f32; 3 * size * size]).collect();
        let mix2 = cutmix(&mut again, &labels, size, 1.0, &mut step_rng(3, 7));
        assert_eq!((again, mix2.lambda), (images, mix.lambda));
    }
}
