//! PxAP (Choe et al. 2020, OpenImages30k): pixel precision-recall over the threshold
//! sweep, accumulated over the whole split, summarized as average precision in percent.
//!
//! We follow the official `MaskEvaluator` arithmetic because published PxAP numbers
//! depend on it: histograms with numpy's bin rules over `[t0, t1), .., [last, 1), [1, 2),
//! [2, 3]`, cumulative sums from the top bin down, and AP as the sum of
//! `precision[k] * (recall[k] - recall[k-1])` over the steps whose prediction count is
//! non-zero, added up in numpy's pairwise order so that the last bits agree too.

use anyhow::{bail, Result};

/// Mask value of a foreground pixel; 0 is background and anything else (255) is ignored.
pub const MASK_FG: u8 = 1;
pub const MASK_BG: u8 = 0;
pub const MASK_IGNORE: u8 = 255;

/// Foreground / background pixel counts per score bin; merge to combine image shards.
#[derive(Clone, Debug)]
pub struct PxapAccumulator {
    /// Bin edges: the thresholds, then 1, 2, 3 (the official `threshold_list_right_edge`).
    edges: Vec<f64>,
    fg: Vec<u64>,
    bg: Vec<u64>,
}

impl PxapAccumulator {
    /// `thresholds` as `cam_thresholds(interval)`: ascending, in [0, 1). Fails otherwise:
    /// they are the histogram's bin edges.
    pub fn new(thresholds: &[f64]) -> Result<Self> {
        if thresholds.is_empty() {
            bail!("PxAP: need at least one CAM threshold");
        }
        if let Some(t) = thresholds.iter().find(|t| !(0.0..1.0).contains(*t)) {
            bail!("PxAP: CAM threshold {t:?}: expected a value in [0, 1)");
        }
        if let Some(w) = thresholds.windows(2).find(|w| w[0] >= w[1]) {
            bail!("PxAP: CAM thresholds must ascend strictly, got {:?} then {:?}", w[0], w[1]);
        }
        let mut edges = thresholds.to_vec();
        edges.extend([1.0, 2.0, 3.0]);
        let bins = edges.len() - 1;
        Ok(PxapAccumulator { edges, fg: vec![0; bins], bg: vec![0; bins] })
    }

    /// The `np.histogram` bin of `v`: `[e_i, e_i+1)`, the last bin closed; None outside
    /// `[e_0, e_last]` and for NaN, which numpy drops silently.
    fn bin(&self, v: f64) -> Option<usize> {
        let last = *self.edges.last().unwrap();
        if !(v >= self.edges[0] && v <= last) {
            return None;
        }
        if v == last {
            return Some(self.edges.len() - 2);
        }
        // Thresholds are usually evenly spaced: guess from the first step, then walk to
        // the exact bin against the stored edges (so the guess never decides the answer).
        let n_thr = self.edges.len() - 3;
        if v < 1.0 && n_thr > 1 {
            let mut k = ((v / self.edges[1]) as usize).min(n_thr - 1);
            while self.edges[k] > v {
                k -= 1;
            }
            while self.edges[k + 1] <= v {
                k += 1;
            }
            return Some(k);
        }
        Some(self.edges.partition_point(|&e| e <= v) - 1)
    }

    /// `map`: prepared (resized and min-max normalized); `mask`: same length, 1 for
    /// foreground, 0 for background, 255 (any other value) for ignored pixels.
    pub fn add(&mut self, map: &[f64], mask: &[u8]) {
        assert_eq!(map.len(), mask.len(), "map and mask sizes differ");
        for (&v, &m) in map.iter().zip(mask) {
            if m != MASK_FG && m != MASK_BG {
                continue;
            }
            if let Some(b) = self.bin(v) {
                if m == MASK_FG {
                    self.fg[b] += 1;
                } else {
                    self.bg[b] += 1;
                }
            }
        }
    }

    pub fn merge(&mut self, other: &PxapAccumulator) {
        assert_eq!(self.edges, other.edges, "merging accumulators of different thresholds");
        self.fg.iter_mut().zip(&other.fg).for_each(|(a, b)| *a += b);
        self.bg.iter_mut().zip(&other.bg).for_each(|(a, b)| *a += b);
    }

