//! Top-k classification accuracy.

use super::percent;

/// Whether `label` is among the `k` highest `scores`.
///
/// Ties are broken by class index (a stable descending sort): `label` ranks after every
/// strictly higher score and after equal scores of lower index. A NaN score for the
/// label, or a label out of range, is never correct; other NaN scores are ignored.
pub fn topk_correct(scores: &[f32], label: usize, k: usize) -> bool {
    let Some(&s) = scores.get(label) else { return false };
    if s.is_nan() {
        return false;
    }
    let ahead = scores.iter().enumerate().filter(|&(j, &v)| v > s || (v == s && j < label)).count();
    ahead < k
}

/// Top-1 / top-5 classification counts; mergeable so images can be scored in parallel.
#[derive(Clone, Debug, Default)]
pub struct ClsAccumulator {
    cnt: u64,
    top1: u64,
    top5: u64,
}

impl ClsAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, scores: &[f32], label: usize) {
        self.cnt += 1;
        self.top1 += topk_correct(scores, label, 1) as u64;
        self.top5 += topk_correct(scores, label, 5) as u64;
    }

    pub fn merge(&mut self, other: &ClsAccumulator) {
        self.cnt += other.cnt;
        self.top1 += other.top1;
        self.top5 += other.top5;
    }

    pub fn count(&self) -> u64 {
        self.cnt
    }

    pub fn top1_cls(&self) -> f64 {
        percent(self.top1, self.cnt)
    }

    pub fn top5_cls(&self) -> f64 {
        percent(self.top5, self.cnt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_hand_cases() {
        let s = [0.1, 0.7, 0.2, 0.7, 0.05, 0.0, 0.3];
        assert!(topk_correct(&s, 1, 1)); // tie with class 3: lower index wins
        assert!(!topk_correct(&s, 3, 1));
        assert!(topk_correct(&s, 3, 2));
        assert!(topk_correct(&s, 2, 5)); // ranks: 1, 3, 6, 2
        assert!(!topk_correct(&s, 4, 5)); // 1, 3, 6, 2, 0 are ahead
        assert!(!topk_correct(&s, 9, 5));
        assert!(!topk_correct(&[f32::NAN, 1.0], 0, 5));
    }

    #[test]
    fn accumulator_percentages() {
        let mut a = ClsAccumulator::new();
        a.add(&[0.9, 0.1], 0);
        let mut b = ClsAccumulator::new();
        b.add(&[0.9, 0.1], 1);
        b.add(&[0.2, 0.8], 1);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.top1_cls(), 2.0 * 100.0 / 3.0);
        assert_eq!(a.top5_cls(), 100.0);
    }
}
