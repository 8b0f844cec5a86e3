//! The environment switches of the kernels, each read once, here, and the record of what
//! actually ran ([`Kernels`]), which every run writes into `train.log` and `metrics.json`
//! because these choices change the last bits of the numbers.
//!
//! | variable | values | effect |
//! |---|---|---|
//! | `WSOL_CONV_KERNEL` | `gemm` | no packed-GEMM microkernel (the `gemm` crate's path) |
//! | | `avx2` | the AVX2 microkernel even where AVX-512 exists |
//! | | `direct` | no Winograd: every convolution on the direct (im2col-free GEMM) path |
//! | `WSOL_CANDLE_CONV` | `1` | candle's own convolution instead of ours (A/B runs) |
//! | `WSOL_CANDLE_BN` | `1` | candle_nn's batch norm instead of ours (A/B runs) |

use std::sync::OnceLock;

use serde::Serialize;

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

/// What the kernels of this process run on the CPU: the provenance a run records.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Kernels {
    /// The packed-GEMM microkernel (`avx512`, `avx2`), or `none` (the `gemm` crate's path).
    pub conv_microkernel: String,
    /// Whether 3x3 stride-1 convolutions run Winograd F(2x2, 3x3).
    pub winograd: bool,
    /// `wsol` (our ops) or `candle`.
    pub conv: String,
    /// `wsol` (our ops) or `candle_nn`.
    pub batch_norm: String,
    /// The SIMD features this CPU reports that the kernels can use.
    pub cpu_features: Vec<String>,
    /// The `WSOL_*` variables that were set, as `NAME=value`.
    pub env: Vec<String>,
}

impl Kernels {
    pub fn detect() -> Kernels {
        let s = get();
        let isa = crate::conv::microkernel();
        let mut env = Vec::new();
        if !s.conv_kernel.is_empty() {
            env.push(format!("WSOL_CONV_KERNEL={}", s.conv_kernel));
        }
        if s.candle_conv {
            env.push("WSOL_CANDLE_CONV=1".into());
        }
        if s.candle_bn {
            env.push("WSOL_CANDLE_BN=1".into());
        }
        Kernels {
            conv_microkernel: isa.unwrap_or("none").into(),
            winograd: !s.candle_conv && s.conv_kernel != "direct" && isa.is_some(),
            conv: if s.candle_conv { "candle" } else { "wsol" }.into(),
            batch_norm: if s.candle_bn { "candle_nn" } else { "wsol" }.into(),
            cpu_features: crate::cpu::features(),
            env,
        }
    }

    /// One line for `train.log`.
    pub fn summary(&self) -> String {
        format!(
            "conv {} (microkernel {}, winograd {}), batch norm {}, cpu [{}]{}",
            self.conv,
            self.conv_microkernel,
            if self.winograd { "on" } else { "off" },
            self.batch_norm,
            self.cpu_features.join(" "),
            if self.env.is_empty() { String::new() } else { format!(", {}", self.env.join(" ")) }
        )
    }
}
