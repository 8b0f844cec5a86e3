//! `train.optimizer.name: adamw`: torch.optim.AdamW's trajectory step for step
//! (tests/fixtures/optimizer_parity/, written by scripts/make_adamw_parity_fixture.py),
//! training and `--resume` through the CLI, and its settings checked by key.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use wsol::config::{OptimizerConfig, OptimizerName};
use wsol::train::optimizer::{Optimizer, Param};

use crate::common::*;

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Two parameters in two learning-rate groups, a decay midway and a step on which one
/// has no gradient (its state and step count stay as they were, as PyTorch's).
#[test]
fn adamw_follows_torch_step_for_step() {
    let fx = read_json(Path::new("tests/fixtures/optimizer_parity/adamw.json"));
    let f = |k: &str| fx[k].as_f64().unwrap();
    let betas = floats(&fx["betas"]);
    let cfg = OptimizerConfig {
        name: OptimizerName::AdamW,
        lr: f("lr"),
        weight_decay: f("weight_decay"),
        betas: [betas[0] as f64, betas[1] as f64],
        eps: f("eps"),
        ..Default::default()
    };
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::from_vec(floats(&fx["a0"]), (3, 4), &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::from_vec(floats(&fx["b0"]), 5, &dev).unwrap()).unwrap();
    let params = vec![
        Param { name: "a".into(), var: a.clone(), lr_mult: 1.0, decay: true },
        Param { name: "b".into(), var: b.clone(), lr_mult: f("mult"), decay: true },
    ];
    let mut opt = Optimizer::new(params, &cfg);
    let skip = fx["skip"][0].as_u64().unwrap() as usize;
    let decay_at = fx["decay_at"].as_u64().unwrap() as usize;
    let noise = f("noise") as f32;
    let mut worst = 0f32;
    for (t, (g, want)) in fx["grads"].as_array().unwrap().iter().zip(fx["trajectory"].as_array().unwrap()).enumerate() {
        let ga = Tensor::from_vec(floats(&g["a"]), (3, 4), &dev).unwrap();
        let gb = Tensor::from_vec(floats(&g["b"]), 5, &dev).unwrap();
        // d(sum(p * g))/dp = g exactly; `b` left out of the graph on the skipped step.
        let mut loss = (a.as_tensor() * &ga).unwrap().sum_all().unwrap();
        if t != skip {
            loss = (loss + (b.as_tensor() * &gb).unwrap().sum_all().unwrap()).unwrap();
        }
        let lr = if t >= decay_at { f("lr") * 0.1 } else { f("lr") };
        opt.step(&loss.backward().unwrap(), lr).unwrap();
        for (name, var) in [("a", &a), ("b", &b)] {
            let ours: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let d = ours.iter().zip(floats(&want[name])).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            worst = worst.max(d);
            assert!(d <= 10.0 * noise.max(1e-7), "step {t}, {name}: differs by {d:e}");
        }
    }
    eprintln!("adamw vs torch: max abs diff {worst:.2e} over the trajectory (torch f32 vs f64: {noise:.1e})");

    // The state survives a checkpoint: a fresh optimizer loaded from it takes the same step.
    let state = opt.state().clone();
    assert_eq!(state["step.b"].to_vec1::<f64>().unwrap(), [5.0]);
    let mut again = Optimizer::new(opt.params().to_vec(), &cfg);
    again.load_state(state.clone()).unwrap();
    let mut bad = state;
    bad.insert("b".into(), Tensor::zeros(5, candle_core::DType::F32, &dev).unwrap());
    let err = Optimizer::new(opt.params().to_vec(), &cfg).load_state(bad).unwrap_err().to_string();
    assert!(err.contains("`b`") && err.contains("exp_avg"), "{err}");
}

