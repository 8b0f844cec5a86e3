//! `wsol bench train`: images per second of full training steps (forward, loss, backward,
//! SGD with momentum) on random input, after warm-up, and the process's peak memory — the
//! numbers to compare with `scripts/bench_pytorch.py` on the same machine and threads.
//! `wsol bench eval`: the same for evaluation (forward pass and class activation maps),
//! against `scripts/bench_pytorch.py --cam`.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::config::{AcolConfig, Backbone, Method, ModelConfig, OptimizerConfig};
use crate::draws::StepDraws;
use crate::models::{self, WsolModel};
use crate::train::optimizer::{Optimizer, Param};
use crate::train::step::{train_step, StepBatch};

/// The model, batch and steps of a benchmark.
pub struct ModelBench {
    pub backbone: Backbone,
    pub head: Method,
    pub batch: usize,
    pub size: usize,
    pub classes: usize,
    pub warmup: usize,
    pub steps: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// TF32 GEMMs on the GPU (the config's `tf32`).
    pub tf32: bool,
    /// cuDNN algorithms by timing (the config's `cudnn_benchmark`).
    pub cudnn_benchmark: bool,
    /// Time our CPU ops per shape over the timed steps ([`wsol_ops::profile`]).
    pub profile: bool,
}

pub struct TrainBenchResult {
    pub parameters: usize,
    /// Median over the timed steps.
    pub images_per_s: f64,
    pub step_ms: Vec<f64>,
    pub peak_rss_mb: Option<f64>,
    /// Per timed step, the time spent waiting for the loader (with `data`).
    pub data_wait_ms: Option<Vec<f64>>,
    /// Medians of the forward pass with the loss, and of the backward pass, per step.
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Median of the optimizer update per step.
    pub optimizer_ms: f64,
    /// Medians of the host time to issue the forward (with the loss) and the backward
    /// pass. On the CPU these are the passes; on a GPU, a pass whose issue time is close
    /// to its time is launch-bound (the GPU waits on the host).
    pub forward_issue_ms: f64,
    pub backward_issue_ms: f64,
    /// With `profile`: our ops' time per timed step (ms and flops divided by the steps).
    pub profile: Vec<wsol_ops::profile::Row>,
}

/// A seeded model of the benchmark's layout, one random batch and its labels.
struct Setup {
    dev: Device,
    cfg: ModelConfig,
    varmap: VarMap,
    net: Box<dyn WsolModel>,
    /// Trainable values (batch-norm running statistics left out), to check that
    /// `scripts/bench_pytorch.py` builds the same model: PyTorch counts its parameters.
    parameters: usize,
    x: Tensor,
    y: Tensor,
}

