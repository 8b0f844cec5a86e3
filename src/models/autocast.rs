//! The casting rules of mixed precision (`train.precision: bf16 | fp16`): which op runs in
//! the 16-bit format and which in f32, as PyTorch's CUDA autocast decides it, so that a
//! GPU forward pass that follows this table computes what `torch.autocast("cuda", dtype)`
//! computes.
//!
//! Source: PyTorch 2.5's op lists, `aten/src/ATen/autocast_mode.h`
//! (`AT_FORALL_LOWER_PRECISION_FP`, `AT_FORALL_FP32`, `AT_FORALL_FP32_SET_OPT_DTYPE`, the
//! `norm` overloads of `AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE`, `AT_FORALL_PROMOTE`),
//! registered for CUDA in `autocast_mode.cpp`; documented as the "Autocast Op Reference"
//! of https://pytorch.org/docs/stable/amp.html. The same lists serve bf16 and fp16.
//!
//! What autocast leaves alone stays f32 in every precision: the parameters (master
//! weights; the 16-bit copy an op reads is made inside the forward, so gradients arrive in
//! f32), the optimizer state, and batch norm's running statistics (batch norm is on no
//! list: it runs on its input's type with f32 weight, bias and statistics, as cuDNN takes
//! them). An op on none of the lists runs in its inputs' type (with PyTorch's promotion
//! when they differ), and each op's backward runs in its forward's type. f64 tensors are
//! never cast.

use candle_core::DType;

use crate::config::Precision;

/// The 16-bit type of a mixed precision; None for `fp32` and `tf32` (no autocast).
pub fn lower_dtype(p: Precision) -> Option<DType> {
    match p {
        Precision::Bf16 => Some(DType::BF16),
        Precision::Fp16 => Some(DType::F16),
        Precision::Fp32 | Precision::Tf32 => None,
    }
}

/// The type of the parameters (master weights), their gradients, the optimizer state and
/// batch norm's running statistics: f32 in every precision.
pub const MASTER_DTYPE: DType = DType::F32;

/// How autocast treats an op (PyTorch's `CastPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastRule {
    /// `lower_precision_fp`: floating inputs cast to the 16-bit type (matrix products,
    /// convolutions: fast on tensor cores, accumulating in f32 inside the kernel).
    LowerPrecision,
    /// `fp32`, `fp32_set_opt_dtype`, `fp32_append_dtype`: inputs cast to f32 (reductions,
    /// softmax, norms, losses, exp/log/pow, interpolation: range or accuracy matter).
    Fp32,
    /// `promote`: the widest type among the inputs.
    Widest,
    /// On no list: the op runs in its inputs' type.
    Input,
}

/// PyTorch's CUDA `lower_precision_fp` list (aten names).
pub const LOWER_PRECISION_OPS: &[&str] = &[
    "_convolution",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_tbc",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "convolution",
    "prelu",
    "addmm",
    "addmv",
    "addr",
    "matmul",
    "einsum",
    "mm",
    "mv",
    "linalg_vecdot",
    "linear",
    "addbmm",
    "baddbmm",
    "bmm",
    "chain_matmul",
    "linalg_multi_dot",
    "_thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell",
    "lstm_cell",
    "gru_cell",
    "rnn_tanh_cell",
    "rnn_relu_cell",
    "_scaled_dot_product_flash_attention",
    "scaled_dot_product_attention",
];

/// PyTorch's CUDA f32 lists (`fp32`, `fp32_set_opt_dtype`, and `norm`'s `fp32_append_dtype`).
pub const FP32_OPS: &[&str] = &[
    "acos",
    "asin",
    "cosh",
    "erfinv",
    "exp",
    "expm1",
    "log",
    "log10",
    "log2",
    "log1p",
    "reciprocal",
    "rsqrt",
    "sinh",
    "tan",
    "pow",
    "softplus",
    "layer_norm",
    "native_layer_norm",
    "group_norm",
    "frobenius_norm",
    "nuclear_norm",
    "cosine_similarity",
    "poisson_nll_loss",
    "cosine_embedding_loss",
    "nll_loss",
    "nll_loss2d",
    "hinge_embedding_loss",
    "kl_div",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "mse_loss",
    "margin_ranking_loss",
    "multilabel_margin_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "multi_margin_loss",
    "binary_cross_entropy_with_logits",
    "dist",
    "pdist",
    "cdist",
    "renorm",
    "logsumexp",
    "upsample_nearest1d",
    "_upsample_nearest_exact1d",
    "upsample_nearest2d",
    "_upsample_nearest_exact2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact3d",
    "upsample_linear1d",
    "upsample_bilinear2d",
    "_upsample_bilinear2d_aa",
    "upsample_trilinear3d",
    "upsample_bicubic2d",
    "_upsample_bicubic2d_aa",
    // fp32_set_opt_dtype
    "prod",
    "softmax",
    "log_softmax",
    "cumprod",
    "cumsum",
    "linalg_vector_norm",
    "linalg_matrix_norm",
    "sum",
    // fp32_append_dtype
    "norm",
];

