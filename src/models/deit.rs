//! DeiT (Touvron et al., ICML 2021), the ViT of timm's `deit_{tiny,small}_patch16_224`,
//! under timm's weight names so its `.pth` / `.safetensors` files load as they are:
//!
//! ```text
//! image -> PxP patches -> linear (patch_embed.proj) -> [cls_token; patches] + pos_embed
//!       (P = model.patch_size, 16 as timm's)
//!       -> blocks.i: x += attn(norm1(x)); x += mlp(norm2(x))   (pre-norm, GELU MLP)
//!       -> norm
//! ```
//!
//! The backbone's feature map is the final patch tokens on their grid, the class token
//! dropped; its CAM layers are the blocks, whose outputs stay token sequences until a CAM
//! reads them ([`super::Backbone::to_grid`]). Each block's attention probabilities are kept
//! for TS-CAM and attention rollout. `pos_embed` keeps the grid of a 224-pixel input (14x14
//! at timm's 16-pixel patch) and is resampled to the input's grid at each forward pass, as
//! timm's `dynamic_img_size` (antialiased bicubic): any image size that is a multiple of the
//! patch runs the same weights. `model.patch_size` sets the patch (16 unless set; timm's
//! weights are all 16-pixel ones): a smaller one gives small images trained from scratch a
//! finer token grid.
//!
//! In training, `model.drop_path_rate` adds timm's stochastic depth ([`DropPath`]): each
//! residual branch of block i is dropped per sample with probability rate * i / (depth - 1).

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use crate::config::Backbone as BackboneName;
use crate::draws::LayerDraws;

/// timm's DeiT patch, the default `model.patch_size`.
pub const PATCH: usize = crate::config::DEIT_PATCH;
/// The input side `pos_embed`'s grid is made for, as timm's models (`img_size=224`):
/// 14x14 at a 16-pixel patch, the grid of timm's weights.
const NATIVE_SIZE: usize = 224;
/// timm's `partial(nn.LayerNorm, eps=1e-6)`.
const LN_EPS: f64 = 1e-6;

/// Parameters timm's ViTs exempt from weight decay (`no_weight_decay()`), by name.
pub fn no_weight_decay(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "pos_embed" || last == "cls_token"
}

/// (embedding width, blocks, heads) of a DeiT, from timm's model definitions.
pub fn dims(name: BackboneName) -> Option<(usize, usize, usize)> {
    match name {
        BackboneName::DeitTiny => Some((192, 12, 3)),
        // timm's vit_small_patch16_224 is the same network (its AugReg / DINO weights).
        BackboneName::DeitSmall | BackboneName::VitSmall => Some((384, 12, 6)),
        _ => None,
    }
}

/// timm's LayerNorm (affine, eps 1e-6): wsol-ops' fused op, one pass each way (candle-nn's
/// fused kernel has no backward).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(dim: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(LayerNorm { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")? })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        wsol_ops::rows::layer_norm(x, &self.weight, &self.bias, LN_EPS)
    }
}

/// A linear layer as timm's (`weight` [out, in], `bias`), its bias added by wsol-ops'
/// op (a one-pass bias gradient).
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

fn linear(d_in: usize, d_out: usize, vb: VarBuilder) -> candle_core::Result<Linear> {
    let l = candle_nn::linear(d_in, d_out, vb)?;
    Ok(Linear { weight: l.weight().clone(), bias: l.bias().expect("a linear layer with a bias").clone() })
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, k) = x.dims3()?;
        let y = x.reshape((b * t, k))?.matmul(&self.weight.t()?)?;
        wsol_ops::rows::add_bias(&y, &self.bias)?.reshape((b, t, ()))
    }
}

struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    /// The output [B, T, C] and the attention probabilities [B, heads, T, T], with
    /// gradients through them only if `attention_grads` (wsol-ops' fused op otherwise).
    fn forward(&self, x: &Tensor, attention_grads: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let qkv = self.qkv.forward(x)?;
        let (out, attn) = if attention_grads {
            wsol_ops::self_attention::self_attention_composite(&qkv, self.heads)?
        } else {
            wsol_ops::self_attention::self_attention(&qkv, self.heads)?
        };
        Ok((self.proj.forward(&out)?, attn))
    }
}

struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(dim: usize, heads: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Block {
            norm1: LayerNorm::new(dim, vb.pp("norm1"))?,
            attn: Attention {
                qkv: linear(dim, 3 * dim, vb.pp("attn.qkv"))?,
                proj: linear(dim, dim, vb.pp("attn.proj"))?,
                heads,
            },
            norm2: LayerNorm::new(dim, vb.pp("norm2"))?,
            fc1: linear(dim, 4 * dim, vb.pp("mlp.fc1"))?,
            fc2: linear(4 * dim, dim, vb.pp("mlp.fc2"))?,
        })
    }

    /// `x += attn(norm1(x)); x += mlp(norm2(x))`, each branch through `drop` when given.
    fn forward(
        &self,
        x: &Tensor,
        attention_grads: bool,
        drop: Option<&BlockDrop>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (mut a, attn) = self.attn.forward(&self.norm1.forward(x)?, attention_grads)?;
        if let Some(d) = drop {
            a = drop_branch(&a, &d.keep_attn, d.p)?;
        }
        let x = (x + a)?;
        let mut mlp = self.fc2.forward(&wsol_ops::rows::gelu_erf(&self.fc1.forward(&self.norm2.forward(&x)?)?)?)?;
        if let Some(d) = drop {
            mlp = drop_branch(&mlp, &d.keep_mlp, d.p)?;
        }
        Ok(((x + mlp)?, attn))
    }
}

/// Stochastic depth (Huang et al. 2016) as timm's `DropPath`: in training, each residual
/// branch of block i drops each sample with probability `rates[i]`, the kept ones scaled
/// by 1 / (1 - p) (`scale_by_keep`); the two branches of a block draw independently.
///
/// The masks come from the network's layer draws, which the trainer replaces before each
/// step with a stream keyed by (run seed, global step) ([`crate::draws::StepDraws`]), read
/// in a fixed order (block, then attention before MLP, then sample): the same config and
/// seed draw the same masks on every run and on `--resume`, as Inception's dropout and
/// ADL do, without a generator whose state would have to be checkpointed. (Data-parallel
/// ranks read the same stream, each for its own shard, as those layers do.)
struct DropPath {
    rates: Vec<f64>,
    draws: LayerDraws,
}

impl DropPath {
    /// Block `i`'s masks for a batch of `b`; None where its rate is 0 (timm's Identity,
    /// which draws nothing).
    fn draw(&self, i: usize, b: usize) -> Option<BlockDrop> {
        let p = self.rates[i];
        (p > 0.0).then(|| {
            // Attention's mask first, then the MLP's: the order timm applies them.
            let keep_attn = self.draws.keep_mask(b, 1.0 - p);
            BlockDrop { p, keep_attn, keep_mlp: self.draws.keep_mask(b, 1.0 - p) }
        })
    }
}

/// One block's masks for one forward pass (true: the sample's branch is kept).
struct BlockDrop {
    p: f64,
    keep_attn: Vec<bool>,
    keep_mlp: Vec<bool>,
}

/// timm's stochastic depth decay rule, `torch.linspace(0, rate, depth)`: block i drops
/// with probability rate * i / (depth - 1), the first block never.
pub fn drop_path_rates(rate: f64, depth: usize) -> Vec<f64> {
    (0..depth).map(|i| if depth > 1 { rate * i as f64 / (depth - 1) as f64 } else { 0.0 }).collect()
}

