//! From a class activation map to boxes, exactly as the official wsolevaluation
//! evaluator (Choe et al. 2020) does it: bicubic resize, min-max normalization, an 8-bit
//! threshold sweep, contours, bounding rectangles, and IoU with inclusive pixels.
//! Where its conventions look odd we follow them anyway: published numbers depend on them.

use anyhow::{bail, Result};

mod contours;
mod holes;
pub mod level_sets;
mod resize;
mod sweep;

pub use contours::{Contour, Tracer};
pub use resize::resize_bicubic;
pub use sweep::{
    boxes_at_thresholds, boxes_at_thresholds_reference, quantize, sweep, sweep_quantized, sweep_quantized_unordered,
    sweep_quantized_with, Sweep, ThresholdBoxes,
};

/// A box in pixel coordinates, corners inclusive (x0y0x1y1, as the metadata stores it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BBox {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl BBox {
    pub const ZERO: BBox = BBox { x0: 0, y0: 0, x1: 0, y1: 0 };

    pub fn new(x0: i32, y0: i32, x1: i32, y1: i32) -> Self {
        BBox { x0, y0, x1, y1 }
    }
}

/// IoU counting pixels inclusively (+1 per side), as `calculate_multiple_iou`: a box
/// with x1 == x0 is one pixel wide. A non-positive union (inverted boxes) gives 0.
pub fn iou(a: &BBox, b: &BBox) -> f64 {
    let (a, b) = ([a.x0, a.y0, a.x1, a.y1].map(i64::from), [b.x0, b.y0, b.x1, b.y1].map(i64::from));
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1).max(0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1).max(0);
    let inter = iw * ih;
    let area = |c: &[i64; 4]| (c[2] - c[0] + 1) * (c[3] - c[1] + 1);
    let union = area(&a) + area(&b) - inter;
    if union <= 0 {
        return 0.0;
    }
    inter as f64 / union as f64
}

/// GT box from the original image size to the evaluation grid, truncating toward zero
/// like the official `resize_bbox` (`int(x * new_w / orig_w)`, in that order).
pub fn rescale_box(b: [f64; 4], orig_wh: (f64, f64), new_wh: (f64, f64)) -> BBox {
    let (ow, oh) = orig_wh;
    let (nw, nh) = new_wh;
    BBox {
        x0: (b[0] * nw / ow) as i32,
        y0: (b[1] * nh / oh) as i32,
        x1: (b[2] * nw / ow) as i32,
        y1: (b[3] * nh / oh) as i32,
    }
}

/// [`rescale_box`] for all GT boxes of an image of `orig_wh` pixels onto a square
/// `size` x `size` evaluation grid.
pub fn rescale_boxes(boxes: &[[f64; 4]], orig_wh: (u32, u32), size: usize) -> Vec<BBox> {
    let (w, h) = (orig_wh.0 as f64, orig_wh.1 as f64);
    boxes.iter().map(|b| rescale_box(*b, (w, h), (size as f64, size as f64))).collect()
}

/// A box of the `size` x `size` evaluation grid in the original image's pixels, for
/// people to draw: the inverse of [`rescale_box`] (`x * orig_w / size`), rounded to the
/// nearest pixel and kept inside the image. The official evaluator has no such step (it
/// scores on the grid), so nothing scored depends on this rounding.
pub fn box_to_original(b: BBox, orig_wh: (u32, u32), size: usize) -> BBox {
    let scale = |v: i32, orig: u32| {
        let last = orig.saturating_sub(1) as f64;
        (v as f64 * orig as f64 / size as f64).round().clamp(0.0, last) as i32
    };
    let (ow, oh) = orig_wh;
    BBox { x0: scale(b.x0, ow), y0: scale(b.y0, oh), x1: scale(b.x1, ow), y1: scale(b.y1, oh) }
}

/// The finest `cam_curve_interval` taken: 10,000 thresholds, ten times the official
/// finest (0.001). Maps are swept on 256 levels, so finer steps only repeat thresholds,
/// and a tiny interval would otherwise ask for more thresholds than memory holds.
pub const MIN_CAM_CURVE_INTERVAL: f64 = 1e-4;

