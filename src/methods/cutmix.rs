//! CutMix (Yun et al., ICCV 2019): a box of area ratio 1 - lambda, lambda ~ Beta(beta,
//! beta), is pasted from another image of the batch (a random permutation); the loss is
//! lambda * CE(label) + (1 - lambda) * CE(other label) with lambda recomputed from the
//! clipped box. A CAM model; evaluation is unchanged. Defaults are wsolevaluation's
//! (beta 1, probability 1).

use super::Knob;
use crate::draws::Draws;

/// `wsol sweep`'s default search range for CutMix.
pub const SEARCH: &[(&str, Knob)] = &[("model.cutmix.beta", Knob::Uniform(0.0, 2.0))];

/// The second label set of a CutMix batch and its loss weight `1 - lambda`.
pub struct Mix {
    pub other_labels: Vec<u32>,
    pub lambda: f64,
}

/// The CutMix box for area ratio `1 - lambda`, centred at a random pixel and clipped:
/// (x0, y0, x1, y1), end exclusive.
fn cut_box(size: usize, lambda: f64, draws: &mut dyn Draws) -> (usize, usize, usize, usize) {
    let cut = (size as f64 * (1.0 - lambda).sqrt()) as usize;
    // The row centre first, as wsolevaluation's rand_bbox draws.
    let cy = draws.below(size);
    let cx = draws.below(size);
    let lo = |c: usize| c.saturating_sub(cut / 2);
    let hi = |c: usize| (c + cut / 2).min(size);
    (lo(cx), lo(cy), hi(cx), hi(cy))
}

pub fn cutmix(images: &mut [f32], labels: &[u32], size: usize, beta: f64, draws: &mut dyn Draws) -> Mix {
    let n = labels.len();
    let lambda = draws.beta(beta);
    let perm = draws.permutation(n);
    let (x0, y0, x1, y1) = cut_box(size, lambda, draws);
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
    use crate::draws::StepDraws;

    #[test]
    fn cutmix_pastes_one_box_and_weighs_labels_by_its_area() {
        let (size, n) = (16, 4);
        // Image i is filled with the value i.
        let mut images: Vec<f32> = (0..n).flat_map(|i| vec![i as f32; 3 * size * size]).collect();
        let labels = [10, 11, 12, 13];
        let mix = cutmix(&mut images, &labels, size, 1.0, StepDraws::seeded(3, 7).batch.as_mut());
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
        let mix2 = cutmix(&mut again, &labels, size, 1.0, StepDraws::seeded(3, 7).batch.as_mut());
        assert_eq!((again, mix2.lambda), (images, mix.lambda));
    }
}
