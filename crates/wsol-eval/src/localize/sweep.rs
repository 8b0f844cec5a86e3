//! The threshold sweep of `compute_bboxes_from_scoremaps`, for the largest-contour
//! (MaxBoxAcc) and all-contours (MaxBoxAccV2) modes at once.

use std::cell::RefCell;

use super::contours::{Contour, Tracer};
use super::level_sets::{Component, LevelSets};
use super::BBox;

/// Boxes of one threshold: the contour of largest polygon area, and every contour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThresholdBoxes {
    pub largest: BBox,
    pub all: Vec<BBox>,
}

/// What the evaluator scores when no contour exists: a single (0,0,0,0) box.
const NO_CONTOUR: [BBox; 1] = [BBox::ZERO];

/// `(map * 255).astype(np.uint8)`: f64 product, truncated (saturating outside [0, 255]).
pub fn quantize(map: &[f64]) -> Vec<u8> {
    map.iter().map(|&v| (v * 255.0) as u8).collect()
}

/// `int(t * max)` in f64, i.e. the `thresh` handed to `cv2.threshold`; pixels strictly
/// above it are foreground.
fn cut(t: f64, max_q: u8) -> i64 {
    (t * max_q as f64) as i64
}

/// The box sets a sweep meets (one per level it visits), or what a caller made of each
/// ([`sweep_quantized_with`]), and which one each threshold gets.
pub struct Sweep<G = ThresholdBoxes> {
    pub groups: Vec<G>,
    /// `groups[index[t]]` are the boxes at `thresholds[t]`.
    pub index: Vec<usize>,
}

/// Boxes per threshold for a map already normalized to [0, 1] (row-major, `w` x `h`).
pub fn boxes_at_thresholds(map: &[f64], w: usize, h: usize, thresholds: &[f64]) -> Vec<ThresholdBoxes> {
    let s = sweep(map, w, h, thresholds);
    s.index.iter().map(|&g| s.groups[g].clone()).collect()
}

/// The sweep behind [`boxes_at_thresholds`], without copying a group per threshold, so
/// callers can score each box set once.
///
/// Exact and much faster than running each threshold: the binary map `q > cut` is the
/// superlevel set `q >= cut + 1`, so thresholds are grouped by that level (at most 256
/// of them, 100 thresholds give ~100, 1000 give all), and the wanted levels' regions
/// come from one top-down pass over row runs ([`LevelSets`]); only levels whose region
/// has holes are traced.
pub fn sweep(map: &[f64], w: usize, h: usize, thresholds: &[f64]) -> Sweep {
    assert_eq!(map.len(), w * h, "map is not {w}x{h}");
    sweep_quantized(&quantize(map), w, h, thresholds)
}

/// [`sweep`] of a map already quantized ([`quantize`], or
/// [`super::prepare_quantized`] straight from a raw map).
pub fn sweep_quantized(q: &[u8], w: usize, h: usize, thresholds: &[f64]) -> Sweep {
    sweep_quantized_with(q, w, h, thresholds, |largest, all| ThresholdBoxes { largest, all: all.to_vec() })
}

/// [`sweep_quantized`] handing each box set to `score(largest, all)` and keeping what it
/// returns instead of the boxes: scoring needs no allocation per level (two per level
/// were ~3% of an evaluation at 1000 thresholds).
pub fn sweep_quantized_with<G>(
    q: &[u8],
    w: usize,
    h: usize,
    thresholds: &[f64],
    score: impl FnMut(BBox, &[BBox]) -> G,
) -> Sweep<G> {
    sweep_levels(q, w, h, thresholds, true, score)
}

/// [`sweep_quantized_with`] for callers that only need the largest contour's box and the
/// set of all boxes, not their order (e.g. the best IoU with any GT box): levels with
/// holes are resolved from their runs instead of traced ([`LevelSets::set_resolve_holes`]);
/// `all` holds the same boxes as OpenCV's contours, in another order.
pub fn sweep_quantized_unordered<G>(
    q: &[u8],
    w: usize,
    h: usize,
    thresholds: &[f64],
    score: impl FnMut(BBox, &[BBox]) -> G,
) -> Sweep<G> {
    sweep_levels(q, w, h, thresholds, false, score)
}

