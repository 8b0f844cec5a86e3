//! Training batch norm and per-channel bias on CUDA as our own kernels, compiled with
//! NVRTC at first use. Why: candle_nn's batch norm and `broadcast_add` chain candle's
//! strided kernels (a transpose copy, means, broadcast subtract/divide/scale/shift, and
//! as many again backward), each spending 64-bit divisions per element and dimension.
//! Here, as the CPU ops of `batch_norm.rs`, the forward is statistics + normalize and the
//! backward per-channel sums + input gradient, one pass each, the channel taken from the
//! grid. Sums are in f64, reduced in a fixed order: runs repeat exactly.

use std::sync::OnceLock;

use super::pool::Window;

use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{cudarc, CudaDevice};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Error, Layout, Result, Shape, Storage, Tensor,
};

const SRC: &str = r#"
// NVRTC has no math.h.
#define NEG_INF __int_as_float(0xff800000)

__device__ double block_sum(double v, double* sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = (int)threadIdx.x < warps ? sh[threadIdx.x] : 0.0;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) sh[32] = v;
    }
    __syncthreads();
    double total = sh[32];
    __syncthreads();
    return total;
}

// Offset of element j of channel ch, j running over (image, pixel): a block's threads
// stride over all of a channel's elements, also where a plane is smaller than the block.
// (The host checks that every tensor has fewer than 2^31 elements: 32-bit division.)
__device__ long long channel_at(int j, int ch, int c, int hw) {
    int img = j / hw;
    return ((long long)img * c + ch) * hw + (j - img * hw);
}

// One block per channel: out = [mean; 1/sqrt(var + eps); var] (biased var), in one pass:
// f64 sums of x and x^2 (f32 data: the cancellation in E[x^2] - mean^2 stays far below
// f32 precision unless |mean| / std is beyond ~1e4).
extern "C" __global__ void bn_stats(const float* x, float* out, int n, int c, int hw, float eps) {
    __shared__ double sh[33];
    int ch = blockIdx.x;
    double s = 0.0, q = 0.0;
    int len = n * hw;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        double v = (double)x[channel_at(j, ch, c, hw)];
        s += v;
        q += v * v;
    }
    double count = (double)len;
    double mean = block_sum(s, sh) / count;
    double var = fmax(block_sum(q, sh) / count - mean * mean, 0.0);
    if (threadIdx.x == 0) {
        out[ch] = (float)mean;
        out[c + ch] = (float)(1.0 / sqrt(var + (double)eps));
        out[2 * c + ch] = (float)var;
    }
}

// z = (x - mean) * invstd * gamma + beta, each step rounded alone so that the backward
// kernels recompute the forward's z bit for bit (the fused ReLU's mask).
__device__ float bn_z(float x, const float* stats, const float* gamma, const float* beta, int c, int ch) {
    return __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(x, stats[ch]), stats[c + ch]), gamma[ch]), beta[ch]);
}

// dy where the fused ReLU passed z (z >= 0, as the ReLU op's gradient), else 0.
__device__ float bn_masked_dy(float dy, int relu, float x, const float* stats, const float* gamma,
                              const float* beta, int c, int ch) {
    return relu && !(bn_z(x, stats, gamma, beta, c, ch) >= 0.0f) ? 0.0f : dy;
}

// Grid: x over a plane's pixels, y over planes (image * c + channel). With `relu`, max(z, 0).
extern "C" __global__ void bn_normalize(const float* x, const float* stats, const float* gamma,
                                        const float* beta, float* y, int c, int hw, int planes, int relu) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= hw) return;
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        int ch = plane % c;
        long long k = (long long)plane * hw + i;
        float z = bn_z(x[k], stats, gamma, beta, c, ch);
        y[k] = relu ? fmaxf(z, 0.0f) : z;
    }
}

// One block per channel: out = [sum dy; sum dy * x_hat], dy masked by the fused ReLU.
extern "C" __global__ void bn_grad_sums(const float* dy, const float* x, const float* stats, const float* gamma,
                                        const float* beta, float* out, int n, int c, int hw, int relu) {
    __shared__ double sh[33];
    int ch = blockIdx.x;
    float m = stats[ch], is = stats[c + ch];
    double a = 0.0, q = 0.0;
    for (int j = threadIdx.x; j < n * hw; j += blockDim.x) {
        long long k = channel_at(j, ch, c, hw);
        float xv = x[k];
        float g = bn_masked_dy(dy[k], relu, xv, stats, gamma, beta, c, ch);
        a += (double)g;
        q += (double)(g * ((xv - m) * is));
    }
    double sa = block_sum(a, sh);
    double sq = block_sum(q, sh);
    if (threadIdx.x == 0) {
        out[ch] = (float)sa;
        out[c + ch] = (float)sq;
    }
}