/// A residual branch [B, ...] after drop path: sample b times keep[b] / (1 - p).
pub fn drop_branch(branch: &Tensor, keep: &[bool], p: f64) -> candle_core::Result<Tensor> {
    let b = branch.dim(0)?;
    if keep.len() != b {
        candle_core::bail!("drop path: a mask of {} samples for a batch of {b}", keep.len());
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut shape = vec![1; branch.rank()];
    shape[0] = b;
    let mask: Vec<f32> = keep.iter().map(|&k| if k { scale } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, shape, branch.device())?.to_dtype(branch.dtype())?;
    branch.broadcast_mul(&mask)
}

pub struct Deit {
    /// [C, 3 * patch * patch]: the patch convolution as the linear map it is.
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// Side of the square patches in pixels.
    patch: usize,
    cls_token: Tensor,
    /// [1, 1 + grid * grid, C].
    pos_embed: Tensor,
    /// `pos_embed`'s grid side: 224 / patch (rounded down, at least 1).
    grid: usize,
    blocks: Vec<Block>,
    norm: LayerNorm,
    dim: usize,
    /// None when `model.drop_path_rate` is 0.
    drop_path: Option<DropPath>,
}

/// Token sequences of one forward pass.
pub struct Tokens {
    /// [B, 1 + h * w, C] after the final norm.
    pub tokens: Tensor,
    /// Per block, the attention probabilities [B, heads, 1 + h * w, 1 + h * w].
    pub attention: Vec<Tensor>,
}

impl Deit {
    /// `patch`-pixel patches; `drop_path_rate` as timm's (see [`drop_path_rates`]), its
    /// masks from `draws`.
    pub fn new(
        name: BackboneName,
        patch: usize,
        drop_path_rate: f64,
        draws: &LayerDraws,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let (dim, depth, heads) = dims(name).expect("a DeiT name");
        if patch == 0 {
            candle_core::bail!("DeiT: a patch of 0 pixels");
        }
        let grid = (NATIVE_SIZE / patch).max(1);
        let patch_weight =
            vb.get((dim, 3, patch, patch), "patch_embed.proj.weight")?.reshape((dim, 3 * patch * patch))?;
        let blocks =
            (0..depth).map(|i| Block::new(dim, heads, vb.pp(format!("blocks.{i}")))).collect::<Result<_, _>>()?;
        Ok(Deit {
            patch_weight,
            patch_bias: vb.get(dim, "patch_embed.proj.bias")?,
            patch,
            cls_token: vb.get((1, 1, dim), "cls_token")?,
            pos_embed: vb.get((1, 1 + grid * grid, dim), "pos_embed")?,
            grid,
            blocks,
            norm: LayerNorm::new(dim, vb.pp("norm"))?,
            dim,
            drop_path: (drop_path_rate > 0.0)
                .then(|| DropPath { rates: drop_path_rates(drop_path_rate, depth), draws: draws.clone() }),
        })
    }

    /// Hands the step's layer draws to drop path (the heads built on a DeiT call it from
    /// their `begin_step`).
    pub fn begin_step(&self, draws: Box<dyn crate::draws::Draws>) {
        if let Some(d) = &self.drop_path {
            d.draws.set(draws);
        }
    }

    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Side of the patches in pixels.
    pub fn patch_size(&self) -> usize {
        self.patch
    }

    /// Patch embedding, class token and position embedding: [B, 1 + h * w, C].
    fn embed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, height, width) = x.dims4()?;
        let p = self.patch;
        let (h, w) = (height / p, width / p);
        if height % p != 0 || width % p != 0 {
            candle_core::bail!("DeiT: the input is {height}x{width}, not a multiple of the {p}-pixel patch");
        }
        let patches =
            x.reshape((b, c, h, p, w, p))?.permute(vec![0, 2, 4, 1, 3, 5])?.reshape((b * h * w, c * p * p))?;
        let tokens =
            patches.matmul(&self.patch_weight.t()?)?.broadcast_add(&self.patch_bias)?.reshape((b, h * w, self.dim))?;
        let cls = self.cls_token.broadcast_as((b, 1, self.dim))?;
        Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&self.position_embedding(h, w)?)
    }

    /// `pos_embed` for an h x w grid: the class entry, then the patch entries resampled
    /// (a linear map of the stored grid, so gradients reach the stored embedding).
    fn position_embedding(&self, h: usize, w: usize) -> candle_core::Result<Tensor> {
        let n = self.grid;
        if (h, w) == (n, n) {
            return Ok(self.pos_embed.clone());
        }
        let cls = self.pos_embed.narrow(1, 0, 1)?;
        let grid = self.pos_embed.narrow(1, 1, n * n)?.reshape((n, n * self.dim))?;
        let dev = self.pos_embed.device();
        let rows = Tensor::from_vec(resample_matrix(n, h), (h, n), dev)?.to_dtype(grid.dtype())?;
        let cols = Tensor::from_vec(resample_matrix(n, w), (w, n), dev)?.to_dtype(grid.dtype())?;
        // [h, n] x [n, n*C] -> rows resampled; then the same over columns.
        let g = rows.matmul(&grid)?.reshape((h, n, self.dim))?.transpose(0, 1)?.reshape((n, h * self.dim))?;
        let g = cols.matmul(&g)?.reshape((w, h, self.dim))?.transpose(0, 1)?.reshape((1, h * w, self.dim))?;
        Tensor::cat(&[&cls, &g], 1)
    }

    /// Runs blocks `range` on token sequence `x`, keeping each block's attention; drop path
    /// only when `train`.
    fn run_blocks(
        &self,
        mut x: Tensor,
        range: std::ops::Range<usize>,
        attention: &mut Vec<Tensor>,
        attention_grads: bool,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        for (i, block) in range.clone().zip(&self.blocks[range]) {
            let drop = self.drop_path.as_ref().filter(|_| train).and_then(|d| d.draw(i, b));
            let (y, attn) = block.forward(&x, attention_grads, drop.as_ref())?;
            attention.push(attn);
            x = y;
        }
        Ok(x)
    }

    /// The whole forward pass as token sequences, without drop path (evaluation); the
    /// attention probabilities carry no gradient (the fused attention keeps less for the
    /// backward pass).
    pub fn forward_tokens(&self, x: &Tensor) -> candle_core::Result<Tokens> {
        self.forward_tokens_with(x, false, false)
    }

    /// The same, with gradients through the attention probabilities when
    /// `attention_grads` (for a loss that reads them), and drop path when `train`.
    pub fn forward_tokens_with(&self, x: &Tensor, attention_grads: bool, train: bool) -> candle_core::Result<Tokens> {
        let mut attention = Vec::with_capacity(self.blocks.len());
        let x = self.run_blocks(self.embed(x)?, 0..self.blocks.len(), &mut attention, attention_grads, train)?;
        Ok(Tokens { tokens: self.norm.forward(&x)?, attention })
    }

    /// Patch tokens [B, 1 + N, C] as a map [B, C, h, w] (square grid), the class token dropped.
    pub fn grid(tokens: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, c) = tokens.dims3()?;
        let side = ((t - 1) as f64).sqrt().round() as usize;
        if side * side != t - 1 {
            candle_core::bail!("DeiT: {} patch tokens do not make a square grid", t - 1);
        }
        tokens.narrow(1, 1, t - 1)?.transpose(1, 2)?.reshape((b, c, side, side))
    }
}

