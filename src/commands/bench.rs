//! `wsol bench train|eval|data`: timings of the training step, evaluation and the input
//! pipeline, printed as text or JSON.

use anyhow::{Context, Result};

use crate::cli::{BenchDataArgs, BenchEvalArgs, BenchFaithfulnessArgs, BenchModelArgs, BenchTrainArgs};

pub fn data(a: BenchDataArgs) -> Result<()> {
    anyhow::ensure!(a.batch >= 1 && a.epochs >= 1 && a.images >= 1, "--batch, --epochs and --images: expected >= 1");
    let b = crate::bench::DataBench {
        dir: a.dir.clone(),
        images: a.images,
        width: a.width,
        height: a.height,
        batch: a.batch,
        workers: a.workers,
        size: a.size,
        resize: a.resize,
        epochs: a.epochs,
    };
    let r = crate::bench::data_speed(&b)?;
    if a.json {
        let j = serde_json::json!({
            "dir": a.dir.display().to_string(), "batch": a.batch, "workers": a.workers, "size": a.size,
            "resize": a.resize, "images_per_s": r.images_per_s, "epoch_s": r.epoch_s, "peak_rss_mb": r.peak_rss_mb,
        });
        println!("{j}");
    } else {
        println!(
            "data: {:.1} images/s (median of {} epochs: {:?} s), {} workers, batch {}, resize {} crop {}, peak RSS {}",
            r.images_per_s,
            r.epoch_s.len(),
            r.epoch_s.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>(),
            a.workers,
            a.batch,
            a.resize,
            a.size,
            r.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
        );
    }
    Ok(())
}

/// Checks the model arguments and sets up threads and cuDNN for a model benchmark.
fn bench_model(a: &BenchModelArgs) -> Result<crate::bench::ModelBench> {
    anyhow::ensure!(
        a.batch >= 1 && a.size >= 8 && a.steps >= 1 && a.classes >= 2,
        "bench: batch, steps >= 1, size >= 8, classes >= 2"
    );
    #[cfg(feature = "cudnn")]
    wsol_ops::conv::set_cudnn_graph_api(a.cudnn_graph)?;
    #[cfg(not(feature = "cudnn"))]
    anyhow::ensure!(!a.cudnn_graph, "--cudnn-graph: this build has no cuDNN (build with --features cudnn)");
    if let Some(t) = a.threads {
        // candle's CPU kernels use rayon's global pool.
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("--threads: cannot size the thread pool")?;
    }
    Ok(crate::bench::ModelBench {
        backbone: a.backbone,
        head: a.head,
        batch: a.batch,
        size: a.size,
        classes: a.classes,
        warmup: 2,
        steps: a.steps,
        device: a.device.clone(),
        tf32: a.tf32,
        cudnn_benchmark: a.cudnn_benchmark,
        profile: a.profile,
    })
}

/// Prints one JSON object: the model benchmark's arguments and `fields`.
fn print_bench_json(a: &BenchModelArgs, parameters: usize, fields: serde_json::Value) {
    let mut v = serde_json::json!({
        "backbone": a.backbone, "head": a.head, "batch": a.batch, "size": a.size,
        "threads": rayon::current_num_threads(), "device": a.device, "tf32": a.tf32,
        "cudnn_benchmark": a.cudnn_benchmark, "cudnn_graph": a.cudnn_graph, "parameters": parameters, "steps": a.steps,
    });
    if let (Some(v), serde_json::Value::Object(fields)) = (v.as_object_mut(), fields) {
        v.extend(fields);
    }
    println!("{v}");
}

/// The first line of a model benchmark's text output.
fn print_bench_line(a: &BenchModelArgs, parameters: usize, images_per_s: f64, peak_rss_mb: Option<f64>) {
    println!(
        "{} + {} ({parameters} parameters) on {}: batch {} at {}x{}, {} threads: {images_per_s:.2} images/s (median of {} steps), peak RSS {}",
        a.backbone,
        a.head,
        a.device,
        a.batch,
        a.size,
        a.size,
        rayon::current_num_threads(),
        a.steps,
        peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
    );
}

