//! AVX-512 and AVX2 kernels of the packed-GEMM convolution ([`crate::conv::packed`]):
//! microkernels, panel packing and the 16x16 transpose. Callers check the CPU features.

use std::arch::x86_64::*;

use crate::conv::packed::Tap;
use crate::conv::Geometry;

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel_16x16<const ADD: bool>(k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    let mut acc = [_mm512_setzero_ps(); 16];
    for p in 0..k {
        let bv = _mm512_loadu_ps(b.add(p * 16));
        let ap = a.add(p * 16);
        for (i, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(i)), bv, *acc);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let row = c.add(i * ldc);
        _mm512_storeu_ps(row, if ADD { _mm512_add_ps(_mm512_loadu_ps(row), *acc) } else { *acc });
    }
}

#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn kernel_6x16<const ADD: bool>(k: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
    let mut lo = [_mm256_setzero_ps(); 6];
    let mut hi = [_mm256_setzero_ps(); 6];
    for p in 0..k {
        let (b0, b1) = (_mm256_loadu_ps(b.add(p * 16)), _mm256_loadu_ps(b.add(p * 16 + 8)));
        let ap = a.add(p * 6);
        for i in 0..6 {
            let av = _mm256_broadcast_ss(&*ap.add(i));
            lo[i] = _mm256_fmadd_ps(av, b0, lo[i]);
            hi[i] = _mm256_fmadd_ps(av, b1, hi[i]);
        }
    }
    for i in 0..6 {
        let row = c.add(i * ldc);
        if ADD {
            _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), lo[i]));
            _mm256_storeu_ps(row.add(8), _mm256_add_ps(_mm256_loadu_ps(row.add(8)), hi[i]));
        } else {
            _mm256_storeu_ps(row, lo[i]);
            _mm256_storeu_ps(row.add(8), hi[i]);
        }
    }
}

/// [`crate::conv::packed::fill_panels`] with one masked load per run of each tap's lanes.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn fill_panels(g: &Geometry, x: &[f32], taps: &[Vec<Tap>], panels: &mut [f32]) {
    let plane = g.h * g.w;
    let k = g.k();
    for c in 0..g.c_in {
        let xc = &x[c * plane..];
        for tap in 0..g.kh * g.kw {
            let r = c * g.kh * g.kw + tap;
            for (s, taps) in taps.iter().enumerate() {
                let v = match &taps[tap] {
                    Tap::Runs(runs, n) => {
                        let mut v = _mm512_setzero_ps();
                        for &(mask, base) in &runs[..*n as usize] {
                            // Only the mask's lanes are read, and they lie inside the batch.
                            v = _mm512_mask_loadu_ps(v, mask, xc.as_ptr().wrapping_offset(base));
                        }
                        v
                    }
                    Tap::Lanes(lanes) => {
                        let mut v = [0f32; 16];
                        v.iter_mut().zip(lanes.iter()).for_each(|(v, lane)| *v = lane.map_or(0.0, |o| xc[o]));
                        _mm512_loadu_ps(v.as_ptr())
                    }
                };
                _mm512_storeu_ps(panels.as_mut_ptr().add((s * k + r) * 16), v);
            }
        }
    }
}

/// [`crate::conv::packed::pack_panels`] of one 16-row panel: `rows` rows of `k` from `a` (the rest
/// zeros), 16 columns at a time.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_panel_16(a: &[f32], rows: usize, k: usize, panel: &mut [f32]) {
    let mut m = [_mm512_setzero_ps(); 16];
    for c0 in (0..k).step_by(16) {
        let n = 16.min(k - c0);
        let mask = ((1u32 << n) - 1) as u16;
        for (i, v) in m.iter_mut().enumerate().take(rows) {
            *v = _mm512_maskz_loadu_ps(mask, a[i * k + c0..].as_ptr());
        }
        transpose_16x16(&mut m);
        for (j, v) in m.iter().enumerate().take(n) {
            _mm512_storeu_ps(panel[(c0 + j) * 16..].as_mut_ptr(), *v);
        }
        // The transpose filled the zero rows; they must stay zero.
        m[rows..].fill(_mm512_setzero_ps());
    }
}

