//! ReLU whose CPU backward is one pass. candle's backward builds `x >= 0` as a byte mask,
//! converts it to floats and multiplies: three passes and two full-size allocations per
//! activation (5x the forward on VGG's first layers). Same values as candle's, including
//! its gradient at exactly 0 (passed through, as `x >= 0`).

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, InplaceOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_f32;

/// max(x, 0); the fused op on CPU f32 (and CUDA f32 in a `cuda` build), candle's elsewhere.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let ours = x.device().is_cpu() || cfg!(feature = "cuda") && x.device().is_cuda();
    if ours && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 16;

thread_local! {
    static GUIDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with guided ReLU backward on this thread (Springenberg et al. 2015): every ReLU's
/// backward, the fused ones included, passes relu(dy) where its forward passed, so negative
/// gradients stop at each ReLU (what a backward hook returning relu(grad_in) on each
/// `nn.ReLU` does; BagCAMs' authors take their gradients so). candle runs a backward pass on
/// the thread that asks for it, so a thread-local switch reaches every op of that pass.
/// ReLU6 and candle's own ReLU (non-f32 tensors) are not guided.
pub fn with_guided_relu_backward<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GUIDED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GUIDED.with(|g| g.replace(true)));
    f()
}

/// relu(dy) when this thread's ReLU backward is guided, else None (dy as it is; returning it
/// would add an owner and cost [`grad_from_output`] its in-place mask).
pub(crate) fn guided(dy: &Tensor) -> Result<Option<Tensor>> {
    if GUIDED.with(Cell::get) {
        Ok(Some(dy.relu()?))
    } else {
        Ok(None)
    }
}

/// max(a + b, 0): a residual block's sum and ReLU, one op on CPU f32 (and CUDA f32 in a
/// `cuda` build; no sum kept, one backward pass), whose gradient passes where the output
/// is > 0 (PyTorch's rule).
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ours = a.device().is_cpu() || cfg!(feature = "cuda") && a.device().is_cuda();
    if ours && a.dtype() == DType::F32 && a.shape() == b.shape() {
        a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
    } else {
        relu(&(a + b)?)
    }
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "add-relu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (cpu_f32(s1, l1, "add relu")?, cpu_f32(s2, l2, "add relu")?);
        let _span = crate::profile::span(|| format!("add + relu {:?}", &l1.dims()[1..]), 0.0);
        let y = crate::memory::par_vec(a.len(), CHUNK, |k| {
            let (a, b) = (&a[k * CHUNK..], &b[k * CHUNK..]);
            a.iter().zip(b).take(CHUNK).map(|(&a, &b)| (a + b).max(0.0))
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::add_relu_fwd(s1, l1, s2, l2)
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_from_output(dy, y)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "relu")?;
        let _span = crate::profile::span(|| format!("relu forward {:?}", &l.dims()[1..]), 0.0);
        let y = crate::memory::par_vec(x.len(), CHUNK, |k| x[k * CHUNK..].iter().take(CHUNK).map(|v| v.max(0.0)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::relu_fwd(s, l)
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = guided(dy)?.unwrap_or_else(|| dy.clone());
        Ok(Some(dy.contiguous()?.apply_op2_no_bwd(x, &ReluGrad { from_output: false })?))
    }
}

/// The gradient of a ReLU fused into the op that made `y` (f32): dy where y > 0
/// (PyTorch's rule; from the input, candle's passes x == 0 too). On the CPU, a dy that no
/// one else holds is masked in place: VGG16's first layers at batch 32 otherwise add a
/// fresh 411 MB gradient at the peak of the step.
pub fn grad_from_output(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    match guided(dy)? {
        Some(g) => mask_from_output(&g, y),
        None => mask_from_output(dy, y),
    }
}

fn mask_from_output(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    if dy.is_sole_owner() && dy.device().is_cpu() && dy.dtype() == DType::F32 && dy.is_contiguous() {
        dy.inplace_op2(&y.contiguous()?, &MaskInPlace)?;
        return Ok(dy.clone());
    }
    dy.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &ReluGrad { from_output: true })
}

/// dy := dy where y > 0, else 0 (the values of `ReluGrad { from_output: true }`).
struct MaskInPlace;

impl InplaceOp2 for MaskInPlace {
    fn name(&self) -> &'static str {
        "relu-fused-grad-in-place"
    }

    fn cpu_fwd(&self, ds: &mut CpuStorage, dl: &Layout, ys: &CpuStorage, yl: &Layout) -> Result<()> {
        let y = cpu_f32(ys, yl, "relu")?;
        let _span = crate::profile::span(|| format!("relu grad in place {:?}", &yl.dims()[1..]), 0.0);
        let (start, n) = (dl.start_offset(), dl.shape().elem_count());
        let dy = match ds {
            CpuStorage::F32(dy) if dl.is_contiguous() && n == y.len() => &mut dy[start..start + n],
            _ => candle_core::bail!("relu grad in place: dy must be contiguous f32 of y's shape"),
        };
        dy.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(g, y)| {
            // As bits: written as a select, LLVM dropped the store of g to itself and
            // branched on each sign (5x slower on ResNet-50's sums).
            g.iter_mut()
                .zip(y)
                .for_each(|(g, &y)| *g = f32::from_bits(g.to_bits() & ((y > 0.0) as u32).wrapping_neg()));
        });
        Ok(())
    }
}