pub fn train(a: BenchTrainArgs) -> Result<()> {
    let spec = bench_model(&a.model)?;
    let r = crate::bench::train_step_speed(&spec, a.data.clone().map(|d| (d, a.workers)))?;
    let median_wait = r.data_wait_ms.as_ref().map(|w| {
        let mut w = w.clone();
        w.sort_by(f64::total_cmp);
        w[w.len() / 2]
    });
    let m = &a.model;
    if m.json {
        let fields = serde_json::json!({
            "images_per_s": r.images_per_s, "step_ms": r.step_ms, "peak_rss_mb": r.peak_rss_mb,
            "data_wait_ms": r.data_wait_ms, "median_data_wait_ms": median_wait,
            "forward_ms": r.forward_ms, "backward_ms": r.backward_ms, "optimizer_ms": r.optimizer_ms,
            "forward_issue_ms": r.forward_issue_ms, "backward_issue_ms": r.backward_issue_ms,
            "workers": a.data.as_ref().map(|_| a.workers),
            "profile": m.profile.then_some(&r.profile),
        });
        print_bench_json(m, r.parameters, fields);
    } else {
        print_bench_line(m, r.parameters, r.images_per_s, r.peak_rss_mb);
        println!(
            "  forward + loss {:.0} ms, backward {:.0} ms, optimizer {:.1} ms (medians)",
            r.forward_ms, r.backward_ms, r.optimizer_ms
        );
        if m.device != "cpu" {
            println!(
                "  host time to issue them: forward + loss {:.1} ms, backward {:.1} ms (close to the pass: launch-bound)",
                r.forward_issue_ms, r.backward_issue_ms
            );
        }
        if let Some(w) = median_wait {
            println!("data wait per step: median {w:.1} ms ({} decode workers)", a.workers);
        }
        if m.profile {
            print_profile(&r.profile, r.step_ms.iter().sum::<f64>() / r.step_ms.len() as f64);
        }
    }
    Ok(())
}

pub fn eval(a: BenchEvalArgs) -> Result<()> {
    let spec = bench_model(&a.model)?;
    let r = crate::bench::eval_speed(&spec, a.method, a.layer.as_deref())?;
    let m = &a.model;
    if m.json {
        let fields = serde_json::json!({
            "method": a.method, "layer": a.layer,
            "images_per_s": r.images_per_s, "step_ms": r.step_ms, "peak_rss_mb": r.peak_rss_mb,
            "forward_ms": r.forward_ms, "cam_ms": r.cam_ms,
            "profile": m.profile.then_some(&r.profile),
        });
        print_bench_json(m, r.parameters, fields);
    } else {
        print_bench_line(m, r.parameters, r.images_per_s, r.peak_rss_mb);
        println!("  forward {:.0} ms, {} maps {:.0} ms (medians)", r.forward_ms, a.method, r.cam_ms);
        if m.profile {
            print_profile(&r.profile, r.step_ms.iter().sum::<f64>() / r.step_ms.len() as f64);
        }
    }
    Ok(())
}

pub fn faithfulness(a: BenchFaithfulnessArgs) -> Result<()> {
    anyhow::ensure!(!a.metrics.is_empty(), "--metrics: expected at least one metric name");
    let spec = bench_model(&a.model)?;
    let mut rows = Vec::new();
    for name in &a.metrics {
        let metrics = wsol_eval::faithfulness::Metric::parse_list(std::slice::from_ref(name))?;
        let cfg = wsol_eval::faithfulness::FaithfulnessConfig {
            metrics,
            steps: a.faithfulness_steps,
            substrate: wsol_eval::faithfulness::Substrate::Zero,
            percentiles: (1..=9).map(|k| k * 10).collect(),
            road_noise: 0.01,
            seed: 0,
        };
        cfg.validate(a.model.size)?;
        rows.push((name.clone(), crate::bench::faithfulness_speed(&spec, &cfg)?));
    }
    let m = &a.model;
    if m.json {
        let per: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(n, r)| {
                (n.clone(), serde_json::json!({"ms_per_image": r.ms_per_image, "inputs_per_image": r.inputs_per_image}))
            })
            .collect();
        print_bench_json(
            m,
            rows[0].1.parameters,
            serde_json::json!({ "faithfulness": per, "steps": a.faithfulness_steps }),
        );
    } else {
        for (name, r) in &rows {
            println!(
                "{name:<12} {:>8.1} ms per image ({:.0} inputs scored per image)",
                r.ms_per_image, r.inputs_per_image
            );
        }
    }
    Ok(())
}

/// Per op, ms per step and share of the mean step, slowest first; what our ops leave of
/// the step is candle's own ops.
fn print_profile(rows: &[wsol_ops::profile::Row], step_ms: f64) {
    println!("  per step (mean of the timed steps), our ops (on a GPU: host time to issue them):");
    println!("  {:>9} {:>6} {:>8}  op", "ms", "share", "GFLOP/s");
    for r in rows {
        let rate = r.gflops_per_s().map_or(String::new(), |g| format!("{g:.1}"));
        println!("  {:>9.2} {:>5.1}% {:>8}  {} (x{})", r.ms, 100.0 * r.ms / step_ms, rate, r.op, r.calls);
    }
    let ours: f64 = rows.iter().map(|r| r.ms).sum();
    println!(
        "  {:>9.1} {:>5.1}%           everything else (candle's ops)",
        step_ms - ours,
        100.0 * (step_ms - ours) / step_ms
    );
}
