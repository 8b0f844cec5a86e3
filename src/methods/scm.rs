//! SCM, the spatial calibration module (Bai et al., ECCV 2022), as its authors' `SCM`
//! (164140757/SCM, lib/models/deit.py and graphFusion.py): TS-CAM's network (a 3x3 conv
//! `head` on the patch tokens; the class token's attention to the patches, head-mean,
//! summed over blocks) with calibration layers that run in training only.
//!
//! Training: the attention map, min-max normalized per image, and the semantic maps go
//! through `layers` calibration layers; the logits are the GAP of the calibrated maps and
//! the loss is their cross-entropy (tools_cam/train_cam.py). Nothing is detached, so the
//! loss reaches the transformer's attention through the calibration. Each layer:
//!
//! ```text
//! S    = cosine similarity of the positions' class-score vectors    [B, N, N]
//! X    = L (.) (loss_rate * S - 1)     L: 4-neighbour grid Laplacian D - A
//! F    = (Newton-Schulz inverse of X)^T     start alpha X^T (no gradient), k iterations
//! a'   = minmax(tanhshrink((F a) / (thred * max a)))
//! maps += maps * a';  a += a'
//! ```
//!
//! Inference drops the layers: the logits are the GAP of the uncalibrated semantic maps
//! and the map is minmax(attention map) times the class's semantic map.
//!
//! Where the code differs from the paper's description, we follow the code: the
//! similarity is taken between the K-channel class-score vectors of the semantic maps (the
//! conv head's output), where the abstract speaks of the patch tokens' similarities; the
//! diffusion's inverse is a fixed number of Newton-Schulz steps (16 in the first layer, 4
//! after), not an exact inverse. Their `Fuse` builds the
//! Laplacian for a 14x14 grid only (the model runs at 224 alone); here it is built for the
//! input's token grid, the same at 224. Their `_loss_rate` is read inside `torch.no_grad()`
//! but through `.to(device)`, which returns the parameter itself, so it does train, and so
//! it does here. A constant map's min-max is 0 here where theirs divides by zero.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{Conv2dConfig, VarBuilder};

use wsol_ops::conv::{conv2d_layer as conv2d, Conv2d};

use crate::config::ScmConfig;
use crate::models::{class_map, minmax_rows, Backbone, Deit, Output, WsolModel};

use super::tscam::agnostic_map;

/// One calibration layer's learned scalars (their `Encoder.thred`, `Fuse._loss_rate`).
struct Layer {
    thred: Tensor,
    loss_rate: Tensor,
    iterations: usize,
}

pub struct ScmHead {
    backbone: Box<dyn Backbone>,
    head: Conv2d,
    layers: Vec<Layer>,
    alpha: f64,
}

impl ScmHead {
    pub fn new(
        backbone: Box<dyn Backbone>,
        num_classes: usize,
        cfg: &ScmConfig,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let head = conv2d(backbone.out_channels(), num_classes, 3, pad1, vb.pp("head"))?;
        let layers = (0..cfg.layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(Layer {
                    thred: vb.get(1, "thred")?,
                    loss_rate: vb.get(1, "fuse._loss_rate")?,
                    iterations: if i == 0 { cfg.first_iterations } else { cfg.iterations },
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(ScmHead { backbone, head, layers, alpha: cfg.schulz_alpha })
    }

    fn deit(&self) -> &Deit {
        self.backbone.transformer().expect("SCM is built on a transformer (checked in methods::build)")
    }
}

/// The authors' initial values of the calibration scalars (`models::init` zeroes 1-D
/// tensors that are not weights).
pub fn initialize(varmap: &candle_nn::VarMap, cfg: &ScmConfig, device: &Device) -> anyhow::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    for (name, var) in data.iter().filter(|(n, _)| n.starts_with("layers.")) {
        let value = if name.ends_with(".thred") { cfg.threshold } else { cfg.loss_rate };
        var.set(&Tensor::from_vec(vec![value as f32], 1, device)?)?;
    }
    Ok(())
}

/// Laplacian D - A of the 4-neighbour graph of an h x w grid, positions row-major:
/// [h*w, h*w] (graphFusion.py `Fuse.getLap`, num_connect 4, dilation 1).
pub fn laplacian(h: usize, w: usize, device: &Device) -> candle_core::Result<Tensor> {
    let n = h * w;
    let mut m = vec![0f32; n * n];
    for r in 0..h {
        for c in 0..w {
            let i = r * w + c;
            let neighbours = [
                (r > 0).then(|| i - w),
                (r + 1 < h).then(|| i + w),
                (c > 0).then(|| i - 1),
                (c + 1 < w).then(|| i + 1),
            ];
            for j in neighbours.into_iter().flatten() {
                m[i * n + j] = -1.0;
                m[i * n + i] += 1.0;
            }
        }
    }
    Tensor::from_vec(m, (n, n), device)
}

/// Newton-Schulz approximation of the inverse of each of `x` [B, N, N]:
/// V <- V (2I - X V) from V = alpha X^T, the start outside the graph as theirs.
fn inverse_schulz(x: &Tensor, iterations: usize, alpha: f64) -> candle_core::Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    let two_eye = (Tensor::eye(n, x.dtype(), x.device())? * 2.0)?;
    let mut inv = (x.transpose(1, 2)?.contiguous()? * alpha)?.detach();
    for _ in 0..iterations {
        inv = inv.matmul(&two_eye.broadcast_sub(&x.matmul(&inv)?)?)?;
    }
    Ok(inv)
}

impl Layer {
    /// `maps` [B, K, h, w], `cam` [B, N] -> both calibrated (their `Encoder.forward`).
    fn forward(&self, maps: &Tensor, cam: &Tensor, lap: &Tensor, alpha: f64) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, k, h, w) = maps.dims4()?;
        let tokens = maps.reshape((b, k, h * w))?.transpose(1, 2)?.contiguous()?;
        let dot = tokens.matmul(&tokens.t()?)?;
        let norm = tokens.sqr()?.sum(D::Minus1)?.sqrt()?;
        let sim = dot.broadcast_div(&norm.unsqueeze(2)?.broadcast_mul(&norm.unsqueeze(1)?)?)?;
        let x = lap.broadcast_mul(&(sim.broadcast_mul(&self.loss_rate)? - 1.0)?)?;
        let fused = inverse_schulz(&x, self.iterations, alpha)?.transpose(1, 2)?.contiguous()?;
        let out = fused.matmul(&cam.unsqueeze(2)?)?.squeeze(2)?;
        let thred = cam.max_keepdim(1)?.broadcast_mul(&self.thred)?;
        let v = out.broadcast_div(&thred)?;
        let out = minmax_rows(&(&v - v.tanh()?)?)?;
        let maps = (maps + maps.broadcast_mul(&out.reshape((b, 1, h, w))?)?)?;
        Ok((maps, (cam + out)?))
    }
}

