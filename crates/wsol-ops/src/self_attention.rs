//! Multi-head self-attention as one CPU op, from the fused qkv projection [B, T, 3C] to the
//! heads' outputs [B, T, C]. Why: written with candle's ops, each block's backward graph
//! held the qkv output, contiguous copies of q, k and v, the scaled q, the scores, the
//! probabilities and the transposed output: on DeiT-S at batch 8 about 250 MB more than
//! PyTorch keeps. The op keeps qkv and the probabilities, which the backward needs and the
//! maps read (TS-CAM, attention rollout), and writes q·kᵀ, its softmax and the product
//! with v per (image, head) with no copies.
//!
//! The probabilities come back without a gradient: a method whose loss depends on them
//! (SCM calibrates its maps with them) takes the composite path, [`self_attention_composite`].

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::conv::matmul;
use crate::cpu_f32;

/// The output [B, T, C] and the attention probabilities [B, heads, T, T] (detached) of
/// softmax(q kᵀ / sqrt(d)) v per head, q, k, v read from `qkv` [B, T, 3C] as timm's
/// `Attention` splits it (`reshape(B, T, 3, heads, d)`).
pub fn self_attention(qkv: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
    if !(qkv.device().is_cpu() && qkv.dtype() == DType::F32) {
        let (out, probs) = self_attention_composite(qkv, heads)?;
        return Ok((out, probs.detach()));
    }
    let probs = Arc::new(OnceLock::new());
    let out = qkv.contiguous()?.apply_op1(SelfAttention { heads, probs: probs.clone() })?;
    let probs =
        probs.get().cloned().ok_or_else(|| candle_core::Error::Msg("self attention: no probabilities".into()))?;
    Ok((out, probs))
}

/// The same with candle's ops (and the fused softmax): the probabilities carry gradients.
pub fn self_attention_composite(qkv: &Tensor, heads: usize) -> Result<(Tensor, Tensor)> {
    let (b, t, c3) = qkv.dims3()?;
    let (c, d) = (c3 / 3, c3 / 3 / heads);
    let qkv = qkv.reshape((b, t, 3, heads, d))?.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)?.contiguous()? * (d as f64).powf(-0.5))?;
    let (k, v) = (qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
    let attn = crate::rows::softmax_last_dim(&q.matmul(&k.t()?)?)?;
    let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
    Ok((out, attn))
}

fn dims(l: &Layout, heads: usize) -> Result<(usize, usize, usize, usize)> {
    match *l.dims() {
        [b, t, c3] if heads > 0 && c3 % (3 * heads) == 0 => Ok((b, t, c3 / 3, c3 / 3 / heads)),
        _ => candle_core::bail!("self attention: qkv {:?} is not [B, T, 3 x {heads} x d]", l.dims()),
    }
}

struct SelfAttention {
    heads: usize,
    /// Written by the forward pass; read by the caller and by the backward pass.
    probs: Arc<OnceLock<Tensor>>,
}

impl CustomOp1 for SelfAttention {
    fn name(&self) -> &'static str {
        "self-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = cpu_f32(s, l, "self attention")?;
        let (b, t, c, d) = dims(l, self.heads)?;
        let heads = self.heads;
        let flops = (4 * b * t * t * c) as f64;
        let _span = crate::profile::span(|| format!("self attention forward {:?} heads {heads}", l.dims()), flops);
        let scale = (d as f32).powf(-0.5);
        let mut probs = vec![0f32; b * heads * t * t];
        // Per (image, head): its probabilities in place, its output [T, d] returned.
        let outs: Vec<Vec<f32>> = probs
            .par_chunks_mut(t * t)
            .enumerate()
            .map(|(bh, p)| {
                let (img, h) = (bh / heads, bh % heads);
                let base = &qkv[img * t * 3 * c..][..t * 3 * c];
                let (q, k, v) = (&base[h * d..], &base[c + h * d..], &base[2 * c + h * d..]);
                let ld = (3 * c) as isize;
                // scores = q kᵀ: kᵀ is k read with its strides swapped.
                matmul((t, t, d), p, t, false, (q, 1, ld), (k, ld, 1), Parallelism::None);
                for row in p.chunks_mut(t) {
                    let max = crate::rows::max(row);
                    crate::rows::exp_shifted_in_place(row, max, scale);
                    let inv = 1.0 / crate::rows::sum(row.iter().copied());
                    row.iter_mut().for_each(|s| *s *= inv);
                }
                let mut o = vec![0f32; t * d];
                matmul((t, d, t), &mut o, d, false, (p, 1, t as isize), (v, 1, ld), Parallelism::None);
                o
            })
            .collect();
        let mut out = vec![0f32; b * t * c];
        for (bh, o) in outs.iter().enumerate() {
            let (img, h) = (bh / heads, bh % heads);
            for (i, row) in o.chunks(d).enumerate() {
                out[(img * t + i) * c + h * d..][..d].copy_from_slice(row);
            }
        }
        let probs = Tensor::from_vec(probs, (b, heads, t, t), &candle_core::Device::Cpu)?;
        self.probs.set(probs).map_err(|_| candle_core::Error::Msg("self attention: run twice".into()))?;
        Ok((CpuStorage::F32(out), Shape::from((b, t, c))))
    }

    fn bwd(&self, qkv: &Tensor, _out: &Tensor, dout: &Tensor) -> Result<Option<Tensor>> {
        let probs = self
            .probs
            .get()
            .ok_or_else(|| candle_core::Error::Msg("self attention: backward before forward".into()))?;
        Ok(Some(qkv.apply_op3_no_bwd(probs, &dout.contiguous()?, &SelfAttentionGrad { heads: self.heads })?))
    }
}

