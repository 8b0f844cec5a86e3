//! Training batch norm and per-channel bias on CUDA as our own kernels, compiled with
//! NVRTC at first use. Why: candle_nn's batch norm and `broadcast_add` chain candle's
//! strided kernels (a transpose copy, means, broadcast subtract/divide/scale/shift, and
//! as many again backward), each spending 64-bit divisions per element and dimension.
//! Here, as the CPU ops of `batch_norm.rs`, the forward is statistics + normalize and the
//! backward per-channel sums + input gradient, one pass each, the channel taken from the
//! grid. Sums are in f64, reduced in a fixed order: runs repeat exactly.

use std::sync::OnceLock;

use crate::geometry::Window;

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{cudarc, CudaDevice};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Storage, Tensor,
};

/// The kernels, compiled by NVRTC at first use.
const SRC: &str = include_str!("channel_ops.cu");

/// Threads of the per-channel reductions.
const REDUCE_THREADS: u32 = 1024;
/// Threads along a plane of the elementwise kernels.
const MAP_THREADS: u32 = 256;

fn kernel(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    let ptx = PTX.get_or_init(|| cudarc::nvrtc::compile_ptx(SRC).map(|p| p.to_src()).map_err(|e| e.to_string()));
    let ptx = ptx.as_ref().map_err(|e| Error::Msg(format!("compiling the channel kernels with NVRTC: {e}")))?;
    Ok(dev.get_or_load_custom_func(name, "wsol_channel_ops", ptx)?.into_cuda_function())
}

/// The f32 elements of a contiguous operand.
pub(crate) fn view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f32>> {
    if !l.is_contiguous() {
        candle_core::bail!("CUDA op: operand not contiguous");
    }
    Ok(s.as_cuda_slice::<f32>()?.slice(l.start_offset()..l.start_offset() + l.shape().elem_count()))
}

/// (images, channels, pixels per plane) of a [B, C, H, W] layout, as kernel ints.
fn nchw(l: &Layout) -> Result<(i32, i32, i32)> {
    let (b, c, h, w) = l.shape().dims4()?;
    if b * c * h * w >= i32::MAX as usize {
        candle_core::bail!("channel op: tensor of {} elements is too large", b * c * h * w);
    }
    Ok((b as i32, c as i32, (h * w) as i32))
}

fn per_channel(c: i32) -> LaunchConfig {
    LaunchConfig { grid_dim: (c as u32, 1, 1), block_dim: (REDUCE_THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// One thread per element of `n` (grid-striding kernels: at most 8 x 65535 blocks).
fn per_element(n: usize) -> LaunchConfig {
    let blocks = (n as u64).div_ceil(MAP_THREADS as u64).min(65_535 * 8) as u32;
    LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (MAP_THREADS, 1, 1), shared_mem_bytes: 0 }
}

fn per_pixel(planes: i32, hw: i32) -> LaunchConfig {
    let x = (hw as u32).div_ceil(MAP_THREADS);
    LaunchConfig { grid_dim: (x, (planes as u32).min(65_535), 1), block_dim: (MAP_THREADS, 1, 1), shared_mem_bytes: 0 }
}

fn launched(
    r: std::result::Result<Option<(cudarc::driver::CudaEvent, cudarc::driver::CudaEvent)>, cudarc::driver::DriverError>,
) -> Result<()> {
    r.map(|_| ()).map_err(Error::wrap)
}

/// A tensor held by an op (statistics, sums), read on the device.
fn held(t: &Tensor, f: impl FnOnce(CudaView<'_, f32>) -> Result<(CudaStorage, Shape)>) -> Result<(CudaStorage, Shape)> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cuda(s) => f(view(s, l)?),
        _ => candle_core::bail!("channel op: statistics not on the GPU"),
    }
}

fn done(out: CudaSlice<f32>, dev: &CudaDevice, shape: Shape) -> Result<(CudaStorage, Shape)> {
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
}

fn no_cpu() -> Result<(CpuStorage, Shape)> {
    candle_core::bail!("CUDA channel op on CPU tensors")
}

/// Batch norm in training mode on CUDA f32 `x` [B, C, H, W] with `gamma`, `beta` [C],
/// updating the running mean and variance (unbiased, PyTorch's) in place with `momentum`:
/// one kernel each instead of five candle ops.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    (running_mean, running_var, momentum): (&Tensor, &Tensor, f64),
    relu: bool,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&Stats { eps: eps as f32 })?;
    let (b, _, h, w) = x.dims4()?;
    let n = (b * h * w) as f64;
    let m = momentum as f32;
    running_mean.inplace_op2(&stats, &UpdateRunning { row: 0, scale: 1.0, momentum: m })?;
    let unbias = (n / (n - 1.0).max(1.0)) as f32;
    running_var.inplace_op2(&stats, &UpdateRunning { row: 2, scale: unbias, momentum: m })?;
    x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, Normalize { stats, relu })
}