/// AdamW trains through the CLI, and a run resumed after its first epoch ends with the
/// uninterrupted run's numbers (its moments and step counts are in the checkpoint).
#[test]
fn adamw_trains_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 96, 8, 16);
    let cfg = write_config(dir, "adamw", "");
    let c = cfg.to_str().unwrap();
    let sets = [
        "--set",
        "train.optimizer={name: adamw, lr: 0.002, weight_decay: 0.05, betas: [0.9, 0.999], momentum: 0.9}",
        "--set",
        "train.schedule.name=constant",
        "--quiet",
    ];
    let run = |args: &[&str]| {
        let mut all = vec!["train", "--config", c];
        all.extend(args);
        all.extend(sets);
        wsol_ok(&all, dir);
    };
    run(&["--set", "train.epochs=2", "--out", "whole"]);
    run(&["--set", "train.epochs=1", "--out", "cut"]);
    run(&["--set", "train.epochs=2", "--resume", "cut"]);
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    let whole = strip(read_json(&dir.join("whole/metrics.json")));
    assert_eq!(whole, strip(read_json(&dir.join("cut/metrics.json"))), "resumed AdamW run differs");
    let resolved = std::fs::read_to_string(dir.join("whole/config.yaml")).unwrap();
    assert!(resolved.contains("adamw") && resolved.contains("eps"), "{resolved}");

    for (set, key) in [
        ("train.optimizer.name=adam", "train.optimizer.name"),
        ("train.optimizer.betas=[0.9, 1.0]", "train.optimizer.betas"),
        ("train.optimizer.eps=0", "train.optimizer.eps"),
    ] {
        let err = wsol_err(&["train", "--config", c, "--set", set, "--set", "train.epochs=1"], dir);
        assert!(err.contains(key), "{set}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let err = wsol_err(
        &["train", "--config", c, "--set", "train.optimizer.name=adamw", "--set", "train.optimizer.nesterov=true"],
        dir,
    );
    assert!(err.contains("train.optimizer.nesterov") && err.contains("adamw"), "{err}");
}

/// `filter_bias_and_bn: true` exempts what timm's `create_optimizer_v2` exempts on the same
/// model: for DeiT-Tiny with TS-CAM's conv head, timm's groups are 102 parameters without
/// decay and 50 with it (printed by timm 1.0.31 from its `param_groups_weight_decay`).
#[test]
fn filter_bias_and_bn_exempts_what_timm_exempts() {
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model_cfg = wsol::config::ModelConfig {
        backbone: "deit_tiny".parse().unwrap(),
        method: "tscam".parse().unwrap(),
        ..Default::default()
    };
    let model = wsol::methods::build(&model_cfg, 10, vb).unwrap();
    let mut cfg = OptimizerConfig { name: OptimizerName::AdamW, weight_decay: 0.05, ..Default::default() };
    let count = |cfg: &OptimizerConfig| {
        let params = wsol::train::optimizer::model_params(&varmap, model.as_ref(), cfg, true);
        let exempt: Vec<String> = params.iter().filter(|p| !p.decay).map(|p| p.name.clone()).collect();
        (exempt.len(), params.len() - exempt.len(), exempt)
    };
    assert_eq!(count(&cfg).0, 0, "off by default: decay on every parameter, as torch.optim");
    cfg.filter_bias_and_bn = true;
    let (exempt, decayed, names) = count(&cfg);
    assert_eq!((exempt, decayed), (102, 50), "{names:?}");
    for name in ["pos_embed", "cls_token", "head.bias", "blocks.3.norm1.weight", "blocks.0.attn.qkv.bias"] {
        assert!(names.iter().any(|n| n == name || n.ends_with(&format!(".{name}"))), "{name} not exempt: {names:?}");
    }

    // And the update: an exempt parameter only moves by its gradient's step.
    let (a, b) = (Var::new(&[1f32, 1.0], &Device::Cpu).unwrap(), Var::new(&[1f32, 1.0], &Device::Cpu).unwrap());
    let cfg = OptimizerConfig { name: OptimizerName::AdamW, lr: 0.1, weight_decay: 0.5, ..Default::default() };
    let mut opt = Optimizer::new(
        vec![
            Param { name: "a".into(), var: a.clone(), lr_mult: 1.0, decay: true },
            Param { name: "b".into(), var: b.clone(), lr_mult: 1.0, decay: false },
        ],
        &cfg,
    );
    // (A product with a zero tensor: candle drops a scalar `* 0.0` from the graph.)
    let zeros = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
    let loss = ((a.as_tensor() * &zeros).unwrap() + (b.as_tensor() * &zeros).unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    opt.step(&grads, 0.1).unwrap();
    // Zero gradients: Adam's step is 0, so only the decay moves a (1 - 0.1 * 0.5).
    assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), vec![0.95, 0.95]);
    assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
}
