//! AVX-512 kernel of the max pool ([`crate::pool`]).

/// [`crate::pool`]'s `stem_row_argmax`'s kernel: `first_max[q]` (output 1 + q) over rows `r0..r0 + 3`,
/// columns `2 (1 + q) - 1 ..= 2 (1 + q) + 1`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn stem_row_argmax_avx512(x: &[f32], w: usize, r0: usize, first_max: &mut [u32]) {
    use std::arch::x86_64::*;
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let (evens, odds) =
        (_mm512_add_epi32(lane, lane), _mm512_add_epi32(_mm512_add_epi32(lane, lane), _mm512_set1_epi32(1)));
    for (c, chunk) in first_max.chunks_exact_mut(16).enumerate() {
        // Input column of tap j for lane q: 2 (1 + 16 c + q) - 1 + j = base + 2 q + j.
        let base = 32 * c + 1;
        let (mut m, mut at) = (_mm512_setzero_ps(), _mm512_setzero_si512());
        for i in 0..3 {
            let row = (r0 + i) * w + base;
            let p = x.as_ptr().add(row);
            let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let (c2, d2) = (_mm512_loadu_ps(p.add(2)), _mm512_loadu_ps(p.add(18)));
            let taps = [
                _mm512_permutex2var_ps(a, evens, b),
                _mm512_permutex2var_ps(a, odds, b),
                _mm512_permutex2var_ps(c2, evens, d2),
            ];
            for (j, v) in taps.into_iter().enumerate() {
                let index = _mm512_add_epi32(_mm512_set1_epi32((row + j) as i32), evens);
                if i == 0 && j == 0 {
                    (m, at) = (v, index);
                    continue;
                }
                // Take v where v > m, or v is NaN and m is not (keep_first_max's rule).
                let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m);
                let nan_v = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                let nan_m = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(m, m);
                let take = gt | (nan_v & !nan_m);
                (m, at) = (_mm512_mask_blend_ps(take, m, v), _mm512_mask_blend_epi32(take, at, index));
            }
        }
        _mm512_storeu_si512(chunk.as_mut_ptr().cast(), at);
    }
}