impl super::Backbone for Deit {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Deit::grid(&self.forward_tokens_with(x, false, train)?.tokens)
    }

    fn out_channels(&self) -> usize {
        self.dim
    }

    /// `blocks.0` ... `blocks.{depth-1}` (timm's module names), then `norm` (the map).
    fn layers(&self) -> Vec<String> {
        (0..self.blocks.len()).map(|i| format!("blocks.{i}")).chain(["norm".to_string()]).collect()
    }

    /// Layer `k`'s output as tokens [B, 1 + N, C].
    fn forward_to(&self, x: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        let x = self.run_blocks(self.embed(x)?, 0..k.min(self.blocks.len() - 1) + 1, &mut Vec::new(), false, false)?;
        if k == self.blocks.len() {
            self.norm.forward(&x)
        } else {
            Ok(x)
        }
    }

    fn forward_from(&self, a: &Tensor, k: usize) -> candle_core::Result<Tensor> {
        let x = if k < self.blocks.len() {
            self.norm.forward(&self.run_blocks(
                a.clone(),
                k + 1..self.blocks.len(),
                &mut Vec::new(),
                false,
                false,
            )?)?
        } else {
            a.clone()
        };
        Deit::grid(&x)
    }

    fn forward_stages(&self, x: &Tensor, stages: std::ops::Range<usize>, train: bool) -> candle_core::Result<Tensor> {
        if stages.start != 0 || stages.end != self.blocks.len() + 1 {
            candle_core::bail!("DeiT runs its blocks as one stage list (asked for {stages:?})");
        }
        self.forward_t(x, train)
    }

    fn spg_taps(&self) -> Option<super::SpgTaps> {
        None
    }

    fn bas_tap(&self) -> Option<(usize, usize)> {
        None
    }

    fn new_layer_lr(&self, _var_name: &str) -> Option<bool> {
        None
    }

    fn to_grid(&self, a: &Tensor) -> candle_core::Result<Tensor> {
        Deit::grid(a)
    }

    fn transformer(&self) -> Option<&Deit> {
        Some(self)
    }
}

