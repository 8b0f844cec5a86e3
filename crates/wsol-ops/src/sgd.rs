//! The SGD update as two in-place passes (momentum buffer, then parameter), with
//! PyTorch's rule and the bits of the candle ops they replace. The optimizer itself
//! (parameter groups, state) lives with the trainer.

use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};

/// The in-place passes below run on contiguous f32 tensors on the CPU or (CUDA builds)
/// one GPU; the first step, which creates the momentum buffer, takes the candle ops above.
pub fn fusable(ts: &[&Tensor]) -> bool {
    let on_our_device = |t: &Tensor| t.device().is_cpu() || (cfg!(feature = "cuda") && t.device().is_cuda());
    ts.iter().all(|t| on_our_device(t) && t.dtype() == DType::F32 && t.is_contiguous())
}

/// The scalars of one update. Each product is `x * s + 0.0`, as candle's affine op
/// computes `tensor * scalar`, so the fused passes give the candle ops' bits exactly.
#[derive(Clone, Copy)]
pub struct Update {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Update {
    #[cfg(feature = "cuda")]
    fn pass(&self, step: Option<bool>) -> crate::cuda::SgdPass {
        crate::cuda::SgdPass { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay, step }
    }

    /// d = g + wd * p
    fn d(&self, g: f32, p: f32) -> f32 {
        if self.weight_decay != 0.0 {
            g + (p * self.weight_decay + 0.0)
        } else {
            g
        }
    }
}

/// buf = m * buf + d, in place on the buffer (one pass instead of four candle ops, each
/// allocating a parameter-sized tensor).
pub struct Momentum(pub Update);

/// p -= lr * (nesterov ? d + m * buf : buf), in place on the parameter, after [`Momentum`].
pub struct Step {
    pub update: Update,
    pub nesterov: bool,
}

fn slices<'a>(
    dst: &'a mut CpuStorage,
    dl: &Layout,
    a: &'a CpuStorage,
    al: &Layout,
    b: &'a CpuStorage,
    bl: &Layout,
) -> candle_core::Result<(&'a mut [f32], &'a [f32], &'a [f32])> {
    let (a, b) = (crate::cpu_f32(a, al, "sgd")?, crate::cpu_f32(b, bl, "sgd")?);
    match (dst, dl.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((s, e))) if e - s == a.len() && a.len() == b.len() => Ok((&mut v[s..e], a, b)),
        _ => candle_core::bail!("sgd: expected contiguous f32 tensors of one size on the CPU"),
    }
}

impl InplaceOp3 for Momentum {
    fn name(&self) -> &'static str {
        "sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        b: &mut CpuStorage,
        bl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        p: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<()> {
        let (buf, g, p) = slices(b, bl, g, gl, p, pl)?;
        let u = self.0;
        for ((b, &g), &p) in buf.iter_mut().zip(g).zip(p) {
            *b = (*b * u.momentum + 0.0) + u.d(g, p);
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        b: &mut candle_core::CudaStorage,
        bl: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
        p: &candle_core::CudaStorage,
        pl: &Layout,
    ) -> candle_core::Result<()> {
        self.0.pass(None).launch(b, bl, (g, gl), (p, pl))
    }
}

impl InplaceOp3 for Step {
    fn name(&self) -> &'static str {
        "sgd-step"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        pl: &Layout,
        g: &CpuStorage,
        gl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<()> {
        let (p, g, buf) = slices(p, pl, g, gl, b, bl)?;
        let u = self.update;
        for ((p, &g), &b) in p.iter_mut().zip(g).zip(buf) {
            let step = if self.nesterov { u.d(g, *p) + (b * u.momentum + 0.0) } else { b };
            *p -= step * u.lr + 0.0;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        p: &mut candle_core::CudaStorage,
        pl: &Layout,
        g: &candle_core::CudaStorage,
        gl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<()> {
        self.update.pass(Some(self.nesterov)).launch(p, pl, (g, gl), (b, bl))
    }
}