/// PyTorch's CUDA `promote` list.
pub const PROMOTE_OPS: &[&str] = &[
    "addcdiv",
    "addcmul",
    "atan2",
    "bilinear",
    "cross",
    "dot",
    "vdot",
    "grid_sampler",
    "index_put",
    "tensordot",
    "scatter_add",
];

/// The rule of an aten op by name.
pub fn rule_of(aten_op: &str) -> CastRule {
    if LOWER_PRECISION_OPS.contains(&aten_op) {
        CastRule::LowerPrecision
    } else if FP32_OPS.contains(&aten_op) {
        CastRule::Fp32
    } else if PROMOTE_OPS.contains(&aten_op) {
        CastRule::Widest
    } else {
        CastRule::Input
    }
}

/// The ops wsol's models and losses are made of, each named by the aten op PyTorch
/// dispatches for it (`cross_entropy` is `log_softmax` then `nll_loss`: both f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Conv2d,
    Linear,
    /// A batched matrix product (attention's q k^T and its weighted sum).
    Matmul,
    ScaledDotProductAttention,
    BatchNorm,
    LayerNorm,
    Softmax,
    LogSoftmax,
    NllLoss,
    BinaryCrossEntropyWithLogits,
    Sum,
    /// `mean`: on no list, so in its input's type (PyTorch's CUDA kernel accumulates a
    /// 16-bit mean in f32 anyway).
    Mean,
    Norm,
    Exp,
    Log,
    Pow,
    UpsampleBilinear,
    UpsampleBicubic,
    CosineSimilarity,
    Relu,
    Gelu,
    Sigmoid,
    Tanh,
    MaxPool2d,
    AvgPool2d,
    AdaptiveAvgPool2d,
    Add,
    Mul,
    Cat,
}

impl Op {
    pub fn aten_name(self) -> &'static str {
        match self {
            Op::Conv2d => "conv2d",
            Op::Linear => "linear",
            Op::Matmul => "matmul",
            Op::ScaledDotProductAttention => "scaled_dot_product_attention",
            Op::BatchNorm => "batch_norm",
            Op::LayerNorm => "layer_norm",
            Op::Softmax => "softmax",
            Op::LogSoftmax => "log_softmax",
            Op::NllLoss => "nll_loss",
            Op::BinaryCrossEntropyWithLogits => "binary_cross_entropy_with_logits",
            Op::Sum => "sum",
            Op::Mean => "mean",
            Op::Norm => "norm",
            Op::Exp => "exp",
            Op::Log => "log",
            Op::Pow => "pow",
            Op::UpsampleBilinear => "upsample_bilinear2d",
            Op::UpsampleBicubic => "upsample_bicubic2d",
            Op::CosineSimilarity => "cosine_similarity",
            Op::Relu => "relu",
            Op::Gelu => "gelu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::MaxPool2d => "max_pool2d",
            Op::AvgPool2d => "avg_pool2d",
            Op::AdaptiveAvgPool2d => "adaptive_avg_pool2d",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Cat => "cat",
        }
    }

    pub fn rule(self) -> CastRule {
        rule_of(self.aten_name())
    }

    /// Parameters and statistics an op keeps in f32 while its input may be 16-bit: batch
    /// norm's weight, bias and running mean and variance (updated in f32).
    pub fn keeps_f32_state(self) -> bool {
        self == Op::BatchNorm
    }
}

/// PyTorch's type promotion among floating types: f64 over f32 over the 16-bit types;
/// f16 with bf16 gives f32.
pub fn promote(inputs: &[DType]) -> DType {
    let has = |d| inputs.contains(&d);
    if has(DType::F64) {
        DType::F64
    } else if has(DType::F32) || (has(DType::F16) && has(DType::BF16)) {
        DType::F32
    } else if has(DType::BF16) {
        DType::BF16
    } else if has(DType::F16) {
        DType::F16
    } else {
        DType::F32
    }
}

/// The type `op` computes in under `precision`, given its floating inputs' types (the
/// parameters count as inputs: f32 master weights).
pub fn compute_dtype(op: Op, precision: Precision, inputs: &[DType]) -> DType {
    compute_dtype_by_rule(op.rule(), precision, inputs)
}

