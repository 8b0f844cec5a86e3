//! HaS, Hide-and-Seek (Singh & Lee, ICCV 2017): the training image is cut into square
//! patches of `grid_size` pixels and each is hidden (set to 0, the mean colour after
//! normalization) with probability `drop_rate`, so the network must find every part of
//! the object, not only the most discriminative one. A CAM model; evaluation is unchanged.
//! Defaults are wsolevaluation's (grid 4, drop rate 0.5).

use super::Knob;
use crate::draws::Draws;

/// `wsol sweep`'s default search range for HaS.
pub const SEARCH: &[(&str, Knob)] = &[("model.has.drop_rate", Knob::Uniform(0.0, 1.0))];

pub fn hide_patches(images: &mut [f32], size: usize, grid: usize, drop_rate: f64, draws: &mut dyn Draws) {
    if grid == 0 {
        return;
    }
    let plane = size * size;
    for image in images.chunks_mut(3 * plane) {
        for y0 in (0..size).step_by(grid) {
            for x0 in (0..size).step_by(grid) {
                // wsolevaluation's `random.random() <= drop_rate`, one draw per patch in
                // row-major order.
                if draws.uniform() > drop_rate {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draws::StepDraws;

    #[test]
    fn has_hides_whole_grid_patches_at_about_the_drop_rate() {
        let size = 32;
        let mut images = vec![1f32; 4 * 3 * size * size];
        hide_patches(&mut images, size, 8, 0.5, StepDraws::seeded(0, 0).batch.as_mut());
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
        hide_patches(&mut none, size, 8, 0.0, StepDraws::seeded(0, 0).batch.as_mut());
        assert!(none.iter().all(|&v| v == 1.0));
        hide_patches(&mut none, size, 5, 1.0, StepDraws::seeded(0, 0).batch.as_mut());
        assert!(none.iter().all(|&v| v == 0.0), "a ragged last patch is hidden too");
    }
}
