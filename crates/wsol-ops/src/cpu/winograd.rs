//! AVX-512 kernels of the Winograd convolution ([`crate::conv::winograd`]).
//!
//! The two transforms compiled for AVX-512 where the CPU has it (they are written lane by
//! lane for 16 lanes, which then become one register each).

use crate::conv::winograd as wg;
use crate::conv::Geometry;

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn input_transform(d: &[f32], out: &mut [f32], stride: usize) {
    wg::input_transform(d, out, stride)
}

/// [`wg::fill_patches`] on AVX-512 (2x2 or 4x4 windows at stride 2).
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn fill_patches(pg: &Geometry, x: &[f32], segs: &[Vec<wg::Segment>], panels: &mut [f32]) {
    use std::arch::x86_64::*;
    let (plane, kk, w) = (pg.h * pg.w, pg.kh * pg.kw, pg.w as isize);
    let k = pg.c_in * kk;
    // Valid columns of the 16 floats from column c: 0 <= c + lane < w.
    let cols = |c: isize| -> u16 {
        let lo = (-c).clamp(0, 16);
        let hi = (w - c).clamp(lo, 16);
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
    };
    let iota = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (s, segs) in segs.iter().enumerate() {
        // Per segment: its lanes, and for each pair of taps (j = 0, 1 from column
        // `col`; j = 2, 3 from `col + 2`) the two loads' column masks.
        /// A segment's lanes, permute indices and load masks.
        type Plan = (u16, __m512i, [(u16, u16); 2]);
        let plan: Vec<Plan> = segs
            .iter()
            .map(|seg| {
                let lanes = (((1u32 << seg.n) - 1) << seg.q0) as u16;
                // Lane q reads float 2 (q - q0) (+ 1 for odd taps) of the 32 loaded.
                let idx = _mm512_sub_epi32(iota, _mm512_set1_epi32(2 * seg.q0 as i32));
                let masks = [0, 2].map(|off| (cols(seg.col + off), cols(seg.col + off + 16)));
                (lanes, idx, masks)
            })
            .collect();
        let one = _mm512_set1_epi32(1);
        for c in 0..pg.c_in {
            let mut v = [_mm512_setzero_ps(); 16];
            for (seg, &(lanes, idx, masks)) in segs.iter().zip(&plan) {
                for i in 0..pg.kh {
                    let iy = seg.row + i as isize;
                    if !(0..pg.h as isize).contains(&iy) {
                        continue;
                    }
                    let row = x.as_ptr().add(seg.image + c * plane + iy as usize * pg.w);
                    for (pair, &(m_lo, m_hi)) in masks.iter().enumerate().take(pg.kw / 2) {
                        let at = seg.col + 2 * pair as isize;
                        let lo = _mm512_maskz_loadu_ps(m_lo, row.wrapping_offset(at));
                        let hi = _mm512_maskz_loadu_ps(m_hi, row.wrapping_offset(at + 16));
                        let tap = i * pg.kw + 2 * pair;
                        let even = _mm512_permutex2var_ps(lo, idx, hi);
                        let odd = _mm512_permutex2var_ps(lo, _mm512_add_epi32(idx, one), hi);
                        v[tap] = _mm512_mask_mov_ps(v[tap], lanes, even);
                        v[tap + 1] = _mm512_mask_mov_ps(v[tap + 1], lanes, odd);
                    }
                }
            }
            let out = panels.as_mut_ptr().add((s * k + c * kk) * 16);
            v.iter().take(kk).enumerate().for_each(|(t, v)| _mm512_storeu_ps(out.add(t * 16), *v));
        }
    }
}

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn kernel_transform(
    w: &[[f32; crate::conv::packed::NR]; 9],
) -> [[f32; crate::conv::packed::NR]; wg::POINTS] {
    wg::kernel_transform(w)
}

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_transform(d: &[f32], out: &mut [f32], stride: usize) {
    wg::tile_transform(d, out, stride)
}

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn weight_transform(p: &[f32], stride: usize) -> [[f32; crate::conv::packed::NR]; 9] {
    wg::weight_transform(p, stride)
}

/// 16 rows of 16 floats, transposed through registers.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_16(rows: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut m = [_mm512_setzero_ps(); 16];
    m.iter_mut().enumerate().for_each(|(i, v)| *v = _mm512_loadu_ps(rows[i * 16..].as_ptr()));
    crate::cpu::gemm::transpose_16x16(&mut m);
    m.iter().enumerate().for_each(|(i, v)| _mm512_storeu_ps(out[i * 16..].as_mut_ptr(), *v));
}

#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn write_tiles(
    m: &[f32],
    stride: usize,
    post: (f32, bool),
    corners: &wg::Corners,
    y: *mut f32,
    wo: usize,
) {
    wg::write_tiles(m, stride, post, corners, y, wo)
}