/// The sweep of [`sweep_quantized_with`] (`ordered`) or [`sweep_quantized_unordered`].
fn sweep_levels<G>(
    q: &[u8],
    w: usize,
    h: usize,
    thresholds: &[f64],
    ordered: bool,
    mut score: impl FnMut(BBox, &[BBox]) -> G,
) -> Sweep<G> {
    assert_eq!(q.len(), w * h, "map is not {w}x{h}");
    // Levels are not checked for pixels of their own: a pass to find the levels present
    // cost ~7% of a sweep, and a level without any only repeats the set above it.
    let max_q = q.iter().fold(0, |m, &v| m.max(v));
    // The set `q > cut` is `q >= cut + 1`; none above the maximum.
    let levels: Vec<Option<u8>> = thresholds
        .iter()
        .map(|&t| {
            let c = cut(t, max_q);
            (c < max_q as i64).then(|| (c + 1).max(0) as u8)
        })
        .collect();
    let mut wanted = [false; 256];
    levels.iter().flatten().for_each(|&l| wanted[l as usize] = true);

    // Group of each wanted level, then one for "no foreground".
    let mut group_of = [usize::MAX; 256];
    let mut groups: Vec<G> = Vec::new();
    SCRATCH.with_borrow_mut(|Scratch { sets, tracer, comps, boxes }| {
        sets.set_resolve_holes(!ordered);
        sets.sweep(q, w, h, &wanted, |l, sets| {
            let largest = if sets.holes() == 0 {
                boxes_of_components(sets, w, h, comps, boxes)
            } else if ordered {
                boxes_of(&tracer.find_runs(|y| sets.runs(y), sets.extent()), w, h, boxes)
            } else {
                boxes_of_resolved(sets, w, h, boxes)
            };
            group_of[l as usize] = groups.len();
            groups.push(score(largest, boxes));
        })
    });
    let mut empty = None;
    let index = levels
        .iter()
        .map(|&level| match level {
            Some(l) => group_of[l as usize],
            None => *empty.get_or_insert_with(|| {
                groups.push(score(BBox::ZERO, &NO_CONTOUR));
                groups.len() - 1
            }),
        })
        .collect();
    Sweep { groups, index }
}

