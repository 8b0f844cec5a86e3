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