fn setup(b: &ModelBench) -> Result<Setup> {
    let dev = crate::runtime::device(&b.device, b.tf32, b.cudnn_benchmark)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    // ACoL at wsolevaluation's 1024 on every backbone: the layout scripts/bench_pytorch.py builds.
    let acol = AcolConfig { width: Some(1024), ..Default::default() };
    let cfg = ModelConfig { backbone: b.backbone, method: b.head, acol, ..Default::default() };
    let net = crate::methods::build(&cfg, b.classes, vb)?;
    models::init::initialize(&varmap, 0, &dev)?;
    let parameters = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .filter(|(name, _)| !name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        .map(|(_, var)| var.elem_count())
        .sum();
    let x = Tensor::randn(0f32, 1., (b.batch, 3, b.size, b.size), &dev)?;
    let labels: Vec<u32> = (0..b.batch).map(|i| (i % b.classes) as u32).collect();
    let y = Tensor::from_vec(labels, b.batch, &dev)?;
    Ok(Setup { dev, cfg, varmap, net, parameters, x, y })
}

/// Training steps. With `data` (a folder of JPEGs, written when empty as `wsol bench
/// data`, and decode threads), the steps are fed by the training loader instead of one
/// random batch, and the wait for each batch is measured too.
pub fn train_step_speed(b: &ModelBench, data: Option<(std::path::PathBuf, usize)>) -> Result<TrainBenchResult> {
    let Setup { dev, cfg, varmap, net, parameters, x: random, y, .. } = setup(b)?;
    let params: Vec<Param> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(name, var)| Param { name: name.clone(), var: var.clone(), lr_mult: 1.0, decay: true })
        .collect();
    let mut sgd = Optimizer::new(params, &OptimizerConfig::default());
    let mut batches = match &data {
        Some((dir, workers)) => Some(jpeg_batches(dir, b.batch, b.size as u32, *workers)?),
        None => None,
    };
    let (random, labels) = (random.flatten_all()?.to_vec1::<f32>()?, y.to_vec1::<u32>()?);
    let mut step_ms = Vec::with_capacity(b.steps);
    let mut wait_ms = Vec::with_capacity(b.steps);
    let (mut fwd_ms, mut bwd_ms, mut opt_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fwd_issue_ms, mut bwd_issue_ms) = (Vec::new(), Vec::new());
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    for k in 0..b.warmup + b.steps {
        if b.profile && k == b.warmup {
            wsol_ops::profile::record(true);
        }
        let t0 = Instant::now();
        let images = match batches.as_mut() {
            Some(it) => {
                let images = it.next().context("loader ended")??.images;
                if k >= b.warmup {
                    wait_ms.push(ms(t0.elapsed()));
                }
                images
            }
            None => random.clone(),
        };
        // The step `wsol train` runs, timed phase by phase.
        let batch = StepBatch { images, labels: labels.clone(), size: b.size };
        let r = train_step(net.as_ref(), &mut sgd, &cfg, StepDraws::seeded(0, k), batch, &dev, 0.01, true)?;
        anyhow::ensure!(r.updated, "bench: the loss is not finite ({})", r.loss);
        if k >= b.warmup {
            step_ms.push(ms(t0.elapsed()));
            fwd_ms.push(ms(r.times.forward));
            bwd_ms.push(ms(r.times.backward));
            opt_ms.push(ms(r.times.optimizer));
            fwd_issue_ms.push(ms(r.times.forward_issue));
            bwd_issue_ms.push(ms(r.times.backward_issue));
        }
    }
    Ok(TrainBenchResult {
        parameters,
        images_per_s: b.batch as f64 / (median_of(step_ms.clone()) / 1e3),
        step_ms,
        peak_rss_mb: peak_rss_mb(),
        data_wait_ms: data.as_ref().map(|_| wait_ms),
        forward_ms: median_of(fwd_ms),
        backward_ms: median_of(bwd_ms),
        optimizer_ms: median_of(opt_ms),
        forward_issue_ms: median_of(fwd_issue_ms),
        backward_issue_ms: median_of(bwd_issue_ms),
        profile: profile_rows(b),
    })
}

pub struct EvalBenchResult {
    pub parameters: usize,
    /// Median over the timed steps.
    pub images_per_s: f64,
    pub step_ms: Vec<f64>,
    pub peak_rss_mb: Option<f64>,
    /// Medians of the forward pass and of the maps after it, per step.
    pub forward_ms: f64,
    pub cam_ms: f64,
    pub profile: Vec<wsol_ops::profile::Row>,
}

