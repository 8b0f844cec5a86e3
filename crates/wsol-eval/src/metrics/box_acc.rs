//! Box accuracy over a threshold sweep: the official `BoxEvaluator` (MaxBoxAcc with the
//! largest contour, MaxBoxAccV2 with all contours), plus GT-known / top-k localization
//! at the best and at a fixed threshold. Both contour modes are counted in one pass.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::percent;
use crate::localize::{iou, quantize, sweep_quantized_unordered, BBox, Sweep};

/// The IoU (percent) of MaxBoxAcc and of GT-known / top-k localization.
pub(crate) const IOU_LOC: u32 = 50;

pub struct BoxEvalConfig {
    /// CAM thresholds of the sweep (`cam_thresholds(interval)`).
    pub thresholds: Vec<f64>,
    /// IoU thresholds in percent, e.g. [30, 50, 70]; MaxBoxAccV2 averages over them.
    pub iou_thresholds: Vec<u32>,
    /// Contours kept for the V2 numbers: all (`true`, the official V2) or the largest.
    pub multi_contour: bool,
    /// The single threshold of the `*_fixed` keys (classic CAM-paper style).
    pub fixed_threshold: f64,
}

/// Whether the GT class was in the top-1 / top-5 predictions of the image.
#[derive(Clone, Copy, Debug)]
pub struct ClsOutcome {
    pub top1: bool,
    pub top5: bool,
}

/// Per-threshold accuracies (percent), e.g. for `curve.csv`.
#[derive(Clone, Debug, Default)]
pub struct Curves {
    pub thresholds: Vec<f64>,
    /// IoU thresholds of the rows below: the configured ones, then 50 if it was missing.
    pub iou_thresholds: Vec<u32>,
    /// `[iou][threshold]`, largest contour only.
    pub largest: Vec<Vec<f64>>,
    /// `[iou][threshold]`, all contours.
    pub all: Vec<Vec<f64>>,
    /// `[threshold]`: largest contour correct at IoU 50 and class in top-1 / top-5.
    pub top1_loc: Option<Vec<f64>>,
    pub top5_loc: Option<Vec<f64>>,
}

/// Box-accuracy numbers. Every per-IoU and per-threshold name says which contour rule made
/// it: `v1` keeps the largest contour (MaxBoxAcc), `v2` keeps all contours (MaxBoxAccV2).
/// Per-IoU maps are keyed by the IoU in percent (`"30"`, `"50"`, ...), each at its own best
/// threshold.
#[derive(serde::Serialize, Clone, Debug)]
pub struct LocalizationMetrics {
    pub num_images: usize,
    /// MaxBoxAcc: v1 at IoU 50, at `best_threshold_v1`.
    pub maxboxacc: f64,
    /// MaxBoxAccV2: the mean of `maxboxacc_v2_by_iou` over the configured IoUs.
    pub maxboxacc_v2: f64,
    pub maxboxacc_v1_by_iou: BTreeMap<String, f64>,
    pub maxboxacc_v2_by_iou: BTreeMap<String, f64>,
    /// The threshold of MaxBoxAcc, GT-known and top-k Loc (`best_threshold` in DESIGN.md).
    pub best_threshold_v1: f64,
    pub best_threshold_v1_by_iou: BTreeMap<String, f64>,
    pub best_threshold_v2_by_iou: BTreeMap<String, f64>,
    pub gt_known_loc: f64,
    pub top1_loc: Option<f64>,
    pub top5_loc: Option<f64>,
    pub gt_known_loc_fixed: f64,
    pub top1_loc_fixed: Option<f64>,
    pub top5_loc_fixed: Option<f64>,
    #[serde(skip)]
    pub curves: Curves,
}