/// running = running * (1 - m) + (stats[row] * scale) * m, in place.
struct UpdateRunning {
    row: i32,
    scale: f32,
    momentum: f32,
}

impl candle_core::InplaceOp2 for UpdateRunning {
    fn name(&self) -> &'static str {
        "batch-norm-running-stats-cuda"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        candle_core::bail!("CUDA channel op on CPU tensors")
    }

    fn cuda_fwd(&self, rs: &mut CudaStorage, rl: &Layout, ss: &CudaStorage, sl: &Layout) -> Result<()> {
        let c = rl.shape().elem_count();
        if !rl.is_contiguous() || sl.shape().dims() != [3, c] {
            candle_core::bail!("batch norm: running statistics of {c} channels against statistics {:?}", sl.shape());
        }
        let dev = rs.device.clone();
        let stats = view(ss, sl)?;
        let start = rl.start_offset();
        let mut running = rs.as_cuda_slice_mut::<f32>()?.slice_mut(start..start + c);
        let f = kernel(&dev, "bn_update_running")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        let c = c as i32;
        b.arg(&mut running).arg(&stats).arg(&c).arg(&self.row).arg(&self.scale).arg(&self.momentum);
        // SAFETY: the arguments match `bn_update_running` in channel_ops.cu; `running` holds `c` floats and
        // `stats` 3 x `c` (both checked above), and threads past `c` return.
        launched(unsafe { b.launch(per_element(c as usize)) })
    }
}

/// `x` [B, C, H, W] + `b` [C] per channel, on CUDA f32.
pub fn add_channel_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&b.contiguous()?, ChannelBias)
}

/// ReLU forward (`relu.rs`'s op on the GPU).
pub(crate) fn relu_fwd(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    elementwise("relu_fwd", s, l, None)
}

/// ReLU backward: `dy` where `x >= 0`.
pub(crate) fn relu_bwd(ds: &CudaStorage, dl: &Layout, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
    elementwise("relu_bwd", ds, dl, Some((xs, xl)))
}

/// max(a + b, 0) (`relu.rs`'s fused residual sum and ReLU on the GPU).
pub(crate) fn add_relu_fwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    elementwise("add_relu_fwd", s1, l1, Some((s2, l2)))
}

/// ReLU backward from the output: `dy` where `y > 0`.
pub(crate) fn relu_bwd_from_output(
    ds: &CudaStorage,
    dl: &Layout,
    ys: &CudaStorage,
    yl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    elementwise("relu_bwd_from_output", ds, dl, Some((ys, yl)))
}