/// `list(np.arange(0, 1, interval))`: ceil(1 / interval) values `i * interval`.
/// Built by multiplication, not accumulation, so 0.07 is 7 * 0.01 as numpy has it.
/// Fails unless `interval` lies in [`MIN_CAM_CURVE_INTERVAL`], 1).
pub fn cam_thresholds(interval: f64) -> Result<Vec<f64>> {
    if !(MIN_CAM_CURVE_INTERVAL..1.0).contains(&interval) {
        bail!("cam_curve_interval {interval:?}: expected a value in [{MIN_CAM_CURVE_INTERVAL}, 1)");
    }
    let n = (1.0 / interval).ceil() as usize;
    Ok((0..n).map(|i| i as f64 * interval).collect())
}

/// The official `normalize_scoremap` (on float64): a map with any NaN, or a constant map,
/// becomes all zeros; otherwise `map -= min; map /= map.max()`.
pub fn normalize_minmax(map: &mut [f64]) {
    // The shifted map's max is `max - min` exactly, since rounded subtraction is monotonic.
    let Some((min, max)) = min_max(map) else {
        map.fill(0.0);
        return;
    };
    let range = max - min;
    map.iter_mut().for_each(|v| *v = (*v - min) / range);
}

/// Raw CAM (`w` x `h`) to the evaluation grid: bicubic resize to `size` x `size`, then
/// min-max normalization (resize first, as the official `inference.py`), in float64 as
/// there: a float32 pipeline turns a constant map's resampling noise into a full-range
/// map, and moves pixels tied at the maximum to level 254.
pub fn prepare_map<T: Copy + Into<f64>>(raw: &[T], w: usize, h: usize, size: usize) -> Vec<f64> {
    let raw: Vec<f64> = raw.iter().map(|&v| v.into()).collect();
    let mut m = if (w, h) == (size, size) { raw } else { resize_bicubic(&raw, w, h, size, size) };
    normalize_minmax(&mut m);
    m
}

/// `quantize(&prepare_map(raw, w, h, size))`, for callers that only need boxes: a map
/// already at the evaluation size goes from its raw values to levels in one pass, with
/// no float64 copy of the map.
pub fn prepare_quantized<T: Copy + Into<f64> + PartialOrd + 'static>(
    raw: &[T],
    w: usize,
    h: usize,
    size: usize,
) -> Vec<u8> {
    let mut q = Vec::new();
    prepare_quantized_into(raw, w, h, size, &mut q);
    q
}

/// [`prepare_quantized`] into `q` (resized to the grid), so that a caller scoring many
/// maps keeps one buffer instead of allocating (and zeroing) one per map.
pub fn prepare_quantized_into<T: Copy + Into<f64> + PartialOrd + 'static>(
    raw: &[T],
    w: usize,
    h: usize,
    size: usize,
    q: &mut Vec<u8>,
) {
    if (w, h) != (size, size) {
        *q = quantize(&prepare_map(raw, w, h, size));
        return;
    }
    // Every level is written below; a buffer of the right length is not cleared first.
    q.resize(raw.len(), 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512F and BW, checked just above.
        return unsafe { prepare_quantized_avx512(raw, q) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { prepare_quantized_avx2(raw, q) };
    }
    prepare_quantized_same_size(raw, q)
}

/// [`prepare_quantized_same_size`] compiled for AVX2: the same IEEE operations, so the
/// same levels, on four lanes per instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn prepare_quantized_avx2<T: Copy + Into<f64> + PartialOrd + 'static>(raw: &[T], q: &mut [u8]) {
    prepare_quantized_same_size(raw, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn prepare_quantized_avx512<T: Copy + Into<f64> + PartialOrd + 'static>(raw: &[T], q: &mut [u8]) {
    prepare_quantized_same_size(raw, q)
}

/// Min-max normalization and quantization of a map already at the evaluation size,
/// into `q` (as long as `raw`; every level is written).
#[inline(always)]
fn prepare_quantized_same_size<T: Copy + Into<f64> + PartialOrd + 'static>(raw: &[T], q: &mut [u8]) {
    let Some((min, max)) = min_max_fast(raw) else {
        q.fill(0);
        return;
    };
    let range = max - min;
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: `T` is `f32`, checked just above.
        let raw32 = unsafe { std::slice::from_raw_parts(raw.as_ptr() as *const f32, raw.len()) };
        if quantize_f32(raw32, min, range, q) {
            return;
        }
    }
    // The official levels are `((v - min) / range * 255) as u8`, two roundings and a
    // division per pixel. `(v - min) * (255 / range)` is within 4 ulps of that product
    // (under 1.2e-13 below 256), so it truncates to the same level unless it lies that
    // close to an integer; blocks holding such a value (the minimum and maximum among
    // them) are redone the official way. A division per pixel was half the cost here.
    let scale = 255.0 / range;
    // An infinite range (scale 0) or a tiny one (scale infinite): the official way.
    if !scale.is_finite() || scale == 0.0 {
        quantize_range(raw, min, range, q);
        return;
    }
    const NEAR: f64 = 1e-9;
    for (block, out) in raw.chunks(16).zip(q.chunks_mut(16)) {
        let mut near = false;
        for (&v, o) in block.iter().zip(out.iter_mut()) {
            // In [0, 255 + 1e-13]: `v - min` lies in [0, range] (rounding is monotonic).
            let t = (v.into() - min) * scale;
            // SAFETY: `t` is finite and within [0, 256).
            let level = unsafe { t.to_int_unchecked::<i32>() };
            let frac = t - level as f64;
            // Level 0's lower edge needs no check: both values are at least 0. (A map's
            // background, most of a CAM, lies just above its minimum.)
            near |= ((frac < NEAR) & (level > 0)) | (frac > 1.0 - NEAR);
            *o = level as u8;
        }
        if near {
            quantize_range(block, min, range, out);
        }
    }
}