/// Buffers reused across the maps a thread scores.
#[derive(Default)]
struct Scratch {
    sets: LevelSets,
    tracer: Tracer,
    comps: Vec<Component>,
    boxes: Vec<BBox>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// The boxes of a hole-free level straight from its components (see [`LevelSets`]),
/// into `boxes` in OpenCV's order (last-discovered first); returns the largest.
fn boxes_of_components(
    sets: &LevelSets,
    w: usize,
    h: usize,
    comps: &mut Vec<Component>,
    boxes: &mut Vec<BBox>,
) -> BBox {
    comps.clear();
    comps.extend(sets.components().copied());
    boxes.clear();
    if comps.is_empty() {
        boxes.extend(NO_CONTOUR);
        return BBox::ZERO;
    }
    comps.sort_unstable_by_key(|c| std::cmp::Reverse(c.first));
    let mut best = 0;
    for (i, c) in comps.iter().enumerate() {
        if c.area2 > comps[best].area2 {
            best = i;
        }
    }
    boxes.extend(comps.iter().map(|c| clipped_box(c.x0, c.y0, c.x1, c.y1, w, h)));
    boxes[best]
}

/// The boxes of a level with holes resolved by [`LevelSets`] into `boxes` (outer
/// borders, then hole borders); returns the largest: the outer border of largest area
/// that is not inside a hole, the last discovered of equals (OpenCV lists siblings in
/// reverse order of discovery).
fn boxes_of_resolved(sets: &LevelSets, w: usize, h: usize, boxes: &mut Vec<BBox>) -> BBox {
    boxes.clear();
    boxes.extend(sets.components().map(|c| clipped_box(c.x0, c.y0, c.x1, c.y1, w, h)));
    boxes.extend(sets.hole_borders().iter().map(|&[x0, y0, x1, y1]| clipped_box(x0, y0, x1, y1, w, h)));
    let c =
        sets.outer_components().iter().max_by_key(|c| (c.area2, c.first)).expect("a set with holes has a component");
    clipped_box(c.x0, c.y0, c.x1, c.y1, w, h)
}

/// `cv2.boundingRect` of a border with inclusive extent as (x, y, x + w, y + h), the far
/// corner clipped to the last pixel.
fn clipped_box(x_min: i32, y_min: i32, x_max: i32, y_max: i32, w: usize, h: usize) -> BBox {
    BBox { x0: x_min, y0: y_min, x1: (x_max + 1).min(w as i32 - 1), y1: (y_max + 1).min(h as i32 - 1) }
}

/// One tracing per threshold, literally as the official loop does; the reference the
/// grouped sweep is tested against.
pub fn boxes_at_thresholds_reference(map: &[f64], w: usize, h: usize, thresholds: &[f64]) -> Vec<ThresholdBoxes> {
    let q = quantize(map);
    let max_q = q.iter().copied().max().unwrap_or(0);
    let (mut tracer, mut all) = (Tracer::default(), Vec::new());
    thresholds
        .iter()
        .map(|&t| {
            let c = cut(t, max_q);
            let largest = boxes_of(&tracer.find(&q, w, h, |v| v as i64 > c), w, h, &mut all);
            ThresholdBoxes { largest, all: all.clone() }
        })
        .collect()
}

/// Boxes of traced contours ([`clipped_box`]) into `boxes`; returns the largest: the
/// first contour of maximal area in OpenCV's order (Python's `max`).
fn boxes_of(contours: &[Contour], w: usize, h: usize, boxes: &mut Vec<BBox>) -> BBox {
    boxes.clear();
    if contours.is_empty() {
        boxes.extend(NO_CONTOUR);
        return BBox::ZERO;
    }
    let mut best = 0;
    for (i, c) in contours.iter().enumerate() {
        if c.area2 > contours[best].area2 {
            best = i;
        }
    }
    boxes.extend(contours.iter().map(|c| clipped_box(c.x_min, c.y_min, c.x_max, c.y_max, w, h)));
    boxes[best]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[&str]) -> (Vec<f64>, usize, usize) {
        // Digits 0-9 as levels of a map whose maximum is 1.
        let h = rows.len();
        let w = rows[0].len();
        let m = rows.iter().flat_map(|r| r.bytes().map(|b| (b - b'0') as f64 / 9.0)).collect();
        (m, w, h)
    }

    #[test]
    fn quantization_truncates() {
        assert_eq!(quantize(&[0.0, 1.0, 0.5, 0.999, 1.0 / 255.0 - 1e-7, 1.0 / 255.0]), vec![0, 255, 127, 254, 0, 1]);
        // f64 product: 0.7f32 widened is 0.69999998..., 178.4999 -> 178; a value 1e-12
        // below 1 is level 254, where float32 would have rounded it up to 1.
        assert_eq!(quantize(&[0.7f32 as f64, 1.0 - 1e-12]), vec![178, 254]);
    }

    #[test]
    fn single_pixel() {
        let (m, w, h) = map(&["000", "090", "000"]);
        let b = boxes_at_thresholds(&m, w, h, &[0.0, 0.5]);
        // (x, y, x+1, y+1): a lone pixel's box spans two pixels.
        assert_eq!(b[0].largest, BBox::new(1, 1, 2, 2));
        assert_eq!(b[0].all, vec![BBox::new(1, 1, 2, 2)]);
        assert_eq!(b[1], b[0]);
    }

    #[test]
    fn all_zero_map_gives_zero_box() {
        let (m, w, h) = map(&["000", "000"]);
        let b = boxes_at_thresholds(&m, w, h, &[0.0]);
        assert_eq!(b[0], ThresholdBoxes { largest: BBox::ZERO, all: vec![BBox::ZERO] });
    }

