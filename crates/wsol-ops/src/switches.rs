//! The environment switches of the kernels, each read once, here. What actually ran is
//! [`crate::Kernels`], which every run records because these choices change the last bits
//! of the numbers.
//!
//! | variable | values | effect |
//! |---|---|---|
//! | `WSOL_CONV_KERNEL` | `gemm` | no packed-GEMM microkernel (the `gemm` crate's path) |
//! | | `avx2` | the AVX2 microkernel even where AVX-512 exists |
//! | | `direct` | no Winograd: every convolution on the direct (im2col-free GEMM) path |
//! | `WSOL_CANDLE_CONV` | `1` | candle's own convolution instead of ours (A/B runs) |
//! | `WSOL_CANDLE_BN` | `1` | candle_nn's batch norm instead of ours (A/B runs) |

use std::sync::OnceLock;

/// The switches as set when first read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Switches {
    /// `WSOL_CONV_KERNEL`, empty when unset.
    pub conv_kernel: String,
    pub candle_conv: bool,
    pub candle_bn: bool,
}

/// The switches of this process (read from the environment on first use).
pub fn get() -> &'static Switches {
    static SWITCHES: OnceLock<Switches> = OnceLock::new();
    SWITCHES.get_or_init(|| Switches {
        conv_kernel: std::env::var("WSOL_CONV_KERNEL").unwrap_or_default(),
        candle_conv: std::env::var_os("WSOL_CANDLE_CONV").is_some_and(|v| v == "1"),
        candle_bn: std::env::var_os("WSOL_CANDLE_BN").is_some_and(|v| v == "1"),
    })
}