/// Evaluation steps: the forward pass in eval mode on the weights' inference copy (as
/// `wsol eval` runs it), then `method`'s maps of each image's class, read back.
pub fn eval_speed(b: &ModelBench, method: crate::cam::CamMethod, layer: Option<&str>) -> Result<EvalBenchResult> {
    let Setup { cfg, varmap, x, y, parameters, .. } = setup(b)?;
    let net = crate::runtime::inference_net(&varmap, &cfg, b.classes)?;
    let extractor = crate::cam::by_name(method, layer, net.as_ref())?;
    let (mut step_ms, mut fwd_ms, mut cam_ms) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..b.warmup + b.steps {
        if b.profile && k == b.warmup {
            wsol_ops::profile::record(true);
        }
        let t0 = Instant::now();
        let out = net.forward_t(&x, false)?;
        out.logits.flatten_all()?.to_vec1::<f32>()?; // waits for the GPU
        let t1 = Instant::now();
        let input = crate::cam::CamInput { model: net.as_ref(), images: &x, out: &out, targets: &y };
        extractor.extract(&input)?.flatten_all()?.to_vec1::<f32>()?;
        if k >= b.warmup {
            step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            fwd_ms.push((t1 - t0).as_secs_f64() * 1e3);
            cam_ms.push(t1.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(EvalBenchResult {
        parameters,
        images_per_s: b.batch as f64 / (median_of(step_ms.clone()) / 1e3),
        step_ms,
        peak_rss_mb: peak_rss_mb(),
        forward_ms: median_of(fwd_ms),
        cam_ms: median_of(cam_ms),
        profile: profile_rows(b),
    })
}

pub struct FaithfulnessBenchResult {
    pub parameters: usize,
    /// Median over the timed steps of a step's time over its images.
    pub ms_per_image: f64,
    pub inputs_per_image: f64,
}

/// One faithfulness configuration on a batch of random images with smooth maps (one
/// Gaussian each), the scoring batch the bench's batch: the work `wsol eval` adds per
/// image with `eval.faithfulness`.
pub fn faithfulness_speed(
    b: &ModelBench,
    fc: &wsol_eval::faithfulness::FaithfulnessConfig,
) -> Result<FaithfulnessBenchResult> {
    let Setup { cfg, varmap, x, parameters, .. } = setup(b)?;
    let net = crate::runtime::inference_net(&varmap, &cfg, b.classes)?;
    let images: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let s = b.size;
    let maps: Vec<f32> = (0..b.batch * s * s)
        .map(|i| {
            let (k, y, x) = (i / (s * s), (i / s) % s, i % s);
            let c = s as f32 * (0.3 + 0.1 * (k % 4) as f32);
            (-((x as f32 - c).powi(2) + (y as f32 - c).powi(2)) / (0.05 * (s * s) as f32)).exp()
        })
        .collect();
    let classes: Vec<usize> = (0..b.batch).map(|k| k % b.classes).collect();
    let base = crate::evaluate::faithfulness::class_scores(net.as_ref(), &x, &classes)?;
    let keys: Vec<u64> = (0..b.batch as u64).collect();
    let (mut ms, mut inputs) = (Vec::new(), 0);
    for k in 0..b.warmup.min(1) + b.steps {
        let t0 = Instant::now();
        let (_, n) = crate::evaluate::faithfulness::score_images(
            net.as_ref(),
            fc,
            &images,
            &maps,
            (3, s),
            &classes,
            &base,
            &keys,
            x.device(),
            b.batch,
        )?;
        if k >= b.warmup.min(1) {
            ms.push(t0.elapsed().as_secs_f64() * 1e3 / b.batch as f64);
        }
        inputs = n;
    }
    Ok(FaithfulnessBenchResult {
        parameters,
        ms_per_image: median_of(ms),
        inputs_per_image: inputs as f64 / b.batch as f64,
    })
}

/// With `profile`: the recorded rows per timed step; recording stops.
fn profile_rows(b: &ModelBench) -> Vec<wsol_ops::profile::Row> {
    if !b.profile {
        return Vec::new();
    }
    let mut rows = wsol_ops::profile::rows();
    wsol_ops::profile::record(false);
    for r in &mut rows {
        r.ms /= b.steps as f64;
        r.flops /= b.steps as f64;
        r.calls /= b.steps as u64;
    }
    rows
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Endless training batches (epoch after epoch) from a folder of JPEGs.
fn jpeg_batches(
    dir: &std::path::Path,
    batch: usize,
    size: u32,
    workers: usize,
) -> Result<impl Iterator<Item = Result<crate::data::Batch>>> {
    let ds = jpeg_dataset(dir, 512, 500, 375)?;
    anyhow::ensure!(ds.meta.samples.len() >= batch, "{}: fewer JPEGs than one batch", dir.display());
    let transform = crate::data::TransformConfig {
        image_size: size,
        resize_size: size * 256 / 224,
        train: true,
        hflip: true,
        mean: crate::data::IMAGENET_MEAN,
        std: crate::data::IMAGENET_STD,
    };
    Ok((0u64..).flat_map(move |epoch| {
        let loader = crate::data::LoaderConfig {
            batch_size: batch,
            shuffle: true,
            drop_last: true,
            workers,
            seed: 0,
            epoch,
            transform: transform.clone(),
            skip_batches: 0,
            skip_bad: false,
            shard: (0, 1),
            whole_batches: false,
        };
        crate::data::epoch_batches(ds.clone(), loader)
    }))
}

/// The JPEGs of `dir` as an unlabelled training split; `n` of `w` x `h` are written first
/// when it holds none.
fn jpeg_dataset(dir: &std::path::Path, n: usize, w: u32, h: u32) -> Result<std::sync::Arc<crate::data::Dataset>> {
    use crate::data::{Dataset, Sample, SplitMetadata};
    let list = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".jpg")).collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut names = list(dir);
    if names.is_empty() {
        write_jpegs(dir, n, w, h)?;
        names = list(dir);
    }
    let samples = names.into_iter().map(|image_id| Sample { image_id, label: 0, size: (w, h), boxes: Vec::new() });
    Ok(std::sync::Arc::new(Dataset {
        image_root: dir.to_path_buf(),
        meta: SplitMetadata { split: "train".into(), samples: samples.collect() },
        masks: None,
    }))
}

/// VmHWM from /proc (Linux); None elsewhere.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `wsol bench data`: decoded + augmented training images per second, as the trainer
/// loads them (parallel JPEG decode, resize, random crop, flip, normalize, batches), on a
/// folder of JPEGs (written first when it has none): the number to compare with
/// `scripts/bench_data_pil.py` on the same folder, batch and worker count.
pub struct DataBench {
    pub dir: std::path::PathBuf,
    pub images: usize,
    pub width: u32,
    pub height: u32,
    pub batch: usize,
    pub workers: usize,
    pub size: u32,
    pub resize: u32,
    pub epochs: usize,
}

pub struct DataBenchResult {
    /// Median over the epochs.
    pub images_per_s: f64,
    pub epoch_s: Vec<f64>,
    pub peak_rss_mb: Option<f64>,
}

/// Writes `n` JPEGs (quality 90) of `w` x `h` into `dir`: smooth colour fields with an
/// ellipse and noise, so they compress like photos rather than like flat colour.
pub fn write_jpegs(dir: &std::path::Path, n: usize, w: u32, h: u32) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use rayon::prelude::*;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    (0..n).into_par_iter().try_for_each(|i| -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
        let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(40.0..200.0));
        let (cx, cy, r) =
            (rng.random_range(0.2..0.8) * w as f32, rng.random_range(0.2..0.8) * h as f32, h as f32 / 4.0);
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let inside = ((x as f32 - cx) / (1.5 * r)).powi(2) + ((y as f32 - cy) / r).powi(2) < 1.0;
            image::Rgb(std::array::from_fn(|c| {
                let wave = 30.0 * ((x as f32 * 0.02 + c as f32).sin() + (y as f32 * 0.03).cos());
                let v = base[c] + wave + if inside { 60.0 - 40.0 * c as f32 } else { 0.0 };
                (v + rng_noise(x, y, c)).clamp(0.0, 255.0) as u8
            }))
        });
        let path = dir.join(format!("{i:05}.jpg"));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?,
        );
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .with_context(|| format!("encoding {}", path.display()))
    })
}