/// [`compute_dtype`] for an op known by its rule (e.g. [`rule_of`] an aten name).
pub fn compute_dtype_by_rule(rule: CastRule, precision: Precision, inputs: &[DType]) -> DType {
    let Some(low) = lower_dtype(precision) else {
        return promote(inputs);
    };
    // f64 is never autocast.
    if inputs.contains(&DType::F64) {
        return DType::F64;
    }
    match rule {
        CastRule::LowerPrecision => low,
        CastRule::Fp32 => DType::F32,
        // `promote_type` starts from the 16-bit type; any f32 input wins.
        CastRule::Widest => promote(&[&[low][..], inputs].concat()),
        CastRule::Input => promote(inputs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Op] = &[
        Op::Conv2d,
        Op::Linear,
        Op::Matmul,
        Op::ScaledDotProductAttention,
        Op::BatchNorm,
        Op::LayerNorm,
        Op::Softmax,
        Op::LogSoftmax,
        Op::NllLoss,
        Op::BinaryCrossEntropyWithLogits,
        Op::Sum,
        Op::Mean,
        Op::Norm,
        Op::Exp,
        Op::Log,
        Op::Pow,
        Op::UpsampleBilinear,
        Op::UpsampleBicubic,
        Op::CosineSimilarity,
        Op::Relu,
        Op::Gelu,
        Op::Sigmoid,
        Op::Tanh,
        Op::MaxPool2d,
        Op::AvgPool2d,
        Op::AdaptiveAvgPool2d,
        Op::Add,
        Op::Mul,
        Op::Cat,
    ];

    #[test]
    fn the_lists_do_not_overlap() {
        for name in LOWER_PRECISION_OPS.iter().chain(FP32_OPS).chain(PROMOTE_OPS) {
            let n = [LOWER_PRECISION_OPS, FP32_OPS, PROMOTE_OPS].iter().filter(|l| l.contains(name)).count();
            assert_eq!(n, 1, "{name}");
        }
    }

    #[test]
    fn products_and_convolutions_run_in_the_16_bit_type() {
        let f32_in = [DType::F32, DType::F32];
        for op in [Op::Conv2d, Op::Linear, Op::Matmul, Op::ScaledDotProductAttention] {
            assert_eq!(op.rule(), CastRule::LowerPrecision, "{op:?}");
            assert_eq!(compute_dtype(op, Precision::Bf16, &f32_in), DType::BF16, "{op:?}");
            assert_eq!(compute_dtype(op, Precision::Fp16, &f32_in), DType::F16, "{op:?}");
            for p in [Precision::Fp32, Precision::Tf32] {
                assert_eq!(compute_dtype(op, p, &f32_in), DType::F32, "{op:?} {p}");
            }
        }
    }

    #[test]
    fn softmax_norms_losses_and_reductions_run_in_f32() {
        for op in [
            Op::Softmax,
            Op::LogSoftmax,
            Op::NllLoss,
            Op::BinaryCrossEntropyWithLogits,
            Op::LayerNorm,
            Op::Sum,
            Op::Norm,
            Op::Exp,
            Op::Log,
            Op::Pow,
            Op::UpsampleBilinear,
            Op::UpsampleBicubic,
            Op::CosineSimilarity,
        ] {
            assert_eq!(op.rule(), CastRule::Fp32, "{op:?}");
            for p in [Precision::Bf16, Precision::Fp16] {
                let low = lower_dtype(p).unwrap();
                assert_eq!(compute_dtype(op, p, &[low]), DType::F32, "{op:?} {p}");
            }
        }
    }

    #[test]
    fn batch_norm_runs_on_its_input_with_f32_statistics() {
        assert_eq!(Op::BatchNorm.rule(), CastRule::Input);
        assert!(Op::BatchNorm.keeps_f32_state() && !Op::LayerNorm.keeps_f32_state());
        // After a 16-bit conv its input is 16-bit; the f32 weight and statistics are not
        // inputs of the type decision (cuDNN takes them in f32).
        assert_eq!(compute_dtype(Op::BatchNorm, Precision::Fp16, &[DType::F16]), DType::F16);
        assert_eq!(compute_dtype(Op::BatchNorm, Precision::Bf16, &[DType::F32]), DType::F32);
        assert_eq!(MASTER_DTYPE, DType::F32);
    }

    #[test]
    fn unlisted_ops_follow_their_inputs_and_promote_takes_the_widest() {
        for op in [Op::Relu, Op::Gelu, Op::MaxPool2d, Op::AdaptiveAvgPool2d, Op::Mean, Op::Add, Op::Cat] {
            assert_eq!(op.rule(), CastRule::Input, "{op:?}");
            assert_eq!(compute_dtype(op, Precision::Bf16, &[DType::BF16]), DType::BF16, "{op:?}");
        }
        // A residual sum of a 16-bit branch and an f32 one is f32, as PyTorch promotes.
        assert_eq!(compute_dtype(Op::Add, Precision::Fp16, &[DType::F16, DType::F32]), DType::F32);
        assert_eq!(promote(&[DType::F16, DType::BF16]), DType::F32);
        assert_eq!(rule_of("addcmul"), CastRule::Widest);
        assert_eq!(compute_dtype_by_rule(rule_of("addcmul"), Precision::Fp16, &[DType::F16, DType::F16]), DType::F16);
        assert_eq!(compute_dtype_by_rule(rule_of("addcmul"), Precision::Fp16, &[DType::F16, DType::F32]), DType::F32);
        // f64 is never cast.
        assert_eq!(compute_dtype(Op::Conv2d, Precision::Bf16, &[DType::F64]), DType::F64);
    }

    #[test]
    fn every_op_has_the_rule_of_its_aten_name() {
        for op in ALL {
            let listed = [LOWER_PRECISION_OPS, FP32_OPS, PROMOTE_OPS].iter().any(|l| l.contains(&op.aten_name()));
            assert_eq!(listed, op.rule() != CastRule::Input, "{op:?}");
        }
    }
}