/// A one-pass kernel over `n` elements: (a[, b]) -> out.
fn elementwise(
    name: &str,
    s: &CudaStorage,
    l: &Layout,
    b: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    let dev = &s.device;
    let n = l.shape().elem_count();
    let a = view(s, l)?;
    let b = b.map(|(s, l)| view(s, l)).transpose()?;
    // SAFETY: uninitialized, but the grid-striding kernel below writes all `n` elements before any read.
    let mut out = unsafe { dev.alloc::<f32>(n)? };
    let f = kernel(dev, name)?;
    let stream = dev.cuda_stream();
    let mut args = stream.launch_builder(&f);
    args.arg(&a);
    if let Some(b) = &b {
        args.arg(b);
    }
    let n64 = n as i64;
    args.arg(&mut out).arg(&n64);
    // SAFETY: the arguments match the kernels' `(a[, b], out, long long n)`; `a` and `out` hold `n` floats,
    // and so must `b`: every caller passes a tensor of `a`'s shape (not checked here).
    launched(unsafe { args.launch(per_element(n)) })?;
    done(out, dev, l.shape().clone())
}

/// One in-place SGD pass over contiguous f32 `dst` with the operands `a`, `b` (the
/// kernels' order): `sgd_momentum(buf; g, p)` or `sgd_step(p; g, buf)`.
pub(crate) struct SgdPass {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// `None` for the momentum pass, `Some(nesterov)` for the step.
    pub step: Option<bool>,
}

impl SgdPass {
    pub(crate) fn launch(
        &self,
        dst: &mut CudaStorage,
        dl: &Layout,
        a: (&CudaStorage, &Layout),
        b: (&CudaStorage, &Layout),
    ) -> Result<()> {
        let n = dl.shape().elem_count();
        let (a, b) = (view(a.0, a.1)?, view(b.0, b.1)?);
        if !dl.is_contiguous() || a.len() != n || b.len() != n {
            candle_core::bail!("sgd: expected contiguous f32 tensors of one size on the GPU");
        }
        let dev = dst.device.clone();
        let f = kernel(&dev, if self.step.is_some() { "sgd_step" } else { "sgd_momentum" })?;
        let start = dl.start_offset();
        let mut d = dst.as_cuda_slice_mut::<f32>()?.slice_mut(start..start + n);
        let stream = dev.cuda_stream();
        let mut args = stream.launch_builder(&f);
        let n64 = n as i64;
        args.arg(&mut d).arg(&a).arg(&b).arg(&n64);
        let nesterov = self.step.map(i32::from);
        match &nesterov {
            None => args.arg(&self.momentum).arg(&self.weight_decay),
            Some(nesterov) => args.arg(&self.lr).arg(&self.momentum).arg(&self.weight_decay).arg(nesterov),
        };
        // SAFETY: the arguments match `sgd_momentum` / `sgd_step` in channel_ops.cu, and `d`, `a`, `b` all hold
        // `n` floats (checked above); the grid-striding loops stay below `n`.
        launched(unsafe { args.launch(per_element(n)) })
    }
}

/// Forward of [`super::pool`]'s max pool: PyTorch's, window, stride and padding (never
/// the maximum) from `win`.
pub(crate) fn max_pool_fwd(win: Window, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let (b, c, _, _) = l.shape().dims4()?;
    let shape = Shape::from((b, c, win.out.0, win.out.1));
    let y = launch_max_pool::<f32, f32>(win, "max_pool_fwd", &s.device, (&view(s, l)?, l), None)?;
    done(y, &s.device, shape)
}

/// Its input gradient from (x, dy): each window's gradient to its first maximum. The
/// windows' maxima are found once, then each input pixel reads the indices of the
/// windows it is in (searching every window again per pixel was 4x the work for 3x3
/// windows at stride 2: ~1 ms of a ResNet-18 step at batch 32 on an H200).
pub(crate) fn max_pool_bwd(
    win: Window,
    xs: &CudaStorage,
    xl: &Layout,
    ds: &CudaStorage,
    dl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = &xs.device;
    let idx = launch_max_pool::<f32, i32>(win, "max_pool_argmax", dev, (&view(xs, xl)?, xl), None)?;
    let dx = launch_max_pool::<i32, f32>(win, "max_pool_bwd", dev, (&idx.as_view(), xl), Some(&view(ds, dl)?))?;
    done(dx, dev, xl.shape().clone())
}