impl WsolModel for ScmHead {
    /// Training: `class_maps` are the calibrated maps (the logits their GAP), `aux[0]` the
    /// calibrated attention map [B, 1, h, w]. Evaluation: the semantic maps and the
    /// min-max normalized attention map.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Output> {
        // In training the loss reaches the attention through the calibration: the
        // attention probabilities must carry gradients.
        let tokens = self.deit().forward_tokens_with(x, train, train)?;
        let features = Deit::grid(&tokens.tokens)?;
        let mut maps = self.head.forward(&features)?;
        let (b, _, h, w) = features.dims4()?;
        let mut cam = minmax_rows(&agnostic_map(&tokens.attention, h, w)?.reshape((b, h * w))?)?;
        if train {
            let lap = laplacian(h, w, x.device())?.to_dtype(x.dtype())?;
            for layer in &self.layers {
                (maps, cam) = layer.forward(&maps, &cam, &lap, self.alpha)?;
            }
        } else {
            cam = cam.detach();
        }
        let logits = maps.mean(D::Minus1)?.mean(D::Minus1)?;
        Ok(Output { logits, features, class_maps: Some(maps), aux: vec![cam.reshape((b, 1, h, w))?] })
    }

    fn loss(&self, out: &Output, labels: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::loss::cross_entropy(&out.logits, labels)
    }

    fn cam(&self, out: &Output, targets: &Tensor) -> candle_core::Result<Tensor> {
        let maps = out.class_maps.as_ref().expect("SCM's forward gives class maps").detach();
        class_map(&maps.broadcast_mul(&out.aux[0])?, targets)
    }

    fn is_new_layer(&self, var_name: &str) -> bool {
        var_name.starts_with("head.") || var_name.starts_with("layers.")
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    fn logits_from_features(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward(features)?.mean(D::Minus1)?.mean(D::Minus1)
    }

    /// The step's draws for the transformer's drop path.
    fn begin_step(&self, draws: Box<dyn crate::draws::Draws>) {
        self.deit().begin_step(draws);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplacian_of_a_grid_has_degrees_on_the_diagonal_and_rows_summing_to_zero() {
        let l = laplacian(3, 4, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        // Corner 2 neighbours, edge 3, inner 4.
        assert_eq!((l[0][0], l[1][1], l[5][5]), (2.0, 3.0, 4.0));
        assert_eq!((l[0][1], l[0][4], l[0][5]), (-1.0, -1.0, 0.0));
        // Row ends do not wrap: (0, 3) and (1, 0) are not neighbours.
        assert_eq!(l[3][4], 0.0);
        for (i, row) in l.iter().enumerate() {
            assert_eq!(row.iter().sum::<f32>(), 0.0);
            assert!(row.iter().zip(&l).all(|(a, r)| *a == r[i]), "symmetric");
        }
    }

    #[test]
    fn newton_schulz_converges_to_the_inverse() {
        let x = Tensor::new(&[[[2f32, 0.5], [0.25, 1.0]]], &Device::Cpu).unwrap();
        let inv = inverse_schulz(&x, 30, 0.2).unwrap();
        let eye = x.matmul(&inv).unwrap().to_vec3::<f32>().unwrap();
        for (i, row) in eye[0].iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5, "{eye:?}");
            }
        }
    }
}