/// Correct-image counts per (mode, IoU, threshold); merge to combine image shards.
#[derive(Clone, Debug)]
pub struct BoxAccumulator {
    /// The sweep's thresholds, then the fixed threshold: one pass per image scores both.
    sweep_thresholds: Vec<f64>,
    /// Tracked IoUs: the configured ones, plus 50 if absent (needed for MaxBoxAcc).
    ious: Vec<u32>,
    n_cfg_ious: usize,
    multi_contour: bool,
    cnt: u64,
    /// Images that came with a classification outcome.
    cls_cnt: u64,
    largest: Vec<u64>, // [iou * n_thr + thr]
    all: Vec<u64>,
    top1: Vec<u64>, // [thr]
    top5: Vec<u64>,
    fixed: [u64; 3], // gt-known, top-1, top-5
}

impl BoxAccumulator {
    /// Fails on a configuration with nothing to sweep or score: no IoU or CAM threshold,
    /// an IoU outside 1..=100 percent, a CAM threshold outside [0, 1).
    pub fn new(cfg: &BoxEvalConfig) -> Result<Self> {
        if cfg.iou_thresholds.is_empty() {
            bail!("box accuracy: need at least one IoU threshold (percent, e.g. 30,50,70)");
        }
        if let Some(d) = cfg.iou_thresholds.iter().find(|d| !(1..=100).contains(*d)) {
            bail!("box accuracy: IoU threshold {d}: expected a percentage in 1..=100");
        }
        if cfg.thresholds.is_empty() {
            bail!("box accuracy: need at least one CAM threshold");
        }
        if let Some(t) = cfg.thresholds.iter().find(|t| !(0.0..1.0).contains(*t)) {
            bail!("box accuracy: CAM threshold {t:?}: expected a value in [0, 1)");
        }
        if !(0.0..1.0).contains(&cfg.fixed_threshold) {
            bail!("box accuracy: fixed threshold {:?}: expected a value in [0, 1)", cfg.fixed_threshold);
        }
        let mut ious = cfg.iou_thresholds.clone();
        if !ious.contains(&IOU_LOC) {
            ious.push(IOU_LOC);
        }
        let n = cfg.thresholds.len();
        Ok(BoxAccumulator {
            sweep_thresholds: cfg.thresholds.iter().copied().chain([cfg.fixed_threshold]).collect(),
            n_cfg_ious: cfg.iou_thresholds.len(),
            largest: vec![0; ious.len() * n],
            all: vec![0; ious.len() * n],
            ious,
            multi_contour: cfg.multi_contour,
            cnt: 0,
            cls_cnt: 0,
            top1: vec![0; n],
            top5: vec![0; n],
            fixed: [0; 3],
        })
    }

    /// map: already prepared (resized to w x h and min-max normalized); gt: GT boxes
    /// already rescaled to w x h. An image without GT boxes counts, but is never correct
    /// (the official code would fail on it).
    pub fn add(&mut self, map: &[f64], w: usize, h: usize, gt: &[BBox], cls: Option<ClsOutcome>) {
        self.add_quantized(&quantize(map), w, h, gt, cls)
    }

    /// [`BoxAccumulator::add`] for a map already quantized (`quantize(prepared)`, or
    /// `prepare_quantized(raw)`).
    pub fn add_quantized(&mut self, q: &[u8], w: usize, h: usize, gt: &[BBox], cls: Option<ClsOutcome>) {
        let scored = self.score(q, w, h, gt);
        self.add_scored(&scored, cls)
    }

    /// One image's threshold sweep scored against its GT boxes, for [`Self::add_scored`]
    /// and for anything else that reads the same boxes (e.g. a [`super::PerImageRecorder`]),
    /// so the map is swept once.
    pub fn score(&self, q: &[u8], w: usize, h: usize, gt: &[BBox]) -> ScoredSweep {
        // Many thresholds share one level (binary map): score each level's boxes once. The
        // best IoU over all boxes does not depend on their order, so levels with holes
        // need not be traced.
        ScoredSweep(sweep_quantized_unordered(q, w, h, &self.sweep_thresholds, |largest, all| ScoredBoxes {
            v1_box: largest,
            v1_iou: best_iou(std::slice::from_ref(&largest), gt),
            v2_iou: best_iou(all, gt),
        }))
    }