    #[test]
    fn two_blobs_largest_by_polygon_area() {
        // Left blob 2x3 (area 2), right blob 1x4 line (area 0, more pixels would not matter).
        let (m, w, h) = map(&["990009", "990009", "990009", "000009"]);
        let b = boxes_at_thresholds(&m, w, h, &[0.5]);
        assert_eq!(b[0].largest, BBox::new(0, 0, 2, 3));
        // Right blob was discovered at the same row but later, so it is listed first.
        assert_eq!(b[0].all, vec![BBox::new(5, 0, 5, 3), BBox::new(0, 0, 2, 3)]);
    }

    #[test]
    fn ring_hole_border_in_all() {
        let (m, w, h) = map(&["0000000", "0999990", "0900090", "0900090", "0999990", "0000000"]);
        let b = boxes_at_thresholds(&m, w, h, &[0.0]);
        assert_eq!(b[0].largest, BBox::new(1, 1, 6, 5));
        assert_eq!(b[0].all, vec![BBox::new(1, 1, 6, 5), BBox::new(1, 1, 6, 5)]);
    }

    #[test]
    fn blob_touching_border_and_diagonals() {
        let (m, w, h) = map(&["9000", "0900", "0099"]);
        let b = boxes_at_thresholds(&m, w, h, &[0.0]);
        // One 8-connected region from (0,0) to (3,2); x1/y1 clipped to w-1/h-1.
        assert_eq!(b[0].all, vec![BBox::new(0, 0, 3, 2)]);
    }

    #[test]
    fn threshold_is_strict_on_int_cut() {
        // max 9/9 -> 255; levels 4/9 -> 113, 5/9 -> 141. t = 0.5: cut int(127.5) = 127.
        let (m, w, h) = map(&["459"]);
        let b = boxes_at_thresholds(&m, w, h, &[0.5, 0.55, 0.0]);
        assert_eq!(b[0].all, vec![BBox::new(1, 0, 2, 0)]);
        // 0.55 * 255 = 140.25 -> 140 < 141: still two pixels.
        assert_eq!(b[1].all, vec![BBox::new(1, 0, 2, 0)]);
        assert_eq!(b[2].all, vec![BBox::new(0, 0, 2, 0)]);
    }

