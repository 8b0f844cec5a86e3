//! Losses as CPU ops where candle's composition keeps too much for the backward.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};

/// Mean binary cross-entropy with logits over the valid positions (0 when there are
/// none; the reference would give NaN). One op on CPU f32: as candle ops it kept eight
/// input-sized tensors per branch for the backward (150 MB of VGG16's peak at batch 32).
pub fn masked_bce_with_logits(logits: &Tensor, target: &Tensor, valid: &Tensor) -> candle_core::Result<Tensor> {
    let count = valid.sum_all()?.to_scalar::<f32>()? as f64;
    if count == 0.0 {
        return logits.sum_all()?.affine(0.0, 0.0);
    }
    let ours = logits.device().is_cpu() && logits.dtype() == DType::F32 && target.dtype() == DType::F32;
    if ours && valid.dtype() == DType::F32 {
        let (target, valid) = (target.detach().contiguous()?, valid.detach().contiguous()?);
        return logits.contiguous()?.apply_op3(&target, &valid, MaskedBce { count });
    }
    // max(z, 0) - z t + log(1 + exp(-|z|)), stable for any z.
    let per_pixel = ((logits.relu()? - (logits * target)?)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (per_pixel * valid)?.sum_all()? / count
}

/// sum(valid * bce(z, t)) / count for (z, t, valid) of one shape; the gradient reaches z
/// only: (sigmoid(z) - t) * valid / count.
struct MaskedBce {
    count: f64,
}

/// The (logits, target, valid) slices of a masked-BCE op's inputs.
fn bce_inputs<'a>(
    (zs, zl): (&'a CpuStorage, &Layout),
    (ts, tl): (&'a CpuStorage, &Layout),
    (vs, vl): (&'a CpuStorage, &Layout),
) -> candle_core::Result<(&'a [f32], &'a [f32], &'a [f32])> {
    let f = crate::cpu_f32;
    Ok((f(zs, zl, "masked bce")?, f(ts, tl, "masked bce")?, f(vs, vl, "masked bce")?))
}

impl CustomOp3 for MaskedBce {
    fn name(&self) -> &'static str {
        "masked-bce"
    }

    fn cpu_fwd(
        &self,
        zs: &CpuStorage,
        zl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (z, t, v) = bce_inputs((zs, zl), (ts, tl), (vs, vl))?;
        let _span = crate::profile::span(|| format!("masked bce {:?}", zl.dims()), 0.0);
        // Sums per fixed chunk, added in order: the same bits on every run.
        let chunks: Vec<f64> = (z.par_chunks(1 << 14), t.par_chunks(1 << 14), v.par_chunks(1 << 14))
            .into_par_iter()
            .map(|(z, t, v)| {
                let per_pixel = |(&z, &t): (&f32, &f32)| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
                z.iter().zip(t).zip(v).map(|(zt, &v)| (per_pixel(zt) * v) as f64).sum::<f64>()
            })
            .collect();
        let sum: f64 = chunks.iter().sum();
        Ok((CpuStorage::F32(vec![(sum / self.count) as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        z: &Tensor,
        t: &Tensor,
        v: &Tensor,
        _loss: &Tensor,
        dloss: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let scale = dloss.to_scalar::<f32>()? as f64 / self.count;
        let dz = z.apply_op3_no_bwd(t, v, &MaskedBceGrad { scale })?;
        Ok((Some(dz), None, None))
    }
}

/// (sigmoid(z) - t) * valid * scale.
struct MaskedBceGrad {
    scale: f64,
}

impl CustomOp3 for MaskedBceGrad {
    fn name(&self) -> &'static str {
        "masked-bce-grad"
    }

    fn cpu_fwd(
        &self,
        zs: &CpuStorage,
        zl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, t, v) = bce_inputs((zs, zl), (ts, tl), (vs, vl))?;
        let _span = crate::profile::span(|| format!("masked bce grad {:?}", zl.dims()), 0.0);
        let scale = self.scale as f32;
        const CHUNK: usize = 1 << 14;
        let dz = crate::memory::par_vec(z.len(), CHUNK, |k| {
            let at = k * CHUNK;
            let (z, t, v) = (&z[at..], &t[at..], &v[at..]);
            z.iter().zip(t).zip(v).take(CHUNK).map(move |((&z, &t), &v)| (1.0 / (1.0 + (-z).exp()) - t) * v * scale)
        });
        Ok((CpuStorage::F32(dz), zl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// The CPU op against the candle composition it replaces: value and logits gradient,
    /// over chunk boundaries, with large logits (the stable form) and ignored pixels.
    #[test]
    fn fused_masked_bce_equals_the_composition() {
        let dev = Device::Cpu;
        let n = 3 * (1 << 14) + 77;
        let z = candle_core::Var::from_tensor(&(Tensor::randn(0f32, 4., (2, n / 2 + 1), &dev).unwrap())).unwrap();
        let t = Tensor::rand(0f32, 1., z.shape(), &dev).unwrap().ge(0.5).unwrap().to_dtype(DType::F32).unwrap();
        let v = Tensor::rand(0f32, 1., z.shape(), &dev).unwrap().ge(0.3).unwrap().to_dtype(DType::F32).unwrap();
        let fused = masked_bce_with_logits(z.as_tensor(), &t, &v).unwrap();
        let count = v.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let zt = z.as_tensor();
        let per_pixel = ((zt.relu().unwrap() - (zt * &t).unwrap()).unwrap()
            + (zt.abs().unwrap().neg().unwrap().exp().unwrap() + 1.0).unwrap().log().unwrap())
        .unwrap();
        let plain = ((per_pixel * &v).unwrap().sum_all().unwrap() / count).unwrap();
        let (a, b) = (fused.to_scalar::<f32>().unwrap(), plain.to_scalar::<f32>().unwrap());
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        let grad = |l: Tensor| (l * 3.0).unwrap().backward().unwrap().get(zt).unwrap().clone();
        let d = crate::rel_diff(&grad(fused), &grad(plain));
        assert!(d < 1e-5, "logits gradient {d:e}");
    }

    #[test]
    fn masked_bce_by_hand() {
        let z = Tensor::new(&[[0f32, 2.0, -1.0]], &Device::Cpu).unwrap();
        let t = Tensor::new(&[[1f32, 0.0, 0.0]], &Device::Cpu).unwrap();
        let v = Tensor::new(&[[1f32, 1.0, 0.0]], &Device::Cpu).unwrap();
        let got: f32 = masked_bce_with_logits(&z, &t, &v).unwrap().to_scalar().unwrap();
        let want = ((2f32).ln() + (1.0 + 2f32.exp()).ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let none: f32 = masked_bce_with_logits(&z, &t, &v.zeros_like().unwrap()).unwrap().to_scalar().unwrap();
        assert_eq!(none, 0.0);
    }
}