/// Launches `name` on (`a`, the layout of x) per plane: over the output pixels, or,
/// given the output gradient `g`, over the input pixels, into a new buffer of that size.
fn launch_max_pool<A: cudarc::driver::DeviceRepr, O: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    win: Window,
    name: &str,
    dev: &CudaDevice,
    (a, xl): (&CudaView<'_, A>, &Layout),
    g: Option<&CudaView<'_, f32>>,
) -> Result<CudaSlice<O>> {
    let (n, c, _) = nchw(xl)?;
    let (_, _, h, w) = xl.shape().dims4()?;
    let (h, w) = (h as i32, w as i32);
    let (k, s, p) = (win.k as i32, win.s as i32, win.p as i32);
    let (ho, wo) = (win.out.0 as i32, win.out.1 as i32);
    let planes = n * c;
    let pixels = if g.is_some() { h * w } else { ho * wo };
    // SAFETY: uninitialized, but the kernel below writes each of the `pixels` elements of every plane.
    let mut out = unsafe { dev.alloc::<O>(planes as usize * pixels as usize)? };
    let f = kernel(dev, name)?;
    let stream = dev.cuda_stream();
    let mut args = stream.launch_builder(&f);
    args.arg(a);
    if let Some(g) = g {
        args.arg(g);
    }
    args.arg(&mut out).arg(&h).arg(&w).arg(&ho).arg(&wo).arg(&k).arg(&s).arg(&p).arg(&planes);
    // SAFETY: the arguments match the `max_pool_*` kernels; `a` holds `planes` planes of x (h x w) or of the
    // argmax indices (ho x wo), `g` dy of the output's shape, `out` `planes` x `pixels`; the callers' stride >= 1.
    launched(unsafe { args.launch(per_pixel(planes, pixels)) })?;
    Ok(out)
}

/// x [B, C, H, W] -> [3, C]: mean, 1/sqrt(var + eps), biased var.
struct Stats {
    eps: f32,
}

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "batch-norm-stats-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        no_cpu()
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s.device;
        let (n, c, hw) = nchw(l)?;
        let x = view(s, l)?;
        // SAFETY: uninitialized, but `bn_stats` writes all 3 x `c` (rows 0-2 of each block's channel).
        let mut out = unsafe { dev.alloc::<f32>(3 * c as usize)? };
        let f = kernel(dev, "bn_stats")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&mut out).arg(&n).arg(&c).arg(&hw).arg(&self.eps);
        // SAFETY: the arguments match `bn_stats`; `x` holds `n` x `c` x `hw` floats, `out` 3 x `c`, one block
        // per channel.
        launched(unsafe { b.launch(per_channel(c)) })?;
        done(out, dev, Shape::from((3, c as usize)))
    }
}