/// The levels of a float32 map from float32 arithmetic, eight lanes per instruction
/// (twice float64's): `(v - min) * (255 / range)` in float32 is within 4.6e-5 of the exact
/// level value (three roundings of 2^-24 at values under 256), so it truncates to the
/// official level unless it lies within 1e-4 of an integer from 1 up; blocks holding
/// such a value are redone the official way. `false` (and `q` untouched) where the
/// bound does not hold: ranges so tiny or so large that float32 underflows or overflows.
#[inline(always)]
fn quantize_f32(raw: &[f32], min: f64, range: f64, q: &mut [u8]) -> bool {
    if !(1e-30..1e38).contains(&range) {
        return false;
    }
    let (min32, scale) = (min as f32, (255.0 / range) as f32);
    const NEAR: f32 = 1e-4;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512F and BW, checked just above.
        done =
            unsafe { quantize_f32_avx512(raw, min32, scale, q, |block, out| quantize_range(block, min, range, out)) };
    }
    for (block, out) in raw[done..].chunks(16).zip(q[done..].chunks_mut(16)) {
        let mut near = false;
        for (&v, o) in block.iter().zip(out.iter_mut()) {
            let t = (v - min32) * scale;
            // SAFETY: `t` is finite and within [0, 256): `v - min` lies in [0, range].
            let level = unsafe { t.to_int_unchecked::<i32>() };
            let frac = t - level as f32;
            near |= ((frac < NEAR) & (level > 0)) | (frac > 1.0 - NEAR);
            *o = level as u8;
        }
        if near {
            quantize_range(block, min, range, out);
        }
    }
    true
}

/// The loop of [`quantize_f32`] over whole blocks of 16, a block per instruction: the
/// same float32 operations (no fused multiply-add), so the same levels, and the same
/// blocks redone by `redo`. Returns how many values it quantized.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_f32_avx512(
    raw: &[f32],
    min32: f32,
    scale: f32,
    q: &mut [u8],
    mut redo: impl FnMut(&[f32], &mut [u8]),
) -> usize {
    use std::arch::x86_64::*;
    let n = raw.len() / 16 * 16;
    let (min, scale) = (_mm512_set1_ps(min32), _mm512_set1_ps(scale));
    let (near, far, zero) = (_mm512_set1_ps(1e-4), _mm512_set1_ps(1.0 - 1e-4), _mm512_setzero_si512());
    for at in (0..n).step_by(16) {
        // SAFETY: `at + 16 <= n <= raw.len() == q.len()`.
        let v = unsafe { _mm512_loadu_ps(raw.as_ptr().add(at)) };
        let t = _mm512_mul_ps(_mm512_sub_ps(v, min), scale);
        let level = _mm512_cvttps_epi32(t);
        let frac = _mm512_sub_ps(t, _mm512_cvtepi32_ps(level));
        let low = _mm512_mask_cmp_ps_mask(_mm512_cmpgt_epi32_mask(level, zero), frac, near, _CMP_LT_OQ);
        let high = _mm512_cmp_ps_mask(frac, far, _CMP_GT_OQ);
        // SAFETY: as above; 16 bytes from `at`.
        unsafe { _mm_storeu_si128(q.as_mut_ptr().add(at) as *mut __m128i, _mm512_cvtepi32_epi8(level)) };
        if low | high != 0 {
            redo(&raw[at..at + 16], &mut q[at..at + 16]);
        }
    }
    n
}

