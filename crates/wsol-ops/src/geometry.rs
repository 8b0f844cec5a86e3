//! Shapes that kernels of several devices share (so the CUDA and CPU pools need not
//! import each other).

/// A max pool's window: `k` x `k`, stride `s`, padding `p` (never the maximum), `out`
/// (rows, columns) as the caller's ceil mode gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub out: (usize, usize),
}