    /// Foreground then background bin counts, flat, for summing shards held by other
    /// processes; [`Self::set_counts`] takes such a sum back.
    pub fn counts(&self) -> Vec<u64> {
        self.fg.iter().chain(&self.bg).copied().collect()
    }

    /// Replaces the counts with `counts` as [`Self::counts`] lays them out; fails on
    /// another length.
    pub fn set_counts(&mut self, counts: &[u64]) -> Result<()> {
        if counts.len() != self.fg.len() * 2 {
            bail!("PxAP: {} counts given, this configuration has {}", counts.len(), self.fg.len() * 2);
        }
        let (fg, bg) = counts.split_at(self.fg.len());
        self.fg.copy_from_slice(fg);
        self.bg.copy_from_slice(bg);
        Ok(())
    }

    /// Per-bin pixel counts of foreground and background (the official
    /// `gt_true_score_hist` / `gt_false_score_hist`), bins as the edges in `new`.
    pub fn histograms(&self) -> (&[u64], &[u64]) {
        (&self.fg, &self.bg)
    }

    /// Foreground and background pixels counted so far (ignored pixels excluded).
    pub fn pixel_counts(&self) -> (u64, u64) {
        (self.fg.iter().sum(), self.bg.iter().sum())
    }

    /// PxAP in percent. Fails, as the official `compute()` does, when the split has no
    /// foreground pixel or no pixel was counted at all: there is no curve to summarize.
    pub fn finish(&self) -> Result<f64> {
        // Cumulative counts from the top bin down: index k counts scores >= edge of the
        // (n-1-k)-th bin, so recall grows with k. f64 as numpy (exact below 2^53).
        let cum = |h: &[u64]| -> Vec<f64> {
            let mut acc = 0u64;
            h.iter()
                .rev()
                .map(|&c| {
                    acc += c;
                    acc as f64
                })
                .collect()
        };
        let tp = cum(&self.fg);
        let fp = cum(&self.bg);
        let num_fg = *tp.last().unwrap();
        if num_fg <= 0.0 {
            bail!("PxAP: no foreground pixel in the evaluated split (all masks empty or ignored)");
        }
        if tp.iter().zip(&fp).all(|(t, f)| t + f <= 0.0) {
            bail!("PxAP: no pixel was counted (every pixel ignored, or no score in [0, 3])");
        }
        // tp + fn == num_fg for every k; numpy's `tp / (tp + fn)` is this same division.
        let recall: Vec<f64> = tp.iter().map(|t| t / num_fg).collect();
        let terms: Vec<f64> = (1..tp.len())
            .filter(|&k| tp[k] + fp[k] != 0.0)
            .map(|k| tp[k] / (tp[k] + fp[k]) * (recall[k] - recall[k - 1]))
            .collect();
        Ok(pairwise_sum(&terms) * 100.0)
    }
}