/// (x, gamma, beta) -> z = (x - mean) * invstd * gamma + beta, or max(z, 0) with `relu`.
struct Normalize {
    stats: Tensor,
    relu: bool,
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "batch-norm-train-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        no_cpu()
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let (n, c, hw) = nchw(xl)?;
        let (x, gamma, beta) = (view(xs, xl)?, view(gs, gl)?, view(bs, bl)?);
        held(&self.stats, |stats| {
            // SAFETY: uninitialized, but `bn_normalize` writes each of the `hw` pixels of every plane.
            let mut y = unsafe { dev.alloc::<f32>(xl.shape().elem_count())? };
            let f = kernel(dev, "bn_normalize")?;
            let planes = n * c;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            let relu = i32::from(self.relu);
            b.arg(&x).arg(&stats).arg(&gamma).arg(&beta).arg(&mut y).arg(&c).arg(&hw).arg(&planes).arg(&relu);
            // SAFETY: the arguments match `bn_normalize`; `x` and `y` hold `planes` x `hw` floats, `stats` 3 x `c`
            // (`Stats` of this x); `gamma` and `beta` must hold `c` (the layer's [C] parameters, not checked here).
            launched(unsafe { b.launch(per_pixel(planes, hw)) })?;
            done(y, dev, xl.shape().clone())
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let params = Params { stats: self.stats.clone(), gamma: gamma.clone(), beta: beta.clone(), relu: self.relu };
        let sums = dy.apply_op2_no_bwd(x, &GradSums(params.clone()))?;
        let dx = dy.apply_op2_no_bwd(x, &GradInput { params, sums: sums.clone() })?;
        Ok((Some(dx), Some(sums.get(1)?), Some(sums.get(0)?)))
    }
}

/// What the backward kernels read besides (dy, x): the batch's statistics, gamma and beta
/// (to recompute z for the fused ReLU's mask) and whether the ReLU is fused.
#[derive(Clone)]
struct Params {
    stats: Tensor,
    gamma: Tensor,
    beta: Tensor,
    relu: bool,
}

impl Params {
    /// Runs `f` on the device views of (stats, gamma, beta).
    fn with<R>(
        &self,
        f: impl FnOnce(CudaView<'_, f32>, CudaView<'_, f32>, CudaView<'_, f32>) -> Result<R>,
    ) -> Result<R> {
        let (s, sl) = self.stats.storage_and_layout();
        let (g, gl) = self.gamma.storage_and_layout();
        let (b, bl) = self.beta.storage_and_layout();
        match (&*s, &*g, &*b) {
            (Storage::Cuda(s), Storage::Cuda(g), Storage::Cuda(b)) => f(view(s, sl)?, view(g, gl)?, view(b, bl)?),
            _ => candle_core::bail!("batch norm: statistics or parameters not on the GPU"),
        }
    }
}

/// (dy, x) -> [2, C]: sum dy, sum dy * x_hat (dy masked by the fused ReLU).
struct GradSums(Params);

impl CustomOp2 for GradSums {
    fn name(&self) -> &'static str {
        "batch-norm-grad-sums-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        no_cpu()
    }

    fn cuda_fwd(&self, ds: &CudaStorage, dl: &Layout, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &ds.device;
        let (n, c, hw) = nchw(xl)?;
        let (dy, x) = (view(ds, dl)?, view(xs, xl)?);
        self.0.with(|stats, gamma, beta| {
            // SAFETY: uninitialized, but `bn_grad_sums` writes both rows of every channel.
            let mut out = unsafe { dev.alloc::<f32>(2 * c as usize)? };
            let f = kernel(dev, "bn_grad_sums")?;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            let relu = i32::from(self.0.relu);
            b.arg(&dy).arg(&x).arg(&stats).arg(&gamma).arg(&beta).arg(&mut out);
            b.arg(&n).arg(&c).arg(&hw).arg(&relu);
            // SAFETY: the arguments match `bn_grad_sums`; `dy` (the output's gradient) and `x` hold `n` x `c` x `hw`
            // floats, `stats` 3 x `c`, `gamma` and `beta` `c`, `out` 2 x `c`; one block per channel.
            launched(unsafe { b.launch(per_channel(c)) })?;
            done(out, dev, Shape::from((2, c as usize)))
        })
    }
}

/// (dy, x) -> dx (dy masked by the fused ReLU).
struct GradInput {
    params: Params,
    sums: Tensor,
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "batch-norm-grad-input-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        no_cpu()
    }

    fn cuda_fwd(&self, ds: &CudaStorage, dl: &Layout, xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &ds.device;
        let (n, c, hw) = nchw(xl)?;
        let (dy, x) = (view(ds, dl)?, view(xs, xl)?);
        let count = (n as f64 * hw as f64) as f32;
        self.params.with(|stats, gamma, beta| {
            held(&self.sums, |sums| {
                // SAFETY: uninitialized, but `bn_grad_input` writes each of the `hw` pixels of every plane.
                let mut dx = unsafe { dev.alloc::<f32>(xl.shape().elem_count())? };
                let f = kernel(dev, "bn_grad_input")?;
                let planes = n * c;
                let stream = dev.cuda_stream();
                let mut b = stream.launch_builder(&f);
                let relu = i32::from(self.params.relu);
                b.arg(&dy).arg(&x).arg(&gamma).arg(&beta).arg(&stats).arg(&sums).arg(&mut dx);
                b.arg(&c).arg(&hw).arg(&planes).arg(&count).arg(&relu);
                // SAFETY: the arguments match `bn_grad_input`; `dy`, `x` and `dx` hold `planes` x `hw` floats,
                // `stats` 3 x `c`, `sums` 2 x `c`, `gamma` and `beta` `c`.
                launched(unsafe { b.launch(per_pixel(planes, hw)) })?;
                done(dx, dev, xl.shape().clone())
            })
        })
    }
}