    /// Counts an image from its [`Self::score`] sweep.
    pub fn add_scored(&mut self, scored: &ScoredSweep, cls: Option<ClsOutcome>) {
        let n = self.thresholds().len();
        let sweep = &scored.0;
        assert_eq!(sweep.index.len(), n + 1, "a sweep scored by a box accumulator of another configuration");
        for (t, &g) in sweep.index[..n].iter().enumerate() {
            let ScoredBoxes { v1_iou, v2_iou, .. } = sweep.groups[g];
            for (k, &d) in self.ious.iter().enumerate() {
                self.largest[k * n + t] += iou_hit(v1_iou, d) as u64;
                self.all[k * n + t] += iou_hit(v2_iou, d) as u64;
            }
            if let Some(c) = cls {
                let ok = iou_hit(v1_iou, IOU_LOC);
                self.top1[t] += (ok && c.top1) as u64;
                self.top5[t] += (ok && c.top5) as u64;
            }
        }
        let ok = iou_hit(sweep.groups[sweep.index[n]].v1_iou, IOU_LOC);
        self.fixed[0] += ok as u64;
        if let Some(c) = cls {
            self.fixed[1] += (ok && c.top1) as u64;
            self.fixed[2] += (ok && c.top5) as u64;
            self.cls_cnt += 1;
        }
        self.cnt += 1;
    }

    /// Images added so far (the official `cnt`).
    pub fn count(&self) -> u64 {
        self.cnt
    }

    /// Correct-image counts `[IoU][CAM threshold]` for the configured IoUs, in their order:
    /// the official `num_correct` with `multi_contour_eval` = `all_contours`.
    pub fn num_correct(&self, all_contours: bool) -> Vec<Vec<u64>> {
        let counts = if all_contours { &self.all } else { &self.largest };
        counts.chunks(self.thresholds().len()).take(self.n_cfg_ious).map(<[u64]>::to_vec).collect()
    }

    fn thresholds(&self) -> &[f64] {
        &self.sweep_thresholds[..self.sweep_thresholds.len() - 1]
    }