/// (qkv, probabilities, d out) -> d qkv. Per head, with P the probabilities and
/// dS = P ∘ (dP - rowsum(dP ∘ P)), dP = dO vᵀ: dv = Pᵀ dO, dq = dS k / sqrt(d),
/// dk = dSᵀ q / sqrt(d).
struct SelfAttentionGrad {
    heads: usize,
}

impl CustomOp3 for SelfAttentionGrad {
    fn name(&self) -> &'static str {
        "self-attention-grad"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qkv, probs, dout) = (
            cpu_f32(s, l, "self attention grad")?,
            cpu_f32(ps, pl, "self attention grad")?,
            cpu_f32(ds, dl, "self attention grad")?,
        );
        let (b, t, c, d) = dims(l, self.heads)?;
        let heads = self.heads;
        if probs.len() != b * heads * t * t || dout.len() != b * t * c {
            candle_core::bail!(
                "self attention grad: probabilities {:?}, d out {:?} for qkv {:?}",
                pl.dims(),
                dl.dims(),
                l.dims()
            );
        }
        let flops = (8 * b * t * t * c) as f64;
        let _span = crate::profile::span(|| format!("self attention backward {:?} heads {heads}", l.dims()), flops);
        let scale = (d as f32).powf(-0.5);
        let ld = (3 * c) as isize;
        // Per (image, head): [dq; dk; dv], each [T, d].
        let grads: Vec<Vec<f32>> = (0..b * heads)
            .into_par_iter()
            .map(|bh| {
                let (img, h) = (bh / heads, bh % heads);
                let base = &qkv[img * t * 3 * c..][..t * 3 * c];
                let (q, k, v) = (&base[h * d..], &base[c + h * d..], &base[2 * c + h * d..]);
                let p = &probs[bh * t * t..][..t * t];
                let dout = &dout[img * t * c + h * d..];
                let mut g = vec![0f32; 3 * t * d];
                let (dq, rest) = g.split_at_mut(t * d);
                let (dk, dv) = rest.split_at_mut(t * d);
                matmul((t, d, t), dv, d, false, (p, t as isize, 1), (dout, 1, c as isize), Parallelism::None);
                let mut ds = vec![0f32; t * t];
                matmul((t, t, d), &mut ds, t, false, (dout, 1, c as isize), (v, ld, 1), Parallelism::None);
                for (ds, p) in ds.chunks_mut(t).zip(p.chunks(t)) {
                    let dot = crate::rows::sum(ds.iter().zip(p).map(|(g, p)| g * p));
                    ds.iter_mut().zip(p).for_each(|(g, p)| *g = p * (*g - dot) * scale);
                }
                matmul((t, d, t), dq, d, false, (&ds, 1, t as isize), (k, 1, ld), Parallelism::None);
                matmul((t, d, t), dk, d, false, (&ds, t as isize, 1), (q, 1, ld), Parallelism::None);
                g
            })
            .collect();
        let mut dqkv = vec![0f32; b * t * 3 * c];
        for (bh, g) in grads.iter().enumerate() {
            let (img, h) = (bh / heads, bh % heads);
            for (part, g) in g.chunks(t * d).enumerate() {
                for (i, row) in g.chunks(d).enumerate() {
                    dqkv[(img * t + i) * 3 * c + part * c + h * d..][..d].copy_from_slice(row);
                }
            }
        }
        Ok((CpuStorage::F32(dqkv), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn input(shape: &[usize], seed: u64) -> Tensor {
        crate::test_input(shape, seed, 4.0)
    }

    /// Output, probabilities and d qkv against the composite ops, several images and
    /// heads, a token count that is no multiple of the kernels' tiles.
    #[test]
    fn matches_the_composite_ops() {
        let (b, t, heads, d) = (3, 37, 3, 8);
        let qkv = Var::from_tensor(&input(&[b, t, 3 * heads * d], 1)).unwrap();
        let seed = input(&[b, t, heads * d], 2);
        let (out, probs) = self_attention(&qkv, heads).unwrap();
        let (out2, probs2) = self_attention_composite(&qkv, heads).unwrap();
        assert!(crate::rel_diff(&out, &out2) < 1e-5, "{}", crate::rel_diff(&out, &out2));
        assert!(crate::rel_diff(&probs, &probs2) < 1e-5);
        let g1 = (out * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (out2 * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, e) = (g1.get(&qkv).unwrap(), g2.get(&qkv).unwrap());
        assert!(crate::rel_diff(a, e) < 1e-5, "{}", crate::rel_diff(a, e));
        assert!(!probs.track_op(), "the fused probabilities carry no gradient");
    }
}

/// CPU time of the fused attention on one DeiT-S block at batch 8 (`cargo test --release
/// -p wsol-ops attention_times -- --ignored --nocapture`; `RAYON_NUM_THREADS=1` for one
/// core): process CPU time, so a busy machine's other work is not counted.
#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore]
    fn attention_times() {
        let cpu = || {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: t is a valid timespec for the call to fill.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
        };
        let best = |f: &dyn Fn()| {
            f();
            (0..7)
                .map(|_| {
                    let t = cpu();
                    f();
                    cpu() - t
                })
                .fold(f64::INFINITY, f64::min)
        };
        let qkv = candle_core::Var::from_tensor(&crate::test_input(&[8, 197, 1152], 1, 4.0)).unwrap();
        let seed = crate::test_input(&[8, 197, 384], 2, 1.0);
        let forward = best(&|| {
            self_attention(&qkv, 6).unwrap();
        });
        let both = best(&|| {
            let (out, _) = self_attention(&qkv, 6).unwrap();
            (out * &seed).unwrap().sum_all().unwrap().backward().unwrap();
        });
        println!("attention forward {:.1} ms, forward + backward {:.1} ms", forward * 1e3, both * 1e3);
    }
}