/// (x, b) -> x + b per channel; gradients dy and its per-channel sums.
struct ChannelBias;

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "channel-bias-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        no_cpu()
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, bs: &CudaStorage, bl: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let (n, c, hw) = nchw(xl)?;
        let (x, bias) = (view(xs, xl)?, view(bs, bl)?);
        // SAFETY: uninitialized, but `add_channel` writes each of the `hw` pixels of every plane.
        let mut y = unsafe { dev.alloc::<f32>(xl.shape().elem_count())? };
        let f = kernel(dev, "add_channel")?;
        let planes = n * c;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&bias).arg(&mut y).arg(&c).arg(&hw).arg(&planes);
        // SAFETY: the arguments match `add_channel`; `x` and `y` hold `planes` x `hw` floats, and `bias` must
        // hold `c` (the conv's [c_out] bias, not checked here).
        launched(unsafe { b.launch(per_pixel(planes, hw)) })?;
        done(y, dev, xl.shape().clone())
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = dy.contiguous()?.apply_op1_no_bwd(&ChannelSum)?;
        Ok((Some(dy.clone()), Some(db)))
    }
}

/// x [B, C, H, W] -> [C], summed over images and pixels.
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "channel-sum-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        no_cpu()
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let dev = &s.device;
        let (n, c, hw) = nchw(l)?;
        let x = view(s, l)?;
        // SAFETY: uninitialized, but `channel_sum` writes one sum per channel, all `c`.
        let mut out = unsafe { dev.alloc::<f32>(c as usize)? };
        let f = kernel(dev, "channel_sum")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&mut out).arg(&n).arg(&c).arg(&hw);
        // SAFETY: the arguments match `channel_sum`; `x` holds `n` x `c` x `hw` floats, `out` `c`, one block
        // per channel.
        launched(unsafe { b.launch(per_channel(c)) })?;
        done(out, dev, Shape::from(c as usize))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::rel_diff as rel;

    /// The kernels compile (NVRTC needs no GPU).
    #[test]
    fn kernels_compile_with_nvrtc() {
        cudarc::nvrtc::compile_ptx(SRC).unwrap();
    }

    /// The bias op and both its gradients against `broadcast_add` on the same GPU (batch
    /// norm is checked through its layer, in `batch_norm.rs`).
    #[test]
    fn channel_bias_matches_broadcast_add_on_cuda() {
        let dev = Device::new_cuda(0).unwrap();
        for (b, c, h, w) in [(2usize, 3usize, 5usize, 7usize), (4, 16, 9, 9), (3, 8, 1, 1)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, c, h, w), &dev).unwrap()).unwrap();
            let bias = Var::from_tensor(&Tensor::randn(0f32, 1., c, &dev).unwrap()).unwrap();
            let ours = add_channel_bias(x.as_tensor(), bias.as_tensor()).unwrap();
            let theirs = x.as_tensor().broadcast_add(&bias.as_tensor().reshape((1, c, 1, 1)).unwrap()).unwrap();
            let what = format!("{b}x{c}x{h}x{w}");
            assert!(rel(&ours, &theirs) < 1e-6, "bias {what}");
            let wts = Tensor::randn(0f32, 1., theirs.shape(), &dev).unwrap();
            let g1 = (ours * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", &x), ("bias", &bias)] {
                let (a, e) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                assert!(rel(a, e) < 1e-5, "{name} gradient {what}: {}", rel(a, e));
            }
        }
    }
}
