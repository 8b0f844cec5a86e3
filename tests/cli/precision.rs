//! `train.precision` and fp16's loss scaling: PyTorch's GradScaler replayed step by step
//! (tests/fixtures/loss_scale, from scripts/make_loss_scale_fixture.py), and what a CPU
//! run says about precisions it cannot run.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use wsol::config::LossScaleConfig;
use wsol::train::loss_scale::{LossScaleState, LossScaler};

use crate::common::*;

fn f32_of(v: &serde_json::Value) -> f32 {
    match v.as_str() {
        Some("inf") => f32::INFINITY,
        Some("-inf") => f32::NEG_INFINITY,
        Some("nan") => f32::NAN,
        Some(other) => panic!("not a float: {other}"),
        None => v.as_f64().unwrap() as f32,
    }
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(f32_of).collect()
}

/// Bit patterns, every NaN alike.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect()
}

/// Every step of torch.amp.GradScaler: the unscaled gradient (on the host and through
/// candle tensors), the skip, the scale and growth tracker after the update, and the
/// parameter after the SGD step (lr 1) or its skip, bit for bit.
#[test]
fn loss_scaler_replays_pytorchs_grad_scaler_exactly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = read_json(&root.join("tests/fixtures/loss_scale/grad_scaler.json"));
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let mut skips = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = LossScaleConfig {
            init_scale: case["init_scale"].as_f64().unwrap(),
            growth_factor: case["growth_factor"].as_f64().unwrap(),
            backoff_factor: case["backoff_factor"].as_f64().unwrap(),
            growth_interval: case["growth_interval"].as_u64().unwrap() as u32,
            enabled: Some(true),
        };
        let mut scaler = LossScaler::new(&cfg);
        let mut param = f32s(&case["param0"]);
        let var = Var::from_tensor(&Tensor::zeros(param.len(), DType::F32, &Device::Cpu).unwrap()).unwrap();
        for (k, (step, g)) in
            case["steps"].as_array().unwrap().iter().zip(case["grads"].as_array().unwrap()).enumerate()
        {
            let at = format!("{name} step {k} (g = {:?})", f32s(g));
            // Backward of scale * sum(p * g): g times the f32 scale, as torch made it.
            let scaled: Vec<f32> = f32s(g).iter().map(|g| g * scaler.scale()).collect();
            assert_eq!(bits(&scaled), bits(&f32s(&step["scaled_grad"])), "{at}: scaled gradient");
            let mut host = scaled.clone();
            let found_inf = scaler.unscale_values(&mut host);
            assert_eq!(bits(&host), bits(&f32s(&step["unscaled_grad"])), "{at}: unscaled gradient");
            // The device path (what the training step runs) agrees with the host one.
            let mut grads = (var.as_tensor().sum_all().unwrap() * 0.0).unwrap().backward().unwrap();
            grads.insert(var.as_tensor(), Tensor::new(scaled.as_slice(), &Device::Cpu).unwrap());
            assert_eq!(scaler.unscale(&[&var], &mut grads).unwrap(), found_inf, "{at}");
            let device: Vec<f32> = grads.get(var.as_tensor()).unwrap().to_vec1().unwrap();
            assert_eq!(bits(&device), bits(&host), "{at}: unscaled on the device");
            assert_eq!(found_inf, step["skipped"].as_bool().unwrap(), "{at}: skipped");
            skips += found_inf as usize;
            if !found_inf {
                for (p, g) in param.iter_mut().zip(&host) {
                    *p -= g;
                }
            }
            assert_eq!(bits(&param), bits(&f32s(&step["param"])), "{at}: parameter after the step");
            scaler.update(found_inf);
            let want = LossScaleState {
                scale: f32_of(&step["scale"]),
                growth_tracker: step["growth_tracker"].as_u64().unwrap() as u32,
            };
            assert_eq!(scaler.state(), want, "{at}: scale and growth tracker");
        }
    }
    assert!(skips >= 6, "the fixture exercises overflows ({skips})");
}

