//! The x86 intrinsics of the CPU kernels, one file per kernel family. Every function here
//! is `#[target_feature]`: callers dispatch on [`is_x86_feature_detected!`] at run time
//! (packed GEMM's `Isa::detect`) and say so in their SAFETY line.

#[cfg(target_arch = "x86_64")]
pub(crate) mod gemm;
#[cfg(target_arch = "x86_64")]
pub(crate) mod pool;
#[cfg(target_arch = "x86_64")]
pub(crate) mod winograd;

/// The SIMD features of this CPU that the kernels use (provenance: results differ in the
/// last bits between AVX-512 and AVX2 machines).
pub fn features() -> Vec<String> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
        ] {
            if on {
                out.push(name.to_string());
            }
        }
    }
    out
}