// dx = gamma * invstd / N * (N dy - sum dy - x_hat * sum dy x_hat)
extern "C" __global__ void bn_grad_input(const float* dy, const float* x, const float* gamma, const float* beta,
                                         const float* stats, const float* sums, float* dx,
                                         int c, int hw, int planes, float count, int relu) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= hw) return;
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        int ch = plane % c;
        long long k = (long long)plane * hw + i;
        float is = stats[c + ch];
        float xh = (x[k] - stats[ch]) * is;
        float g = bn_masked_dy(dy[k], relu, x[k], stats, gamma, beta, c, ch);
        dx[k] = gamma[ch] * is / count * (count * g - sums[ch] - xh * sums[c + ch]);
    }
}

extern "C" __global__ void add_channel(const float* x, const float* b, float* y, int c, int hw, int planes) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= hw) return;
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        long long k = (long long)plane * hw + i;
        y[k] = x[k] + b[plane % c];
    }
}

// One block per channel: out[ch] = sum over images and pixels.
extern "C" __global__ void channel_sum(const float* x, float* out, int n, int c, int hw) {
    __shared__ double sh[33];
    int ch = blockIdx.x;
    double s = 0.0;
    for (int j = threadIdx.x; j < n * hw; j += blockDim.x) s += (double)x[channel_at(j, ch, c, hw)];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) out[ch] = (float)s;
}

extern "C" __global__ void relu_fwd(const float* x, float* y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
        y[i] = fmaxf(x[i], 0.0f);
}

// A residual block's sum and ReLU in one pass.
extern "C" __global__ void add_relu_fwd(const float* a, const float* b, float* y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
        y[i] = fmaxf(a[i] + b[i], 0.0f);
}

// The gradient of a ReLU from its output: dy where y > 0 (PyTorch's rule).
extern "C" __global__ void relu_bwd_from_output(const float* dy, const float* y, float* dx, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// As candle's: the gradient passes where x >= 0.
extern "C" __global__ void relu_bwd(const float* dy, const float* x, float* dx, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
        dx[i] = x[i] >= 0.0f ? dy[i] : 0.0f;
}

// Index of the first maximum (PyTorch's: a NaN wins) of window (oy, ox) in plane xp, or -1.
__device__ int window_argmax(const float* xp, int h, int w, int oy, int ox, int k, int s, int p) {
    float m = NEG_INF;
    int best = -1;
    for (int i = 0; i < k; ++i) {
        int iy = oy * s - p + i;
        if (iy < 0 || iy >= h) continue;
        for (int j = 0; j < k; ++j) {
            int ix = ox * s - p + j;
            if (ix < 0 || ix >= w) continue;
            float v = xp[iy * w + ix];
            if (best < 0 || v > m || isnan(v)) {
                m = v;
                best = iy * w + ix;
                if (isnan(v)) return best;
            }
        }
    }
    return best;
}

// Max pool, window k, stride s, padding p (never the maximum); grid x over outputs of a plane.
extern "C" __global__ void max_pool_fwd(const float* x, float* y, int h, int w, int ho, int wo, int k, int s, int p,
                                        int planes) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= ho * wo) return;
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const float* xp = x + (long long)plane * h * w;
        int a = window_argmax(xp, h, w, o / wo, o % wo, k, s, p);
        y[(long long)plane * ho * wo + o] = a < 0 ? NEG_INF : xp[a];
    }
}

// Each window's first maximum (its index in the plane, or -1), for the backward pass.
extern "C" __global__ void max_pool_argmax(const float* x, int* idx, int h, int w, int ho, int wo, int k, int s, int p,
                                           int planes) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= ho * wo) return;
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y)
        idx[(long long)plane * ho * wo + o] = window_argmax(x + (long long)plane * h * w, h, w, o / wo, o % wo, k, s, p);
}

// Each input pixel gathers the gradient of the windows whose first maximum it is, from
// `max_pool_argmax`'s indices, windows in order (no atomics: the same sums every run).
extern "C" __global__ void max_pool_bwd(const int* idx, const float* dy, float* dx, int h, int w, int ho, int wo, int k,
                                        int s, int p, int planes) {
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= h * w) return;
    int iy = q / w, ix = q % w;
    int ty = iy + p - k + 1, tx = ix + p - k + 1;
    int oy0 = ty <= 0 ? 0 : (ty + s - 1) / s, ox0 = tx <= 0 ? 0 : (tx + s - 1) / s;
    int oy1 = min(ho - 1, (iy + p) / s), ox1 = min(wo - 1, (ix + p) / s);
    for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const int* ip = idx + (long long)plane * ho * wo;
        const float* gp = dy + (long long)plane * ho * wo;
        float g = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox)
                if (ip[oy * wo + ox] == q) g += gp[oy * wo + ox];
        dx[(long long)plane * h * w + q] = g;
    }
}