/// numpy's float64 `add.reduce` on a contiguous array (pairwise summation, 8-way
/// unrolled blocks of at most 128), so that our sum rounds exactly like `.sum()`.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localize::cam_thresholds;

    fn pxap(thresholds: &[f64], map: &[f64], mask: &[u8]) -> f64 {
        let mut acc = PxapAccumulator::new(thresholds).unwrap();
        acc.add(map, mask);
        acc.finish().unwrap()
    }

    #[test]
    fn bins_follow_numpy_histogram() {
        let acc = PxapAccumulator::new(&[0.0, 0.5]).unwrap();
        // edges 0, 0.5, 1, 2, 3: bins [0,.5) [.5,1) [1,2) [2,3]
        assert_eq!(acc.bin(0.0), Some(0));
        assert_eq!(acc.bin(0.49), Some(0));
        assert_eq!(acc.bin(0.5), Some(1));
        assert_eq!(acc.bin(1.0), Some(2));
        assert_eq!(acc.bin(3.0), Some(3));
        assert_eq!(acc.bin(-0.1), None);
        assert_eq!(acc.bin(3.5), None);
        assert_eq!(acc.bin(f64::NAN), None);
        // A float32 CAM widened: 0.3f32 is 0.30000001192..., above 0.3f64.
        let acc = PxapAccumulator::new(&cam_thresholds(0.1).unwrap()).unwrap();
        assert_eq!(acc.bin(0.3f32 as f64), Some(3));
        assert_eq!(acc.bin(0.7f32 as f64), Some(6)); // 0.699999988 < 7 * 0.1
    }

    /// Worked on paper. Thresholds 0, 0.5 -> edges 0, .5, 1, 2, 3.
    /// Pixels (score, mask): (0.9, fg) (0.2, fg) (0.7, bg) (0.1, bg) (0.8, ignored).
    /// fg hist [1,1,0,0], bg hist [1,1,0,0]; from the top: tp = [0,0,1,2], fp = [0,0,1,2].
    /// recall = [0,0,.5,1]; k=1: tp+fp = 0, skipped; k=2: 1/2 * .5; k=3: 2/4 * .5.
    /// AP = .25 + .25 = .5 -> 50.
    #[test]
    fn four_pixel_case() {
        let map = [0.9, 0.2, 0.7, 0.1, 0.8];
        let mask = [MASK_FG, MASK_FG, MASK_BG, MASK_BG, MASK_IGNORE];
        assert_eq!(pxap(&[0.0, 0.5], &map, &mask), 50.0);
        // Fg above bg at every threshold split: fg hist [0,2,0,0], bg [2,0,0,0];
        // tp = [0,0,2,2], fp = [0,0,0,2]; k=2: 1 * 1 -> AP 1 -> 100.
        assert_eq!(pxap(&[0.0, 0.5], &[0.9, 0.6, 0.1, 0.2], &[1, 1, 0, 0]), 100.0);
    }

    /// A score of exactly 1 falls in [1, 2): it is counted at the k = 1 step, where the
    /// precision is that of the maximum-score pixels alone.
    #[test]
    fn perfect_map_scores_100() {
        let t = cam_thresholds(0.01).unwrap();
        let map = [1.0, 1.0, 0.0, 0.0, 0.3];
        let mask = [1, 1, 0, 0, 255];
        assert_eq!(pxap(&t, &map, &mask), 100.0);
        // Inverted map: recall only reaches 1 at threshold 0, where precision is 2/4.
        let inv = [0.0, 0.0, 1.0, 1.0, 0.3];
        assert_eq!(pxap(&t, &inv, &mask), 50.0);
    }

    #[test]
    fn merge_equals_one_pass() {
        let t = cam_thresholds(0.1).unwrap();
        let map: Vec<f64> = (0..40).map(|i| ((i * 37) % 41) as f64 / 40.0).collect();
        let mask: Vec<u8> = (0..40).map(|i| [0, 1, 255, 1, 0][i % 5]).collect();
        let mut whole = PxapAccumulator::new(&t).unwrap();
        whole.add(&map, &mask);
        let (mut a, mut b) = (PxapAccumulator::new(&t).unwrap(), PxapAccumulator::new(&t).unwrap());
        a.add(&map[..13], &mask[..13]);
        b.add(&map[13..], &mask[13..]);
        let mut summed = PxapAccumulator::new(&t).unwrap();
        let sum: Vec<u64> = a.counts().iter().zip(b.counts()).map(|(x, y)| x + y).collect();
        summed.set_counts(&sum).unwrap();
        assert!(summed.set_counts(&sum[1..]).is_err());
        a.merge(&b);
        assert_eq!(summed.counts(), a.counts());
        assert_eq!(a.finish().unwrap(), whole.finish().unwrap());
        assert_eq!(a.pixel_counts(), (16, 16));
    }

    #[test]
    fn degenerate_splits_are_errors() {
        let t = cam_thresholds(0.5).unwrap();
        let mut acc = PxapAccumulator::new(&t).unwrap();
        acc.add(&[0.3, 0.6], &[0, 0]);
        assert!(acc.finish().unwrap_err().to_string().contains("no foreground"));
        let mut acc = PxapAccumulator::new(&t).unwrap();
        acc.add(&[0.3, 0.6], &[255, 255]);
        assert!(acc.finish().is_err());
    }

    /// `tests/fixtures/eval_parity/numpy_pxap.json`: what numpy + cv2 give with the
    /// official MaskEvaluator arithmetic for random maps and gray masks (instances of 255,
    /// 128 and 1, with and without ignore masks), plus cv2's INTER_NEAREST index maps.
    /// The generator was a throwaway script; only its numbers are kept.
    #[test]
    fn numpy_parity() {
        use crate::localize::prepare_map;
        use crate::masks::resize_nearest;
        use serde_json::Value;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/eval_parity/numpy_pxap.json");
        let f: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).unwrap();
        let u = |v: &Value| v.as_u64().unwrap() as usize;
        let bytes = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect::<Vec<u8>>();
        for c in f["nearest"].as_array().unwrap() {
            let (sw, dw) = (u(&c["src"]), u(&c["dst"]));
            let src: Vec<u8> = (0..sw).map(|i| (i % 251) as u8).collect();
            let want: Vec<u8> =
                c["idx"].as_array().unwrap().iter().map(|i| (i.as_u64().unwrap() % 251) as u8).collect();
            assert_eq!(resize_nearest(&src, sw, 1, dw, 1), want, "{sw} -> {dw}");
            // Same mapping along columns.
            assert_eq!(resize_nearest(&src, 1, sw, 1, dw), want, "{sw} -> {dw} (rows)");
        }
        let size = u(&f["size"]);
        for (iv, want) in f["pxap"].as_object().unwrap() {
            let mut acc = PxapAccumulator::new(&cam_thresholds(iv.parse().unwrap()).unwrap()).unwrap();
            for c in f["cases"].as_array().unwrap() {
                let raw: Vec<f32> = c["raw"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                let map = prepare_map(&raw, u(&c["w"]), u(&c["h"]), size);
                let (mw, mh) = (u(&c["mw"]), u(&c["mh"]));
                let on = |g: &Value| {
                    resize_nearest(&bytes(g), mw, mh, size, size).into_iter().map(|v| v != 0).collect::<Vec<bool>>()
                };
                let mut fg = vec![false; size * size];
                for m in c["masks"].as_array().unwrap() {
                    fg.iter_mut().zip(on(m)).for_each(|(a, b)| *a |= b);
                }
                let ignore = if c["ignore"].is_null() { vec![false; size * size] } else { on(&c["ignore"]) };
                let mask = crate::masks::combine_mask(&fg, &ignore);
                acc.add(&map, &mask);
            }
            assert_eq!(
                acc.pixel_counts(),
                (want["fg"].as_u64().unwrap(), want["bg"].as_u64().unwrap()),
                "interval {iv}"
            );
            assert_eq!(acc.finish().unwrap(), want["pxap"].as_f64().unwrap(), "interval {iv}");
        }
    }

    #[test]
    fn pairwise_sum_matches_numpy_order() {
        // Exact in any order for small integers; checks every branch runs and adds up.
        for n in [0usize, 1, 7, 8, 9, 127, 128, 129, 1000, 1003] {
            let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
            assert_eq!(pairwise_sum(&v), (n * n.saturating_sub(1) / 2) as f64, "n = {n}");
        }
    }

    #[test]
    fn thresholds_that_make_no_histogram_are_an_error() {
        for (t, want) in [
            (&[][..], "need at least one CAM threshold"),
            (&[0.0, 0.5, 0.5], "must ascend strictly, got 0.5 then 0.5"),
            (&[0.5, 0.2], "must ascend strictly, got 0.5 then 0.2"),
            (&[0.0, 1.0], "CAM threshold 1.0: expected a value in [0, 1)"),
            (&[-0.1, 0.5], "CAM threshold -0.1"),
            (&[0.0, f64::NAN], "CAM threshold NaN"),
        ] {
            let err = PxapAccumulator::new(t).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{t:?}: expected `{want}`, got `{err}`");
        }
    }
}