    #[test]
    fn grouped_sweep_equals_reference() {
        let mut s = 12345u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 1000) as f64 / 999.0
        };
        for _ in 0..20 {
            let (w, h) = (13, 9);
            let mut m: Vec<f64> = (0..w * h).map(|_| rnd()).collect();
            super::super::normalize_minmax(&mut m);
            let t = super::super::cam_thresholds(0.01).unwrap();
            assert_eq!(boxes_at_thresholds(&m, w, h, &t), boxes_at_thresholds_reference(&m, w, h, &t));
        }
    }

    /// A textured map (`w` x `h`, levels as f64 in [0, 1]): a blob over a background of
    /// `kind` 0 random noise of few levels (plateaus, many holes, touching the borders),
    /// 1 coarse noise upsampled by `cell` (blocky plateaus and rings), 2 fine noise of
    /// every level, or 3 a checkerboard with dropouts (many lone pixels and diagonals).
    fn textured(seed: u64, kind: u8, w: usize, h: usize, cell: usize) -> Vec<f64> {
        let mut s = seed | 1;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let levels = 2 + rnd() % 6;
        let coarse: Vec<u64> = (0..w * h).map(|_| rnd()).collect();
        let (cx, cy, r) = (rnd() % w as u64, rnd() % h as u64, 1 + rnd() % 8);
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as u64, (i / w) as u64);
                let bg = match kind {
                    0 => (rnd() % levels) as f64 / levels as f64,
                    1 => (coarse[(y as usize / cell) * w + x as usize / cell] % levels) as f64 / levels as f64,
                    2 => (rnd() % 1000) as f64 / 999.0,
                    _ => ((x + y) % 2 * (rnd() % 5).min(1)) as f64,
                };
                let d2 = (x.abs_diff(cx).pow(2) + y.abs_diff(cy).pow(2)) as f64;
                0.5 * bg + (-d2 / (2.0 * (r * r) as f64)).exp()
            })
            .collect()
    }

    /// The unordered sweep's boxes per threshold: the largest, and all of them sorted.
    fn unordered_at_thresholds(map: &[f64], w: usize, h: usize, thresholds: &[f64]) -> Vec<(BBox, Vec<BBox>)> {
        let s = sweep_quantized_unordered(&quantize(map), w, h, thresholds, |largest, all| (largest, sorted(all)));
        s.index.iter().map(|&g| s.groups[g].clone()).collect()
    }

    fn sorted(boxes: &[BBox]) -> Vec<BBox> {
        let mut b = boxes.to_vec();
        b.sort_by_key(|b| (b.x0, b.y0, b.x1, b.y1));
        b
    }

    /// What the unordered sweep must give: the reference's largest box and its boxes sorted.
    fn reference_unordered(map: &[f64], w: usize, h: usize, thresholds: &[f64]) -> Vec<(BBox, Vec<BBox>)> {
        let r = boxes_at_thresholds_reference(map, w, h, thresholds);
        r.into_iter().map(|t| (t.largest, sorted(&t.all))).collect()
    }

    #[test]
    fn unordered_sweep_resolves_holes_islands_and_ties() {
        // A ring around an island (itself a ring around a lone pixel) next to a second
        // ring of equal outer area; a one-pixel-thin diamond ring (its hole border is its
        // outer border); a hole touching the set's last row is none.
        for rows in [
            &[
                "0000000000000000",
                "0999990999990000",
                "0900090900090000",
                "0909090900090000",
                "0900090900090000",
                "0999990999990000",
                "0000000000000000",
            ][..],
            &["090", "909", "090"],
            &["0000000", "0999990", "0955590", "0959590", "0955590", "0999990", "0900090"],
            &["99999", "90509", "95559", "99999"],
        ] {
            let (m, w, h) = map(rows);
            let t = super::super::cam_thresholds(0.01).unwrap();
            assert_eq!(unordered_at_thresholds(&m, w, h, &t), reference_unordered(&m, w, h, &t), "{rows:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// The grouped sweep (run-based tracing of levels with holes included) equals one
        /// tracing per threshold on textured and noisy maps, at 100 and 1000 thresholds.
        #[test]
        fn grouped_sweep_equals_reference_on_textured_maps(
            seed in proptest::prelude::any::<u64>(),
            kind in 0u8..4,
            w in 1usize..48,
            h in 1usize..48,
            cell in 1usize..6,
            fine in proptest::prelude::any::<bool>(),
        ) {
            let mut m = textured(seed, kind, w, h, cell);
            super::super::normalize_minmax(&mut m);
            let t = super::super::cam_thresholds(if fine { 0.001 } else { 0.01 }).unwrap();
            proptest::prop_assert_eq!(boxes_at_thresholds(&m, w, h, &t), boxes_at_thresholds_reference(&m, w, h, &t));
        }

        /// The unordered sweep (levels with holes resolved from their runs, not traced)
        /// gives the same largest box and the same boxes as one tracing per threshold.
        #[test]
        fn unordered_sweep_equals_reference_on_textured_maps(
            seed in proptest::prelude::any::<u64>(),
            kind in 0u8..4,
            w in 1usize..48,
            h in 1usize..48,
            cell in 1usize..6,
            fine in proptest::prelude::any::<bool>(),
        ) {
            let mut m = textured(seed, kind, w, h, cell);
            super::super::normalize_minmax(&mut m);
            let t = super::super::cam_thresholds(if fine { 0.001 } else { 0.01 }).unwrap();
            proptest::prop_assert_eq!(unordered_at_thresholds(&m, w, h, &t), reference_unordered(&m, w, h, &t));
        }
    }
}