// Running statistics in place, as the candle ops `running * (1 - m) + (stat * scale) * m`:
// row 0 of `stats` (the mean, scale 1) or row 2 (the biased variance, scale n / (n - 1)).
extern "C" __global__ void bn_update_running(float* running, const float* stats, int c, int row, float scale,
                                             float m) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float stat = stats[row * c + ch];
    if (scale != 1.0f) stat = __fadd_rn(__fmul_rn(stat, scale), 0.0f);
    running[ch] = __fadd_rn(__fadd_rn(__fmul_rn(running[ch], 1.0f - m), 0.0f), __fadd_rn(__fmul_rn(stat, m), 0.0f));
}

// SGD with momentum, in place, as `train/optimizer.rs`'s CPU passes: each product is
// rounded alone and `+ 0` added as candle's affine op does, so the bits are the CPU's.
__device__ float sgd_d(float g, float p, float wd) {
    return wd != 0.0f ? __fadd_rn(g, __fadd_rn(__fmul_rn(p, wd), 0.0f)) : g;
}

// buf = m * buf + d
extern "C" __global__ void sgd_momentum(float* buf, const float* g, const float* p, long long n, float m, float wd) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x)
        buf[i] = __fadd_rn(__fadd_rn(__fmul_rn(buf[i], m), 0.0f), sgd_d(g[i], p[i], wd));
}

// p -= lr * (nesterov ? d + m * buf : buf)
extern "C" __global__ void sgd_step(float* p, const float* g, const float* buf, long long n, float lr, float m,
                                    float wd, int nesterov) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x) {
        float step = nesterov ? __fadd_rn(sgd_d(g[i], p[i], wd), __fadd_rn(__fmul_rn(buf[i], m), 0.0f)) : buf[i];
        p[i] = __fsub_rn(p[i], __fadd_rn(__fmul_rn(step, lr), 0.0f));
    }
}
"#;

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
    let mut out = unsafe { dev.alloc::<O>(planes as usize * pixels as usize)? };
    let f = kernel(dev, name)?;
    let stream = dev.cuda_stream();
    let mut args = stream.launch_builder(&f);
    args.arg(a);
    if let Some(g) = g {
        args.arg(g);
    }
    args.arg(&mut out).arg(&h).arg(&w).arg(&ho).arg(&wo).arg(&k).arg(&s).arg(&p).arg(&planes);
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
        let mut out = unsafe { dev.alloc::<f32>(3 * c as usize)? };
        let f = kernel(dev, "bn_stats")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&mut out).arg(&n).arg(&c).arg(&hw).arg(&self.eps);
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
            let mut y = unsafe { dev.alloc::<f32>(xl.shape().elem_count())? };
            let f = kernel(dev, "bn_normalize")?;
            let planes = n * c;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            let relu = i32::from(self.relu);
            b.arg(&x).arg(&stats).arg(&gamma).arg(&beta).arg(&mut y).arg(&c).arg(&hw).arg(&planes).arg(&relu);
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
            let mut out = unsafe { dev.alloc::<f32>(2 * c as usize)? };
            let f = kernel(dev, "bn_grad_sums")?;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            let relu = i32::from(self.0.relu);
            b.arg(&dy).arg(&x).arg(&stats).arg(&gamma).arg(&beta).arg(&mut out);
            b.arg(&n).arg(&c).arg(&hw).arg(&relu);
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
                let mut dx = unsafe { dev.alloc::<f32>(xl.shape().elem_count())? };
                let f = kernel(dev, "bn_grad_input")?;
                let planes = n * c;
                let stream = dev.cuda_stream();
                let mut b = stream.launch_builder(&f);
                let relu = i32::from(self.params.relu);
                b.arg(&dy).arg(&x).arg(&gamma).arg(&beta).arg(&stats).arg(&sums).arg(&mut dx);
                b.arg(&c).arg(&hw).arg(&planes).arg(&count).arg(&relu);
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
        let mut y = unsafe { dev.alloc::<f32>(xl.shape().elem_count())? };
        let f = kernel(dev, "add_channel")?;
        let planes = n * c;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&bias).arg(&mut y).arg(&c).arg(&hw).arg(&planes);
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
        let mut out = unsafe { dev.alloc::<f32>(c as usize)? };
        let f = kernel(dev, "channel_sum")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&mut out).arg(&n).arg(&c).arg(&hw);
        launched(unsafe { b.launch(per_channel(c)) })?;
        done(out, dev, Shape::from(c as usize))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::models::rel_diff as rel;

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