/// dy where x >= 0 (or, `from_output`, where y > 0), else 0.
struct ReluGrad {
    from_output: bool,
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-fused-grad"
    }

    fn cpu_fwd(&self, ds: &CpuStorage, dl: &Layout, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (dy, x) = (cpu_f32(ds, dl, "relu")?, cpu_f32(xs, xl, "relu")?);
        let _span = crate::profile::span(|| format!("relu grad {:?}", &xl.dims()[1..]), 0.0);
        let from_output = self.from_output;
        let dx = crate::memory::par_vec(x.len(), CHUNK, |k| {
            let (g, v) = (&dy[k * CHUNK..], &x[k * CHUNK..]);
            let passes = move |v: f32| if from_output { v > 0.0 } else { v >= 0.0 };
            g.iter().zip(v).take(CHUNK).map(move |(&g, &v)| if passes(v) { g } else { 0.0 })
        });
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        if self.from_output {
            crate::cuda::relu_bwd_from_output(ds, dl, xs, xl)
        } else {
            crate::cuda::relu_bwd(ds, dl, xs, xl)
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Values and gradients equal candle's exactly, zeros included.
    #[test]
    fn equals_candle_relu_and_its_gradient() {
        check_against_candle(&Device::Cpu);
    }

    /// A gradient no one else holds is masked in place, with `ReluGrad`'s values; one that
    /// is shared (a clone kept) is left as it was.
    #[test]
    fn grad_from_output_masks_a_sole_gradient_in_place() {
        let dev = Device::Cpu;
        let y = relu(&Tensor::randn(0f32, 1., (2, 3, 9, 9), &dev).unwrap()).unwrap();
        let dy = || Tensor::randn(0f32, 1., (2, 3, 9, 9), &dev).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect =
            |d: &[f32]| d.iter().zip(flat(&y)).map(|(&g, y)| if y > 0.0 { g } else { 0.0 }).collect::<Vec<_>>();

        let sole = dy();
        let before = flat(&sole);
        assert!(sole.is_sole_owner());
        let g = grad_from_output(&sole, &y).unwrap();
        assert_eq!(flat(&g), expect(&before));
        assert_eq!(flat(&sole), flat(&g), "masked in place");

        let shared = dy();
        let kept = shared.clone();
        let g = grad_from_output(&shared, &y).unwrap();
        assert_eq!(flat(&g), expect(&flat(&kept)));
        assert_ne!(flat(&kept), flat(&g), "a shared gradient stays as it was");
    }

    /// Guided backward: each ReLU passes relu(dy) where it passed dy, through the plain and
    /// the fused (residual) ReLU and a batch norm's fused ReLU, and only inside the guard.
    #[test]
    fn guided_backward_clamps_negative_gradients_at_each_relu() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, 6, 6), &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1., (2, 3, 6, 6), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (2, 3, 6, 6), &dev).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let bn = crate::BatchNorm::new(3, 1e-5, 0.1, false, vb).unwrap();
        for fwd in 0..3 {
            let y = |x: &Tensor| match fwd {
                0 => relu(x).unwrap(),
                1 => add_relu(x, &r).unwrap(),
                _ => bn.forward_relu_t(x, false).unwrap(),
            };
            let grad =
                || (y(x.as_tensor()) * &w).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap().clone();
            let (plain, guided) = (flat(&grad()), flat(&with_guided_relu_backward(grad)));
            let passed: Vec<bool> = flat(&y(x.as_tensor())).iter().map(|&v| v > 0.0).collect();
            for ((&p, &g), (&wk, &on)) in plain.iter().zip(&guided).zip(flat(&w).iter().zip(&passed)) {
                // The batch norm (running statistics 0 and 1) scales both sides alike.
                assert_eq!(g, if wk > 0.0 { p } else { 0.0 }, "forward {fwd}: w {wk}, passed {on}");
            }
            assert!(plain.iter().zip(&guided).any(|(p, g)| p != g), "forward {fwd}: something clamped");
            assert_eq!(flat(&grad()), plain, "forward {fwd}: plain again after the guard");
        }
    }

    /// The fused residual sum and ReLU: the same bits as the sum then the ReLU, values
    /// and both gradients (random data: no sum is exactly 0).
    #[test]
    fn add_relu_equals_sum_then_relu() {
        check_add_relu(&Device::Cpu);
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn add_relu_equals_sum_then_relu_on_cuda() {
        check_add_relu(&Device::new_cuda(0).unwrap());
    }

    fn check_add_relu(dev: &Device) {
        let dev = dev.clone();
        let var = || Var::from_tensor(&Tensor::randn(0f32, 1., (2, 5, 10, 10), &dev).unwrap()).unwrap();
        let (a, b) = (var(), var());
        let w = Tensor::randn(0f32, 1., (2, 5, 10, 10), &dev).unwrap();
        let fused = add_relu(a.as_tensor(), b.as_tensor()).unwrap();
        let composed = relu(&(a.as_tensor() + b.as_tensor()).unwrap()).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&fused), flat(&composed));
        assert!(flat(&fused).contains(&0.0) && flat(&fused).iter().any(|&v| v > 0.0));
        let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (composed * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            assert_eq!(flat(g1.get(v.as_tensor()).unwrap()), flat(g2.get(v.as_tensor()).unwrap()));
        }
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn equals_candle_relu_on_cuda() {
        check_against_candle(&Device::new_cuda(0).unwrap());
    }

    fn check_against_candle(dev: &Device) {
        let dev = dev.clone();
        let mut v: Vec<f32> = Tensor::randn(0f32, 1., 1000, &Device::Cpu).unwrap().to_vec1().unwrap();
        v[3] = 0.0;
        v[7] = -0.0;
        let x = Var::from_tensor(&Tensor::from_vec(v, (2, 5, 10, 10), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1., (2, 5, 10, 10), &dev).unwrap();
        let (a, b) = (relu(x.as_tensor()).unwrap(), x.as_tensor().relu().unwrap());
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |g: &candle_core::backprop::GradStore| {
            g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(flat(&ga), flat(&gb));
    }
}