    pub fn merge(&mut self, other: &BoxAccumulator) {
        assert!(
            self.sweep_thresholds == other.sweep_thresholds && self.ious == other.ious,
            "merging box accumulators of different configurations"
        );
        let add = |a: &mut Vec<u64>, b: &Vec<u64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.largest, &other.largest);
        add(&mut self.all, &other.all);
        add(&mut self.top1, &other.top1);
        add(&mut self.top5, &other.top5);
        (0..3).for_each(|i| self.fixed[i] += other.fixed[i]);
        self.cnt += other.cnt;
        self.cls_cnt += other.cls_cnt;
    }

    /// Every count, flat, for summing shards held by other processes (element-wise sums
    /// of these are [`Self::merge`]); [`Self::set_counts`] takes such a sum back.
    pub fn counts(&self) -> Vec<u64> {
        let mut v = Vec::with_capacity(self.largest.len() * 2 + self.top1.len() * 2 + 5);
        v.extend([self.cnt, self.cls_cnt]);
        v.extend_from_slice(&self.fixed);
        for part in [&self.largest, &self.all, &self.top1, &self.top5] {
            v.extend_from_slice(part);
        }
        v
    }

    /// Replaces the counts with `counts` as [`Self::counts`] lays them out (an accumulator
    /// of the same configuration); fails on another length.
    pub fn set_counts(&mut self, counts: &[u64]) -> Result<()> {
        let want = self.counts().len();
        if counts.len() != want {
            bail!("box accuracy: {} counts given, this configuration has {want}", counts.len());
        }
        let (head, mut rest) = counts.split_at(5);
        (self.cnt, self.cls_cnt) = (head[0], head[1]);
        self.fixed.copy_from_slice(&head[2..5]);
        for part in [&mut self.largest, &mut self.all, &mut self.top1, &mut self.top5] {
            let (mine, tail) = rest.split_at(part.len());
            part.copy_from_slice(mine);
            rest = tail;
        }
        Ok(())
    }

    /// Top-k numbers are `None` unless every image came with a classification outcome.
    pub fn finish(&self) -> LocalizationMetrics {
        let thresholds = self.thresholds();
        let n = thresholds.len();
        let pct = |counts: &[u64]| counts.iter().map(|&c| percent(c, self.cnt)).collect::<Vec<f64>>();
        let rows = |counts: &[u64]| counts.chunks(n).map(pct).collect::<Vec<_>>();
        let largest = rows(&self.largest);
        let all = rows(&self.all);
        let with_cls = self.cnt > 0 && self.cls_cnt == self.cnt;
        let top1 = with_cls.then(|| pct(&self.top1));
        let top5 = with_cls.then(|| pct(&self.top5));

        let loc = self.ious.iter().position(|&d| d == IOU_LOC).expect("50 is tracked");
        let best = argmax(&largest[loc]);
        let v2_rows = if self.multi_contour { &all } else { &largest };
        // Each IoU's best accuracy and the threshold that reaches it, for one rule's rows.
        let by_iou = |rows: &[Vec<f64>]| {
            let mut acc = BTreeMap::new();
            let mut thr = BTreeMap::new();
            for (k, d) in self.ious[..self.n_cfg_ious].iter().enumerate() {
                let i = argmax(&rows[k]);
                acc.insert(d.to_string(), rows[k][i]);
                thr.insert(d.to_string(), thresholds[i]);
            }
            (acc, thr)
        };
        let (v1_by_iou, v1_thr_by_iou) = by_iou(&largest);
        let (v2_by_iou, v2_thr_by_iou) = by_iou(v2_rows);
        // Summed in the configured IoU order, as the official evaluator averages.
        let sum: f64 = self.ious[..self.n_cfg_ious].iter().map(|d| v2_by_iou[&d.to_string()]).sum();
        let fixed = |c: u64| percent(c, self.cnt);
        LocalizationMetrics {
            num_images: self.cnt as usize,
            maxboxacc: largest[loc][best],
            maxboxacc_v2: sum / self.n_cfg_ious as f64,
            maxboxacc_v1_by_iou: v1_by_iou,
            maxboxacc_v2_by_iou: v2_by_iou,
            best_threshold_v1: thresholds[best],
            best_threshold_v1_by_iou: v1_thr_by_iou,
            best_threshold_v2_by_iou: v2_thr_by_iou,
            gt_known_loc: largest[loc][best],
            top1_loc: top1.as_ref().map(|c| c[best]),
            top5_loc: top5.as_ref().map(|c| c[best]),
            gt_known_loc_fixed: fixed(self.fixed[0]),
            top1_loc_fixed: with_cls.then(|| fixed(self.fixed[1])),
            top5_loc_fixed: with_cls.then(|| fixed(self.fixed[2])),
            curves: Curves {
                thresholds: thresholds.to_vec(),
                iou_thresholds: self.ious.clone(),
                largest,
                all,
                top1_loc: top1,
                top5_loc: top5,
            },
        }
    }
}

/// One image's sweep scored against its GT boxes ([`BoxAccumulator::score`]).
pub struct ScoredSweep(Sweep<ScoredBoxes>);

/// A box set of the sweep: the largest contour's box, and the best IoU with any GT box
/// of the v1 (largest contour) and v2 (all contours) rules.
#[derive(Clone, Copy, Debug)]
struct ScoredBoxes {
    v1_box: BBox,
    v1_iou: f64,
    v2_iou: f64,
}

impl ScoredSweep {
    /// The v1 (largest-contour) box at each CAM threshold of the sweep, in order.
    pub fn v1_boxes(&self) -> impl ExactSizeIterator<Item = BBox> + '_ {
        // The last index is the fixed threshold's, appended to the sweep.
        let n = self.0.index.len() - 1;
        self.0.index[..n].iter().map(|&g| self.0.groups[g].v1_box)
    }
}