/// Cheap deterministic pixel noise in [-8, 8).
fn rng_noise(x: u32, y: u32, c: usize) -> f32 {
    let h = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ (c as u32).wrapping_mul(83_492_791)) % 16;
    h as f32 - 8.0
}

pub fn data_speed(b: &DataBench) -> Result<DataBenchResult> {
    use crate::data::{epoch_batches, LoaderConfig, TransformConfig};
    let ds = jpeg_dataset(&b.dir, b.images, b.width, b.height)?;
    let n = ds.meta.samples.len();
    let transform = TransformConfig {
        image_size: b.size,
        resize_size: b.resize,
        train: true,
        hflip: true,
        mean: crate::data::IMAGENET_MEAN,
        std: crate::data::IMAGENET_STD,
    };
    transform.validate()?;
    let mut epoch_s = Vec::with_capacity(b.epochs);
    for epoch in 0..b.epochs {
        let loader = LoaderConfig {
            batch_size: b.batch,
            shuffle: true,
            drop_last: false,
            workers: b.workers,
            seed: 0,
            epoch: epoch as u64,
            transform: transform.clone(),
            skip_batches: 0,
            skip_bad: false,
            shard: (0, 1),
            whole_batches: false,
        };
        let t0 = Instant::now();
        let mut seen = 0;
        for batch in epoch_batches(ds.clone(), loader) {
            seen += batch?.labels.len();
        }
        anyhow::ensure!(seen == n, "loaded {seen} of {n} images");
        epoch_s.push(t0.elapsed().as_secs_f64());
    }
    let mut sorted = epoch_s.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    Ok(DataBenchResult { images_per_s: n as f64 / median, epoch_s, peak_rss_mb: peak_rss_mb() })
}