/// bf16/fp16 on the CPU: one message naming the key, the need for CUDA and the valid
/// choices, before any data is read; a bad name or a contradiction with the older `tf32`
/// names both keys.
#[test]
fn precisions_the_cpu_cannot_run_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.yaml");
    let demo = demo.to_str().unwrap();
    for p in ["fp16", "bf16"] {
        let set = format!("train.precision={p}");
        let err = wsol_err(&["train", "--config", demo, "--set", &set, "--out", "run", "--quiet"], tmp.path());
        assert!(
            err.contains(&format!("train.precision: {p} needs a CUDA device"))
                && err.contains("fp32, tf32, bf16, fp16")
                && err.lines().count() == 1,
            "{err}"
        );
    }
    assert!(!tmp.path().join("run").exists(), "refused before the run directory is made");
    let err = wsol_err(&["train", "--config", demo, "--set", "train.precision=half"], tmp.path());
    assert!(err.contains("train.precision") && err.contains("half") && err.contains("fp16"), "{err}");
    let err = wsol_err(&["train", "--config", demo, "--set", "tf32=true", "--set", "train.precision=fp16"], tmp.path());
    assert!(err.contains("tf32: true") && err.contains("contradicts train.precision: fp16"), "{err}");
    let err = wsol_err(&["train", "--config", demo, "--set", "train.loss_scale.growth_interval=0"], tmp.path());
    assert!(err.contains("train.loss_scale.growth_interval: expected >= 1"), "{err}");
}

/// The scaler in `wsol train` (forced on in f32 with `train.loss_scale.enabled`, as
/// PyTorch's GradScaler runs in f32 too): the scale and its count of clean steps go into
/// the checkpoint, and a run stopped after its first epoch and resumed ends with the same
/// weights, scale and count as one trained straight through. (Its growth falls after the
/// resumption only if the count was restored. Overflows, which f32 gradients of this tiny
/// net do not reach, are the step's unit test and the GradScaler replay above.)
#[test]
fn train_scales_the_loss_and_resumes_with_its_scale() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth(d, 64, 8, 8);
    let cfg = write_config(d, "ls", "");
    let cfg = cfg.to_str().unwrap();
    let sets = [
        "train.schedule.name=constant",
        "train.schedule.warmup_epochs=0",
        "train.loss_scale.enabled=true",
        "train.loss_scale.init_scale=1.0e38",
        "train.loss_scale.growth_interval=4",
    ];
    let run = |epochs: &str, out: &str, resume: bool| {
        let mut args = vec!["train", "--config", cfg, "--out", out, "--quiet", "--set", epochs];
        for s in &sets {
            args.extend(["--set", s]);
        }
        if resume {
            args.extend(["--resume", out]);
        }
        wsol_ok(&args, d);
    };
    run("train.epochs=3", "straight", false);
    run("train.epochs=1", "resumed", false);
    run("train.epochs=3", "resumed", true);
    let state = |run: &str| read_json(&d.join(run).join("checkpoints/last.json"));
    let (a, b) = (state("straight"), state("resumed"));
    assert_eq!(a["global_step"], 6);
    // Grown once, at step 4 (two steps after the resumption), and two clean steps since.
    assert_eq!(a["loss_scale"]["growth_tracker"], 2, "{a}");
    assert_eq!(a["loss_scale"]["scale"].as_f64().unwrap() as f32, 1.0e38f32 * 2.0, "{a}");
    assert_eq!(a["loss_scale"], b["loss_scale"], "{a}\n{b}");
    let weights = |run: &str| std::fs::read(d.join(run).join("checkpoints/last.safetensors")).unwrap();
    assert!(weights("straight") == weights("resumed"), "the resumed run's weights differ");
    let log = std::fs::read_to_string(d.join("straight/train.log")).unwrap();
    assert!(log.contains("loss scale 2e38 (0 overflow steps skipped)"), "{log}");
    let m = read_json(&d.join("straight/metrics.json"));
    assert_eq!(m["provenance"]["precision"], "fp32");
}