/// Best IoU of any of `boxes` with any GT box; -inf without GT boxes (never correct).
pub(crate) fn best_iou(boxes: &[BBox], gt: &[BBox]) -> f64 {
    let mut best = f64::NEG_INFINITY;
    for b in boxes {
        for g in gt {
            best = best.max(iou(b, g));
        }
    }
    best
}

/// Whether an IoU reaches `d` percent; the official test `iou >= threshold / 100` in f64.
pub(crate) fn iou_hit(v: f64, d: u32) -> bool {
    v >= d as f64 / 100.0
}

/// First index of the maximum, like `np.argmax`.
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three 4x4 images, thresholds [0, 0.5], IoU [30, 50, 70], hand-checked.
    #[test]
    fn three_images_by_hand() {
        let cfg = BoxEvalConfig {
            thresholds: vec![0.0, 0.5],
            iou_thresholds: vec![30, 50, 70],
            multi_contour: true,
            fixed_threshold: 0.5,
        };
        let grid = |rows: [&str; 4]| -> Vec<f64> {
            rows.iter().flat_map(|r| r.bytes().map(|b| (b - b'0') as f64 / 9.0)).collect()
        };
        let mut acc = BoxAccumulator::new(&cfg).unwrap();
        // Image A: one 2x2 blob at level 9, rest 0. Box (1,1,3,3) at both thresholds.
        // GT (1,1,2,2): IoU 4/9 = 0.444 -> correct at 30 only.
        let a = grid(["0000", "0990", "0990", "0000"]);
        acc.add(&a, 4, 4, &[BBox::new(1, 1, 2, 2)], Some(ClsOutcome { top1: true, top5: true }));
        // Image B: big blob (level 3) on the left and a lone pixel (level 9) at (3,3).
        // t=0: contours: lone (3,3)->(3,3,3,3) clipped; blob 2x4 cols 0-1 (area 3) -> largest (0,0,2,3).
        // t=0.5 (cut 127): only the lone pixel: (3,3,3,3).
        // GT (0,0,1,3): t=0 largest IoU 8/12 = 0.667 -> 30, 50; t=0.5 IoU 0.
        let b = grid(["3300", "3300", "3300", "3309"]);
        acc.add(&b, 4, 4, &[BBox::new(0, 0, 1, 3)], Some(ClsOutcome { top1: false, top5: true }));
        // Image C: GT matches the lone pixel only; at t=0 the blob is largest (wrong) but
        // "all" has the pixel box (3,3,3,3): IoU 1 -> V2 correct everywhere, largest not.
        acc.add(&b, 4, 4, &[BBox::new(3, 3, 3, 3)], Some(ClsOutcome { top1: true, top5: true }));

        let m = acc.finish();
        let p = |c: u64| c as f64 * 100.0 / 3.0;
        // Largest @50: t0 = {B}, t0.5 = {C} -> 1 each; first max -> t = 0.
        assert_eq!(m.maxboxacc, p(1));
        assert_eq!(m.best_threshold_v1, 0.0);
        assert_eq!(m.gt_known_loc, p(1));
        assert_eq!(m.top1_loc, Some(0.0)); // B is wrong top-1
        assert_eq!(m.top5_loc, Some(p(1)));
        // All contours: @30 t0 = {A, B, C}; @50 t0 = {B, C}; @70 t0 = {C}, t0.5 = {C}.
        assert_eq!(m.maxboxacc_v2_by_iou["30"], p(3));
        assert_eq!(m.maxboxacc_v2_by_iou["50"], p(2));
        assert_eq!(m.maxboxacc_v2_by_iou["70"], p(1));
        assert_eq!(m.maxboxacc_v2, (p(3) + p(2) + p(1)) / 3.0);
        assert_eq!(m.best_threshold_v2_by_iou["70"], 0.0);
        // Largest contour: @30 t0 = {A, B}, t0.5 = {A, C}; @50 t0 = {B}; @70 t0.5 = {C}.
        assert_eq!(m.maxboxacc_v1_by_iou["30"], p(2));
        assert_eq!(m.maxboxacc_v1_by_iou["50"], m.maxboxacc);
        assert_eq!(m.maxboxacc_v1_by_iou["70"], p(1));
        assert_eq!(m.best_threshold_v1_by_iou["30"], 0.0);
        assert_eq!(m.best_threshold_v1_by_iou["70"], 0.5);
        // Fixed 0.5, largest @50: only C.
        assert_eq!(m.gt_known_loc_fixed, p(1));
        assert_eq!(m.top1_loc_fixed, Some(p(1)));
        assert_eq!(m.curves.largest[0], vec![p(2), p(2)]); // @30: A, B | A, C
        assert_eq!(m.num_images, 3);
    }

    #[test]
    fn merge_equals_sequential_and_no_cls_gives_none() {
        let cfg = BoxEvalConfig {
            thresholds: vec![0.0, 0.3, 0.6],
            iou_thresholds: vec![50],
            multi_contour: false,
            fixed_threshold: 0.2,
        };
        let maps: Vec<Vec<f64>> =
            (0..4).map(|k| (0..25).map(|i| ((i * 7 + k * 3) % 11) as f64 / 10.0).collect()).collect();
        let gt = [BBox::new(0, 0, 3, 3)];
        let mut seq = BoxAccumulator::new(&cfg).unwrap();
        maps.iter().for_each(|m| seq.add(m, 5, 5, &gt, None));
        let mut a = BoxAccumulator::new(&cfg).unwrap();
        let mut b = BoxAccumulator::new(&cfg).unwrap();
        maps[..1].iter().for_each(|m| a.add(m, 5, 5, &gt, None));
        maps[1..].iter().for_each(|m| b.add(m, 5, 5, &gt, None));
        // Summing the flat counts (what processes exchange) is the merge.
        let mut summed = BoxAccumulator::new(&cfg).unwrap();
        let sum: Vec<u64> = a.counts().iter().zip(b.counts()).map(|(x, y)| x + y).collect();
        summed.set_counts(&sum).unwrap();
        assert!(summed.set_counts(&sum[1..]).is_err());
        a.merge(&b);
        assert_eq!(summed.counts(), a.counts());
        assert_eq!(summed.counts(), seq.counts());
        let (x, y) = (seq.finish(), a.finish());
        assert_eq!(x.curves.largest, y.curves.largest);
        assert_eq!(x.maxboxacc, y.maxboxacc);
        assert_eq!(x.top1_loc, None);
        assert_eq!(x.maxboxacc_v2, x.maxboxacc);
    }

    #[test]
    fn a_config_with_nothing_to_score_is_an_error() {
        let good = || BoxEvalConfig {
            thresholds: vec![0.0, 0.5],
            iou_thresholds: vec![30, 50, 70],
            multi_contour: true,
            fixed_threshold: 0.2,
        };
        assert!(BoxAccumulator::new(&good()).is_ok());
        for (cfg, want) in [
            (BoxEvalConfig { iou_thresholds: vec![], ..good() }, "need at least one IoU threshold"),
            (BoxEvalConfig { iou_thresholds: vec![50, 0], ..good() }, "IoU threshold 0: expected a percentage"),
            (BoxEvalConfig { iou_thresholds: vec![150], ..good() }, "IoU threshold 150"),
            (BoxEvalConfig { thresholds: vec![], ..good() }, "need at least one CAM threshold"),
            (BoxEvalConfig { thresholds: vec![0.0, f64::NAN], ..good() }, "CAM threshold NaN"),
            (BoxEvalConfig { thresholds: vec![-0.5], ..good() }, "CAM threshold -0.5"),
            (BoxEvalConfig { fixed_threshold: 1.0, ..good() }, "fixed threshold 1.0: expected a value in [0, 1)"),
        ] {
            let err = BoxAccumulator::new(&cfg).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "expected `{want}`, got `{err}`");
        }
    }
}