/// [n_out, n_in]: PyTorch's antialiased bicubic resize along one axis
/// (`F.interpolate(mode="bicubic", antialias=True, align_corners=False)`, PIL's filter:
/// cubic with a = -0.5, support widened by the scale when shrinking, weights normalized).
pub fn resample_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let cubic = |x: f64| {
        let (a, x) = (-0.5, x.abs());
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    };
    let scale = n_in as f64 / n_out as f64;
    let (support, inv) = if scale >= 1.0 { (2.0 * scale, 1.0 / scale) } else { (2.0, 1.0) };
    let mut m = vec![0f32; n_out * n_in];
    for i in 0..n_out {
        let centre = scale * (i as f64 + 0.5);
        // Truncation toward zero, then clamping, as PyTorch computes the window.
        let lo = ((centre - support + 0.5) as i64).max(0) as usize;
        let hi = ((centre + support + 0.5) as i64).min(n_in as i64) as usize;
        let w: Vec<f64> = (lo..hi).map(|j| cubic((j as f64 - centre + 0.5) * inv)).collect();
        let total: f64 = w.iter().sum();
        for (j, wj) in (lo..hi).zip(w) {
            m[i * n_in + j] = if total != 0.0 { (wj / total) as f32 } else { 0.0 };
        }
    }
    m
}

