use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::*;
use crate::config::ModelConfig;

fn model() -> (VarMap, Box<dyn WsolModel>) {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let net = crate::methods::build(&ModelConfig { width: 4, ..Default::default() }, 5, vb).unwrap();
    crate::models::init::initialize(&varmap, 3, &dev).unwrap();
    (varmap, net)
}

fn images(n: usize) -> Tensor {
    let mut s = 11u64;
    let v: Vec<f32> = (0..n * 3 * 32 * 32)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Tensor::from_vec(v, (n, 3, 32, 32), &Device::Cpu).unwrap()
}

fn maps(method: &str, layer: Option<&str>, net: &dyn WsolModel, x: &Tensor, targets: &[u32]) -> Tensor {
    let ex = by_name(method.parse().unwrap(), layer, net).unwrap();
    let out = net.forward_t(x, false).unwrap();
    let t = Tensor::new(targets, &Device::Cpu).unwrap();
    ex.extract(&CamInput { model: net, images: x, out: &out, targets: &t }).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// For GAP + linear, d score / d A_c(i, j) = w_c / hw everywhere, so Grad-CAM is
/// ReLU(CAM) / hw: the same map after min-max normalization wherever CAM is positive.
#[test]
fn gradcam_at_last_layer_is_relu_cam_over_area() {
    let (_vm, net) = model();
    let x = images(3);
    let targets = [0, 3, 4];
    let cam = maps("cam", None, net.as_ref(), &x, &targets);
    let grad = maps("gradcam", None, net.as_ref(), &x, &targets);
    let (_, h, w) = cam.dims3().unwrap();
    let want = (cam.relu().unwrap() / (h * w) as f64).unwrap();
    assert!(max_abs_diff(&grad, &want) < 1e-6);
}

#[test]
fn every_method_is_batch_invariant_finite_and_nonnegative() {
    let (_vm, net) = model();
    let x = images(3);
    let targets = [1u32, 2, 0];
    for method in CamMethod::ALL.iter().map(|m| m.as_str()) {
        if method == "attention_rollout" {
            let err = by_name(CamMethod::AttentionRollout, None, net.as_ref()).err().unwrap().to_string();
            assert!(err.contains("transformer"), "{err}");
            continue;
        }
        let batch = maps(method, None, net.as_ref(), &x, &targets);
        let v: Vec<f32> = batch.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{method}: non-finite values");
        if method != "cam" {
            assert!(v.iter().all(|&x| x >= 0.0), "{method}: negative values after ReLU");
        }
        for i in 0..3 {
            let one = maps(method, None, net.as_ref(), &x.narrow(0, i, 1).unwrap(), &targets[i..i + 1]);
            let d = max_abs_diff(&one.squeeze(0).unwrap(), &batch.get(i).unwrap());
            assert!(d < 1e-5, "{method}: image {i} differs alone vs in a batch by {d}");
        }
    }
}

#[test]
fn scorecam_weights_sum_to_one() {
    let (_vm, net) = model();
    let x = images(2);
    let out = net.forward_t(&x, false).unwrap();
    let t = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
    let input = CamInput { model: net.as_ref(), images: &x, out: &out, targets: &t };
    let layer = Layer { index: net.backbone().layers().len() - 1, last: true };
    let mut sc = ScoreCam { layer, batch: 5, progress: None };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    sc.set_progress(std::sync::Arc::new(move |done, total| log.lock().unwrap().push((done, total))));
    let w = sc.weights(&input, &out.features).unwrap();
    let sums: Vec<f32> = w.sum(1).unwrap().to_vec1().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    // One report per forward pass of up to 5 masked inputs, counting up to 2 images x C.
    let c = out.features.dim(1).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2 * c.div_ceil(5), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0) && seen.iter().all(|&(_, t)| t == 2 * c), "{seen:?}");
    assert_eq!(seen.last(), Some(&(2 * c, 2 * c)));
}

#[test]
fn earlier_layers_by_torchvision_name() {
    let (_vm, net) = model();
    let layers = net.backbone().layers();
    assert_eq!(layers, ["features.2", "features.5", "features.6", "features.9", "features.12"]);
    let x = images(1);
    // Stride-2 stem: 16x16 after features.2, 8x8 after the pool.
    assert_eq!(maps("layercam", Some("features.2"), net.as_ref(), &x, &[0]).dims(), [1, 16, 16]);
    assert_eq!(maps("gradcam", Some("features.9"), net.as_ref(), &x, &[0]).dims(), [1, 8, 8]);
    let err = by_name(CamMethod::GradCam, Some("layer4"), net.as_ref()).err().unwrap().to_string();
    assert!(err.contains("eval.cam_layer") && err.contains("features.12"), "{err}");
    assert!(by_name(CamMethod::Cam, Some("features.2"), net.as_ref()).is_err());
    assert!("gradcam-pp".parse::<CamMethod>().unwrap_err().contains("gradcam++"));
}

/// A class whose evidence is negative everywhere: the ReLU'd map is all zero and the
/// evaluator's normalization keeps it zero, never NaN.
#[test]
fn all_negative_evidence_normalizes_to_zeros() {
    let m = Tensor::new(&[[-1.0f32, -2.0], [-0.5, -3.0]], &Device::Cpu).unwrap().relu().unwrap();
    let v: Vec<f32> = m.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(wsol_eval::localize::prepare_map(&v, 2, 2, 4), vec![0.0; 16]);
}

/// BagCAMs: one map per image at the input size, normalized to [0, 1], at the last layer
/// and at an earlier one (its backward guided through the ReLUs after it).
#[test]
fn bagcams_maps_at_input_size_at_any_layer() {
    let (_vm, net) = model();
    let x = images(2);
    let m = maps("bagcams", None, net.as_ref(), &x, &[1, 3]);
    assert_eq!(m.dims(), [2, 32, 32]);
    for i in 0..2 {
        let v: Vec<f32> = m.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(lo == 0.0 && (hi - 1.0).abs() < 1e-6, "image {i}: [{lo}, {hi}]");
    }
    assert_eq!(maps("bagcams", Some("features.12"), net.as_ref(), &x, &[1, 3]).dims(), [2, 32, 32]);
    let early = maps("bagcams", Some("features.9"), net.as_ref(), &x, &[1, 3]);
    assert_eq!(early.dims(), [2, 32, 32]);
    let v: Vec<f32> = early.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)) && v.contains(&1.0));
}