/// [`min_max`], on 64 float32 lanes where the CPU has AVX-512 (the same minimum and
/// maximum: comparisons only regroup).
#[inline(always)]
fn min_max_fast<T: Copy + Into<f64> + PartialOrd + 'static>(map: &[T]) -> Option<(f64, f64)> {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && map.len() >= 64
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: `T` is `f32`, checked just above.
        let map32 = unsafe { std::slice::from_raw_parts(map.as_ptr() as *const f32, map.len()) };
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { min_max_f32_avx512(map32) };
    }
    min_max(map)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn min_max_f32_avx512(map: &[f32]) -> Option<(f64, f64)> {
    use std::arch::x86_64::*;
    assert!(map.len() >= 64);
    let n = map.len() / 64 * 64;
    let p = map.as_ptr();
    // SAFETY: `map` holds at least 64 values (checked above).
    let first = unsafe { _mm512_loadu_ps(p) };
    let (mut lo, mut hi, mut nan) = ([first; 4], [first; 4], 0u16);
    for at in (0..n).step_by(64) {
        for k in 0..4 {
            // SAFETY: the 16 values from `at + 16k` end at or before `n <= map.len()`.
            let v = unsafe { _mm512_loadu_ps(p.add(at + 16 * k)) };
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            lo[k] = _mm512_min_ps(lo[k], v);
            hi[k] = _mm512_max_ps(hi[k], v);
        }
    }
    if nan != 0 {
        return None;
    }
    let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
    let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
    let (mut lo, mut hi) = (_mm512_reduce_min_ps(lo) as f64, _mm512_reduce_max_ps(hi) as f64);
    for &v in &map[n..] {
        if v.is_nan() {
            return None;
        }
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    (lo != hi).then_some((lo, hi))
}

/// Minimum and maximum; `None` for the maps normalization zeroes (empty, constant, or
/// holding a NaN). Compared in the map's own type on eight independent lanes, so it
/// vectorizes: widening to f64 keeps the order, and lanes only regroup comparisons.
#[inline(always)]
fn min_max<T: Copy + Into<f64> + PartialOrd>(map: &[T]) -> Option<(f64, f64)> {
    let &first = map.first()?;
    let (mut nan, mut min, mut max) = ([false; 8], [first; 8], [first; 8]);
    let mut blocks = map.chunks_exact(8);
    for block in &mut blocks {
        for i in 0..8 {
            let v = block[i];
            #[allow(clippy::eq_op)] // NaN is the one value unequal to itself.
            let is_nan = v != v;
            nan[i] |= is_nan;
            min[i] = if v < min[i] { v } else { min[i] };
            max[i] = if v > max[i] { v } else { max[i] };
        }
    }
    let (mut any_nan, mut lo, mut hi) = (nan.contains(&true), first.into(), first.into());
    for v in min.into_iter().chain(max).chain(blocks.remainder().iter().copied()) {
        let v: f64 = v.into();
        any_nan |= v.is_nan();
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
    }
    (!any_nan && lo != hi).then_some((lo, hi))
}

/// `((v - min) / range * 255) as u8` per value, as `normalize_minmax` then `quantize`.
#[inline(always)]
fn quantize_range<T: Copy + Into<f64>>(raw: &[T], min: f64, range: f64, out: &mut [u8]) {
    for (&v, o) in raw.iter().zip(out) {
        let t = (v.into() - min) / range * 255.0;
        // `t as u8` spelled so that it vectorizes: NaN and below 0 give 0, above 255 255.
        let t = if t >= 0.0 { t.min(255.0) } else { 0.0 };
        // SAFETY: `t` is finite and within [0, 255].
        *o = unsafe { t.to_int_unchecked::<i32>() as u8 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_hand_cases() {
        let a = BBox::new(0, 0, 9, 9);
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &BBox::new(20, 20, 30, 30)), 0.0);
        // Touching edges share a pixel column: 1x10 / (100 + 100 - 10).
        assert_eq!(iou(&a, &BBox::new(9, 0, 18, 9)), 10.0 / 190.0);
        // Adjacent without overlap.
        assert_eq!(iou(&a, &BBox::new(10, 0, 19, 9)), 0.0);
        // Half overlap: 50 / 150.
        assert_eq!(iou(&a, &BBox::new(5, 0, 14, 9)), 50.0 / 150.0);
        // A (0,0,0,0) box is one pixel.
        assert_eq!(iou(&BBox::ZERO, &BBox::ZERO), 1.0);
        assert_eq!(iou(&BBox::ZERO, &BBox::new(0, 0, 1, 1)), 0.25);
        // Degenerate: two inverted boxes, union <= 0.
        let inv = BBox::new(5, 5, 2, 2);
        assert_eq!(iou(&inv, &inv), 0.0);
    }

    #[test]
    fn rescale_truncates() {
        // 10 * 224 / 500 = 4.48 -> 4; 499 * 224 / 500 = 223.552 -> 223.
        let b = rescale_box([10.0, 20.0, 499.0, 374.0], (500.0, 375.0), (224.0, 224.0));
        assert_eq!(b, BBox::new(4, 11, 223, 223));
        // Multiply first, then divide: 1 * 3 / 3 is exactly 1.
        assert_eq!(rescale_box([1.0, 1.0, 2.0, 2.0], (3.0, 3.0), (3.0, 3.0)), BBox::new(1, 1, 2, 2));
    }

    #[test]
    fn box_to_original_inverts_rescaling() {
        // 500x375 on 224: x * 500 / 224, y * 375 / 224, rounded; 223 is the last pixel.
        assert_eq!(box_to_original(BBox::new(4, 11, 223, 223), (500, 375), 224), BBox::new(9, 18, 498, 373));
        // Same size: unchanged.
        assert_eq!(box_to_original(BBox::new(0, 3, 7, 9), (10, 10), 10), BBox::new(0, 3, 7, 9));
        // Up-scaled grid (a 20 px image on 40): halves, never past the last pixel.
        assert_eq!(box_to_original(BBox::new(1, 0, 39, 39), (20, 20), 40), BBox::new(1, 0, 19, 19));
        // A GT box survives the round trip within a grid pixel.
        let gt = [37.0, 120.0, 410.0, 300.0];
        let back = box_to_original(rescale_box(gt, (500.0, 375.0), (224.0, 224.0)), (500, 375), 224);
        for (a, b) in [back.x0, back.y0, back.x1, back.y1].into_iter().zip(gt) {
            assert!((a as f64 - b).abs() <= 500.0 / 224.0, "{back:?} vs {gt:?}");
        }
    }

    #[test]
    fn thresholds_match_arange() {
        let t = cam_thresholds(0.01).unwrap();
        assert_eq!(t.len(), 100);
        assert_eq!(t[7], 7.0 * 0.01);
        assert_eq!(t[99], 99.0 * 0.01);
        assert_eq!(cam_thresholds(0.001).unwrap().len(), 1000);
        assert_eq!(cam_thresholds(MIN_CAM_CURVE_INTERVAL).unwrap().len(), 10_000);
        let t = cam_thresholds(0.05).unwrap();
        assert_eq!(t.len(), 20);
        assert_eq!(t[0], 0.0);
        assert_eq!(t[19], 19.0 * 0.05);
    }

    #[test]
    fn an_interval_out_of_range_is_an_error() {
        for bad in [0.0, -0.01, 1.0, 2.0, 1e-300, f64::NAN, f64::INFINITY] {
            let err = cam_thresholds(bad).unwrap_err().to_string();
            assert!(err.contains("cam_curve_interval") && err.contains("expected a value in [0.0001, 1)"), "{err}");
        }
        assert!(cam_thresholds(1e-300).unwrap_err().to_string().starts_with("cam_curve_interval 1e-300:"));
    }

    #[test]
    fn prepare_quantized_equals_prepare_then_quantize() {
        let mut s = 11u64;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..300 {
            let (w, h) = (1 + case % 17, 1 + case % 13);
            let raw: Vec<f64> = (0..w * h)
                .map(|_| match case % 4 {
                    // Values on the level grid: products land on integers exactly.
                    0 => (rnd() * 10.0).floor() / 9.0,
                    1 => (rnd() * 256.0).floor(),
                    2 => (rnd() - 0.5) * 1e-3,
                    _ => rnd() * 1e6,
                })
                .collect();
            for size in [w, 9] {
                let want = quantize(&prepare_map(&raw, w, h, size));
                assert_eq!(prepare_quantized(&raw, w, h, size), want, "case {case}");
                if size == w && h == w {
                    let raw32: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
                    assert_eq!(prepare_quantized(&raw32, w, h, size), quantize(&prepare_map(&raw32, w, h, size)));
                }
            }
        }
        assert_eq!(prepare_quantized(&[1.0, f64::NAN, 2.0, 3.0], 2, 2, 2), vec![0; 4]);
        assert_eq!(prepare_quantized(&[3.0f32; 4], 2, 2, 2), vec![0; 4]);
        let inf = [0.0, f64::INFINITY, 1.0, 2.0];
        assert_eq!(prepare_quantized(&inf, 2, 2, 2), quantize(&prepare_map(&inf, 2, 2, 2)));
    }

    /// Values a few ulps either side of every level edge, where the multiply-by-scale
    /// fast path can truncate differently from the official division: all must come out
    /// as the division gives them.
    #[test]
    fn prepare_quantized_exact_at_level_edges() {
        let up = |v: f64, n: i64| f64::from_bits((v.to_bits() as i64 + n) as u64);
        for (min, max) in [(-0.37, 1.9), (0.0, 1.0), (3.0e-7, 0.002), (-1e4, 7.0), (0.1, 0.3)] {
            let range: f64 = max - min;
            let mut raw = vec![min, max];
            for k in 1..255 {
                let edge = min + range * (k as f64 / 255.0);
                raw.extend((-6..=6).map(|n| up(edge, n)).filter(|v| (min..=max).contains(v)));
            }
            let n = (raw.len() as f64).sqrt().floor() as usize;
            raw.truncate(n * n);
            let want = quantize(&prepare_map(&raw, n, n, n));
            assert_eq!(prepare_quantized(&raw, n, n, n), want, "{min}..{max}");
            let raw32: Vec<f32> = raw.iter().map(|&v| v as f32).collect();
            assert_eq!(prepare_quantized(&raw32, n, n, n), quantize(&prepare_map(&raw32, n, n, n)));
        }
    }

    /// float32 maps take levels from float32 arithmetic: values 1-6 float32 ulps either
    /// side of every level edge (and on it), for ranges from tiny to large, give the
    /// official levels.
    #[test]
    fn prepare_quantized_f32_exact_at_level_edges() {
        let up = |v: f32, n: i32| f32::from_bits((v.to_bits() as i32 + n) as u32);
        for (min, max) in [(-0.37f32, 1.9f32), (0.0, 1.0), (3.0e-7, 0.002), (-1e4, 7.0), (0.1, 0.3), (1e-20, 3e-20)] {
            let range = max as f64 - min as f64;
            let mut raw = vec![min, max];
            for k in 1..255 {
                let edge = (min as f64 + range * (k as f64 / 255.0)) as f32;
                raw.extend((-6..=6).map(|n| up(edge, n)).filter(|v| (min..=max).contains(v)));
            }
            let n = (raw.len() as f64).sqrt().floor() as usize;
            raw.truncate(n * n);
            assert_eq!(prepare_quantized(&raw, n, n, n), quantize(&prepare_map(&raw, n, n, n)), "{min}..{max}");
        }
    }

    /// A map of `kind` (see the match) from `seed`, in float32: the shapes of data where
    /// the float32 levels could part from the float64 ones.
    fn f32_map(seed: u64, kind: u8, n: usize, exp: i32) -> Vec<f32> {
        let mut s = seed | 1;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let (scale, offset) = (2f64.powi(exp), (rnd() - 0.5) * 2f64.powi(exp + 1));
        let c = (rnd() * n as f64, rnd() * n as f64, 1.0 + rnd() * n as f64);
        let mut m: Vec<f32> = (0..n * n)
            .map(|i| {
                let v = match kind {
                    // Uniform values.
                    0 => rnd(),
                    // On the level grid of [0, 1]: products land on integers.
                    1 => (rnd() * 256.0).floor() / 255.0,
                    // A smooth blob computed in float32, as a CAM is.
                    2 => {
                        let (x, y) = ((i % n) as f32 - c.0 as f32, (i / n) as f32 - c.1 as f32);
                        (-(x * x + y * y) / (2.0 * (c.2 * c.2) as f32)).exp() as f64
                    }
                    // Few distinct values: plateaus and ties everywhere.
                    _ => (rnd() * 4.0).floor(),
                };
                (v * scale + offset) as f32
            })
            .collect();
        // Ties at the maximum: copies of it at a few places.
        let max = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for _ in 0..(rnd() * 4.0) as usize {
            let i = ((rnd() * m.len() as f64) as usize).min(m.len() - 1);
            m[i] = max;
        }
        m
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// float32 maps quantized from float32 into a reused buffer give the levels of
        /// the float64 path (`quantize(prepare_map)`, the official one) on random maps of
        /// every kind and scale, constant maps and maps holding a NaN included; float64
        /// maps too, and maps of another size through the float64 resize.
        #[test]
        fn prepare_quantized_into_equals_the_float64_path(
            seed in proptest::prelude::any::<u64>(),
            kind in 0u8..4,
            n in 1usize..40,
            exp in -60i32..60,
            special in 0u8..6,
            garbage in 0usize..3000,
        ) {
            let mut raw32 = f32_map(seed, kind, n, exp);
            match special {
                0 => {
                    let first = raw32[0];
                    raw32.fill(first)
                }
                1 => raw32[(seed as usize) % (n * n)] = f32::NAN,
                _ => {}
            }
            let raw64: Vec<f64> = raw32.iter().map(|&v| v as f64).collect();
            let want = quantize(&prepare_map(&raw64, n, n, n));
            // A buffer of another length holding other levels: every level is written.
            let mut q = vec![0xAB; garbage];
            prepare_quantized_into(&raw32, n, n, n, &mut q);
            proptest::prop_assert_eq!(&q, &want);
            prepare_quantized_into(&raw64, n, n, n, &mut q);
            proptest::prop_assert_eq!(&q, &want);
            if special == 0 || special == 1 {
                proptest::prop_assert!(want.iter().all(|&l| l == 0));
            }
            let size = 1 + (seed as usize >> 7) % 9;
            if size != n {
                prepare_quantized_into(&raw32, n, n, size, &mut q);
                proptest::prop_assert_eq!(q.clone(), quantize(&prepare_map(&raw64, n, n, size)));
            }
        }
    }

    #[test]
    fn normalize_degenerate_maps_to_zero() {
        let mut m = vec![3.0f64; 5];
        normalize_minmax(&mut m);
        assert_eq!(m, vec![0.0; 5]);
        let mut m = vec![0.1, f64::NAN, 0.5];
        normalize_minmax(&mut m);
        assert_eq!(m, vec![0.0; 3]);
        let mut m = vec![2.0, 4.0, 3.0];
        normalize_minmax(&mut m);
        assert_eq!(m, vec![0.0, 1.0, 0.5]);
    }

    #[test]
    fn normalize_equals_two_step_official_form() {
        let mut s = 3u64;
        for _ in 0..200 {
            let raw: Vec<f64> = (0..50)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.3) * 1e3f64.powi((s % 7) as i32 - 3)
                })
                .collect();
            let mut ours = raw.clone();
            normalize_minmax(&mut ours);
            let min = raw.iter().copied().fold(f64::INFINITY, f64::min);
            let shifted: Vec<f64> = raw.iter().map(|v| v - min).collect();
            let max = shifted.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(ours, shifted.iter().map(|v| v / max).collect::<Vec<_>>());
        }
    }
}