/// DeiT's published initialization, as TS-CAM's code starts a model from scratch
/// (vasgaowei/TS-CAM lib/models/vision_transformer.py; timm's is the same up to the class
/// token): linear weights and the position / class tokens N(0, 0.02) (their truncation at
/// +-2 is ~100 sigma away), convolutions (the patch projection, a conv head) PyTorch's
/// default U(+-1/sqrt(fan_in)) with their biases. `models::init`'s He init would give a
/// conv head over 192 x 3 x 3 inputs logits of std ~9, and training from scratch stalls.
pub fn initialize(varmap: &candle_nn::VarMap, seed: u64, device: &candle_core::Device) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};
    let data = varmap.data().lock().expect("varmap lock");
    let convs: Vec<String> = data
        .iter()
        .filter(|(_, v)| v.dims().len() == 4)
        .map(|(n, _)| n.trim_end_matches("weight").to_string())
        .collect();
    for (name, var) in data.iter() {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let key = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ key);
        let conv = convs.iter().find(|p| name.strip_prefix(p.as_str()).is_some_and(|s| s == "weight" || s == "bias"));
        let values: Vec<f32> = if let Some(prefix) = conv {
            let w = data[&format!("{prefix}weight")].dims().to_vec();
            let bound = 1.0 / ((w[1] * w[2] * w[3]) as f64).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
        } else if dims.len() >= 2 {
            let normal = Normal::new(0.0, 0.02).expect("valid std");
            (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
        } else {
            continue; // LayerNorm ones / zeros and linear biases zero, as models::init set them
        };
        var.set(&Tensor::from_vec(values, dims, device)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use super::*;
    use crate::draws::StepDraws;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn drop_path_rates_follow_timms_linspace() {
        let r = drop_path_rates(0.1, 12);
        assert_eq!((r.len(), r[0], r[11]), (12, 0.0, 0.1));
        for (i, v) in r.iter().enumerate() {
            assert!((v - 0.1 * i as f64 / 11.0).abs() < 1e-15);
        }
        assert_eq!(drop_path_rates(0.3, 1), vec![0.0]);
    }

    #[test]
    fn a_dropped_branch_is_zero_and_a_kept_one_scaled_by_one_over_keep() {
        let branch = Tensor::new(&[[[1f32, 2.0]], [[3.0, 4.0]], [[-1.0, 0.5]]], &Device::Cpu).unwrap();
        let out = drop_branch(&branch, &[true, false, true], 0.2).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(out, vec![vec![vec![1.25, 2.5]], vec![vec![0.0, 0.0]], vec![vec![-1.25, 0.625]]]);
        assert!(drop_branch(&branch, &[true], 0.2).is_err());
    }

    #[test]
    fn masks_drop_at_each_blocks_rate_independently_per_branch() {
        let draws = LayerDraws::default();
        draws.set(StepDraws::seeded(4, 9).layers);
        let dp = DropPath { rates: drop_path_rates(0.5, 12), draws };
        assert!(dp.draw(0, 8).is_none(), "the first block never drops");
        let n = 20_000;
        for i in [3, 11] {
            let d = dp.draw(i, n).unwrap();
            let p = 0.5 * i as f64 / 11.0;
            let dropped = |m: &[bool]| m.iter().filter(|&&k| !k).count() as f64 / n as f64;
            let both = d.keep_attn.iter().zip(&d.keep_mlp).filter(|(a, m)| !**a && !**m).count() as f64 / n as f64;
            assert_eq!(d.p, p);
            assert!((dropped(&d.keep_attn) - p).abs() < 0.015, "block {i}: {}", dropped(&d.keep_attn));
            assert!((dropped(&d.keep_mlp) - p).abs() < 0.015, "block {i}: {}", dropped(&d.keep_mlp));
            // Two independent draws: both dropped about p^2 of the time.
            assert!((both - p * p).abs() < 0.015, "block {i}: {both}");
        }
    }

    /// deit_tiny at 32 px with drop path 0.5: the same step's draws give the same output,
    /// another step's another; evaluation never drops.
    #[test]
    fn drop_path_is_keyed_by_the_step_and_off_in_evaluation() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let draws = LayerDraws::default();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let deit = Deit::new(BackboneName::DeitTiny, PATCH, 0.5, &draws, vb.clone()).unwrap();
        let plain = Deit::new(BackboneName::DeitTiny, PATCH, 0.0, &LayerDraws::default(), vb).unwrap();
        crate::models::init::initialize(&varmap, 1, &dev).unwrap();
        initialize(&varmap, 1, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &dev).unwrap();
        let train = |step| {
            deit.begin_step(StepDraws::seeded(7, step).layers);
            deit.forward_tokens_with(&x, false, true).unwrap().tokens
        };
        let (a, again, other) = (train(3), train(3), train(4));
        assert_eq!(max_abs_diff(&a, &again), 0.0);
        assert!(max_abs_diff(&a, &other) > 1e-6, "another step, other masks");
        let reference = plain.forward_tokens(&x).unwrap().tokens;
        assert!(max_abs_diff(&a, &reference) > 1e-6, "training drops");
        assert_eq!(max_abs_diff(&deit.forward_tokens(&x).unwrap().tokens, &reference), 0.0);
        let features = super::super::Backbone::forward_t(&deit, &x, false).unwrap();
        assert_eq!(max_abs_diff(&features, &Deit::grid(&reference).unwrap()), 0.0);
    }

    /// timm's `Block` with `drop_path=0.4` in training (scripts/make_drop_path_fixture.py:
    /// its own masks, read back) against ours given the same masks.
    #[test]
    fn a_block_with_timms_masks_matches_timm() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drop_path");
        let dev = Device::Cpu;
        let read = |name: &str| Tensor::read_npy(dir.join(name)).unwrap();
        let mask = |name: &str| read(name).to_vec1::<f32>().unwrap().iter().map(|&v| v == 1.0).collect::<Vec<_>>();
        let weights = candle_core::safetensors::load(dir.join("block.safetensors"), &dev).unwrap();
        let block = Block::new(8, 2, VarBuilder::from_tensors(weights, DType::F32, &dev)).unwrap();
        let p = read("p.npy").to_vec1::<f32>().unwrap()[0] as f64;
        let drop = BlockDrop { p, keep_attn: mask("keep_attn.npy"), keep_mlp: mask("keep_mlp.npy") };
        assert!(drop.keep_attn.contains(&false) && drop.keep_mlp.contains(&false));
        let (y, _) = block.forward(&read("x.npy"), false, Some(&drop)).unwrap();
        let d = max_abs_diff(&y, &read("y.npy"));
        assert!(d < 1e-5, "max |ours - timm| = {d}");
    }
}
