//! Elementary functions in f32 written to vectorize: branch-free, no tables, no libm
//! calls, so a loop over a slice compiles to SIMD (see [`widest!`]). libm's `expf` and
//! `erff` are scalar calls: in DeiT-S's CPU training step the GELU (erf, exp) and attention
//! softmax (exp) loops around them took ~20% of the time for ~1% of the arithmetic.
//!
//! Every step is an f32 `mul_add` (one rounding, the same bits with or without an FMA
//! unit), so the results do not depend on the ISA the loop was compiled for.

/// Runs `$body` (an expression over the named slices) compiled for the widest SIMD this
/// CPU has: AVX-512, AVX2 + FMA, or the baseline. The functions of this module are
/// `#[inline(always)]`, so a loop of them in the body vectorizes in each version.
macro_rules! widest {
    (|$($arg:ident: $ty:ty),*| $body:expr) => {{
        #[inline(always)]
        fn body($($arg: $ty),*) {
            $body
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512($($arg: $ty),*) {
            body($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2($($arg: $ty),*) {
            body($($arg),*)
        }
        move |$($arg: $ty),*| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked on the line above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (checked on the line above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    }};
}
pub(crate) use widest;

/// `e^x`, within 2 ulp of the exact value for -87.3 <= x <= 88.3 (the callers pass x <= 0);
/// smaller x give ~1.2e-38 rather than 0, larger ones saturate at ~2.4e38; NaN stays NaN.
/// Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, then Cephes' minimax polynomial
/// for `e^r`, then the exponent bits of `2^n`.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Comparisons, not f32::max/min, so NaN passes through.
    let x = if x < -87.336_54 { -87.336_54 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    // Adding 1.5 * 2^23 rounds x log2(e) to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let t = x.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    // ln 2 in two parts, the first (355 / 512) exact in a few bits, so n times it has no
    // rounding.
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let er = (p * r).mul_add(r, r) + 1.0;
    // 2^n from n's integer in t's low bits: (n + 127) << 23.
    let bits = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32).wrapping_add(127) << 23;
    er * f32::from_bits(bits as u32)
}

/// `erf(x)` and `e^{-x²}` (which it computes on the way; GELU's gradient needs it).
/// For |x| >= 1, Abramowitz & Stegun 7.1.26 (`1 - poly(t) e^{-x²}`, absolute error
/// <= 1.5e-7, the formula of PyTorch's vectorized CPU erf); below 1, where that
/// subtraction cancels, erf's Maclaurin series to x^23 (remainder < 1e-10). Both are
/// computed and one picked, so the loop stays branch-free.
#[inline(always)]
pub fn erf_and_gauss(x: f32) -> (f32, f32) {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let p = 1.061_405_4f32;
    let p = p.mul_add(t, -1.453_152);
    let p = p.mul_add(t, 1.421_413_8);
    let p = p.mul_add(t, -0.284_496_74);
    let p = p.mul_add(t, 0.254_829_6);
    let gauss = exp(-a * a);
    let tail = (-(p * t)).mul_add(gauss, 1.0);
    // 2/sqrt(pi) (-1)^n / (n! (2n + 1)), n = 11 down to 0, in x².
    const SERIES: [f32; 12] = [
        -1.229_055_5e-9,
        1.480_719_3e-8,
        -1.636_584_5e-7,
        1.646_211_4e-6,
        -1.492_565e-5,
        1.205_533_3e-4,
        -8.548_327e-4,
        5.223_977_6e-3,
        -2.686_617e-2,
        0.112_837_92,
        -0.376_126_4,
        std::f32::consts::FRAC_2_SQRT_PI,
    ];
    let x2 = a * a;
    let series = SERIES[1..].iter().fold(SERIES[0], |p, &c| p.mul_add(x2, c)) * a;
    let erf = if a < 1.0 { series } else { tail };
    (erf.copysign(x), gauss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i32).abs_diff(b.to_bits() as i32)
    }

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0;
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(f32::NEG_INFINITY) < 1.2e-38);
        assert!(exp(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_is_within_its_bound_and_odd() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -6.0 + 12.0 * i as f32 / 200_000.0;
            let (erf, gauss) = erf_and_gauss(x);
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            worst = worst.max((erf as f64 - want).abs());
            assert_eq!(erf, -erf_and_gauss(-x).0);
            // e^{-x²} of x² as f32 rounds it (at |x| = 6 that alone is ~17 ulp of the result).
            let a2 = x * x;
            assert!(ulps(gauss, (-(a2 as f64)).exp() as f32) <= 2 || gauss < 1.2e-38, "at {x}");
        }
        assert!(worst < 2e-7, "worst absolute error {worst}");
        assert!(erf_and_gauss(f32::NAN).0.is_nan());
        assert_eq!(erf_and_gauss(10.0).0, 1.0);
    }

    /// The vectorized versions of a loop give the bits of the scalar one.
    #[test]
    fn widest_gives_the_scalar_bits() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        let mut wide = vec![0f32; xs.len()];
        let run = widest!(|x: &[f32], out: &mut [f32]| {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = erf_and_gauss(v).0 + exp(v);
            }
        });
        run(&xs, &mut wide);
        for (&x, &w) in xs.iter().zip(&wide) {
            assert_eq!(w.to_bits(), (erf_and_gauss(x).0 + exp(x)).to_bits(), "at {x}");
        }
    }
}