/// `m` (16 rows) transposed in place.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_16x16(m: &mut [__m512; 16]) {
    // Pairs of rows interleaved, then pairs of pairs: each 128-bit lane of u[4g + j]
    // holds one column (4 x lane + j) of rows 4g..4g + 4.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let r = &m[4 * g..4 * g + 4];
        let (t0, t1) = (_mm512_unpacklo_ps(r[0], r[1]), _mm512_unpackhi_ps(r[0], r[1]));
        let (t2, t3) = (_mm512_unpacklo_ps(r[2], r[3]), _mm512_unpackhi_ps(r[2], r[3]));
        let pd = |a: __m512, b: __m512, hi: bool| {
            let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
            _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(a, b) } else { _mm512_unpacklo_pd(a, b) })
        };
        u[4 * g] = pd(t0, t2, false);
        u[4 * g + 1] = pd(t0, t2, true);
        u[4 * g + 2] = pd(t1, t3, false);
        u[4 * g + 3] = pd(t1, t3, true);
    }
    // Then the 128-bit lanes gathered: column 4 x lane + j from u[j], u[4 + j], ...
    for j in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
        let v1 = _mm512_shuffle_f32x4::<0xdd>(u[j], u[4 + j]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
        let v3 = _mm512_shuffle_f32x4::<0xdd>(u[8 + j], u[12 + j]);
        m[j] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        m[8 + j] = _mm512_shuffle_f32x4::<0xdd>(v0, v2);
        m[4 + j] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        m[12 + j] = _mm512_shuffle_f32x4::<0xdd>(v1, v3);
    }
}

/// [`crate::conv::packed::fill_transposed`]: per output row, blocks of up to 16 positions, each
/// lane one masked load of its inputs (columns grouped by phase when strided, see
/// [`crate::conv::packed::Phases`]), then a 16x16 transpose into the panel's rows.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn fill_transposed(
    g: &Geometry,
    x: &[f32],
    cols: &[usize],
    lanes: &[(usize, isize, isize)],
    range: (usize, usize),
    wo: usize,
    panel: &mut [f32],
) {
    // The stride as a constant where it is 1 or 2: the bounds below divide by it, and a
    // division per lane cost as much as the transpose.
    match g.stride {
        1 => fill_transposed_strided::<1>(g, x, cols, lanes, range, wo, panel),
        2 => fill_transposed_strided::<2>(g, x, cols, lanes, range, wo, panel),
        _ => fill_transposed_strided::<0>(g, x, cols, lanes, range, wo, panel),
    }
}

/// [`fill_transposed`] for stride `S` (0: `g.stride`).
#[target_feature(enable = "avx512f")]
unsafe fn fill_transposed_strided<const S: isize>(
    g: &Geometry,
    x: &[f32],
    cols: &[usize],
    lanes: &[(usize, isize, isize)],
    (t0, tn): (usize, usize),
    wo: usize,
    panel: &mut [f32],
) {
    let plane = g.h * g.w;
    let (h, w, s) = (g.h as isize, g.w as isize, if S > 0 { S } else { g.stride as isize });
    let mut m = [_mm512_setzero_ps(); 16];
    let (mut t, end) = (t0, t0 + tn);
    while t < end {
        let (oy, ox0) = (t / wo, t % wo);
        let n = (wo - ox0).min(end - t).min(16);
        for (q, &(c, dy0, dx0)) in lanes.iter().enumerate() {
            let iy = oy as isize * s + dy0;
            let start = ox0 as isize * s + dx0;
            // Valid offsets o: o < n and 0 <= start + o * s < w.
            let ceil = |v: isize| (v.max(0) + s - 1) / s;
            let lo = ceil(-start).min(n as isize);
            let hi = ceil(w - start).clamp(lo, n as isize);
            m[q] = if (0..h).contains(&iy) && hi > lo {
                let mask = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16;
                let row = x.as_ptr().add(c * plane + iy as usize * g.w);
                // Lanes lo..hi read consecutive floats from input column start + lo * s.
                let first = if s == 1 { start + lo } else { cols[(start + lo * s) as usize] as isize };
                _mm512_maskz_loadu_ps(mask, row.wrapping_offset(first - lo))
            } else {
                _mm512_setzero_ps()
            };
        }
        m[lanes.len()..].fill(_mm512_setzero_ps());
        transpose_16x16(&mut m);
        for (o, v) in m.iter().take(n).enumerate() {
            _mm512_storeu_ps(panel.as_mut_ptr().add((t - t0 + o) * 16), *v);
        }
        t += n;
    }
}
