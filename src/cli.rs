//! The command line: argument parsing and dispatch only; the work lives in the library.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::report::metrics_table;
use crate::{data, evaluate, picture, pipeline, train};

#[derive(Parser)]
#[command(
    name = "wsol",
    version,
    about = "Weakly supervised object localization: train, extract CAMs, score boxes (wsolevaluation protocol)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a model from a YAML config, validate each epoch, evaluate on the test split.
    Train(TrainArgs),
    /// Evaluate a checkpoint on a split.
    Eval(EvalArgs),
    /// Random search over hyperparameter ranges, each trial scored on the val split.
    Sweep(SweepArgs),
    /// Score class activation maps from anywhere (.npy files) against a metadata split.
    EvalCams(EvalCamsArgs),
    /// Picture of one image's class maps: overlay, predicted box (red), GT boxes (green).
    Cam(CamArgs),
    /// A self-contained HTML page for a finished run: metrics, curves, best/worst overlays.
    Report(ReportArgs),
    /// Dataset tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
pub struct EvalCamsArgs {
    /// Metadata split folder (holding image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt).
    #[arg(long)]
    pub metadata: PathBuf,
    /// Folder of maps: <cams>/<image_id>.npy (or <image_id with / as __>.npy), 2-D float32/float64, any size.
    #[arg(long, required_unless_present = "centre_baseline")]
    pub cams: Option<PathBuf>,
    /// Score the centre-Gaussian baseline (the same centred Gaussian map for every image)
    /// instead of --cams: the floor a WSOL method has to beat.
    #[arg(long, conflicts_with = "cams")]
    pub centre_baseline: bool,
    /// Class predictions `image_id,top1[,top2..top5]` per line, for top-1/top-5 cls and loc.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Maps are resized to this square size (224 in the protocol).
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// IoU thresholds in percent.
    #[arg(long, default_value = "30,50,70")]
    pub iou: String,
    #[arg(long, default_value_t = 0.01)]
    pub cam_curve_interval: f64,
    /// MaxBoxAccV2 over all contours (default, the official V2).
    #[arg(long, conflicts_with = "largest_contour")]
    pub multi_contour: bool,
    /// MaxBoxAccV2 over the largest contour only.
    #[arg(long)]
    pub largest_contour: bool,
    /// Threshold of the `*_fixed` numbers.
    #[arg(long, default_value_t = 0.2)]
    pub fixed_threshold: f64,
    /// Mask root of a mask split (OpenImages30k): localization.txt lines are
    /// `image_id,mask_path,ignore_path` relative to DIR, and PxAP replaces box accuracy.
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Where metrics.json and curve.csv go.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// YAML run configuration.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config key, e.g. --set train.epochs=3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Device: cpu or cuda:N (overrides the config).
    #[arg(long)]
    pub device: Option<String>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Run directory (default: <log.dir>/<name>-<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a run: its directory or a checkpoint file in it.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// With --resume: if the latest checkpoint is damaged, continue from the one before it.
    #[arg(long, requires = "resume")]
    pub use_previous_checkpoint: bool,
}

#[derive(Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Number of trials.
    #[arg(long)]
    pub trials: usize,
    /// YAML of ranges per config key (default: lr log-uniform in [1e-5, 1] plus the
    /// method's own knob); see `wsol::sweep`.
    #[arg(long)]
    pub search: Option<PathBuf>,
    /// Sweep directory: one run directory per trial and sweep.json
    /// (default: <log.dir>/<name>-sweep-<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Model weights (.safetensors written by `wsol train`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Split to score (default: eval.split of the config).
    #[arg(long)]
    pub split: Option<String>,
    /// Where metrics.json goes (default: <run dir>/eval-<split>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write every scored map as <DIR>/<image_id>.npy (wsolevaluation's layout).
    #[arg(long)]
    pub save_cams: Option<PathBuf>,
}

#[derive(Args)]
pub struct CamArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Model weights (.safetensors written by `wsol train`); may be left out when the
    /// config's model.pretrained (with model.pretrained_classifier) gives them.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Image file (PNG / JPEG); GT boxes are drawn when it is in the eval split.
    #[arg(long)]
    pub image: PathBuf,
    /// CAM method(s), comma-separated: one column each (default: eval.cam).
    #[arg(long)]
    pub method: Option<String>,
    /// Class index(es), comma-separated: one row each.
    #[arg(long, conflicts_with = "top")]
    pub class: Option<String>,
    /// Rows for the model's top-K classes (default 1).
    #[arg(long)]
    pub top: Option<usize>,
    /// Threshold of the drawn box (default: eval.fixed_threshold).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Opacity of the map over the image.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Run directory (with config.yaml, metrics.json, curve.csv, checkpoints/).
    pub run_dir: PathBuf,
    /// Weights to draw the maps with (default: the checkpoint the run was evaluated with).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Images in each of the best and worst rows.
    #[arg(long, default_value_t = 6)]
    pub samples: usize,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training steps per second (forward + backward + SGD) on random input, and peak memory.
    Train(BenchTrainArgs),
    /// Evaluation steps per second (forward pass in eval mode, then each image's class
    /// activation map: the model's side of `wsol eval`) on random input, and peak memory.
    /// The threshold sweep after it is timed by `cargo bench --bench eval`.
    Eval(BenchEvalArgs),
    /// Decoded + augmented training images per second on a folder of JPEGs.
    Data(BenchDataArgs),
}

#[derive(Args)]
pub struct BenchDataArgs {
    /// Folder of .jpg files; when it has none, `--images` JPEGs of `--width` x `--height`
    /// are written there first (CUB-like sizes by default).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 512)]
    pub images: usize,
    #[arg(long, default_value_t = 500)]
    pub width: u32,
    #[arg(long, default_value_t = 375)]
    pub height: u32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Decode threads (data.workers).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Crop side.
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Side the images are resized to before the crop.
    #[arg(long, default_value_t = 256)]
    pub resize: u32,
    /// Passes over the folder; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The model and batch both model benchmarks run.
#[derive(Args)]
pub struct BenchModelArgs {
    #[arg(long, default_value = "resnet18")]
    pub backbone: String,
    #[arg(long, default_value = "cam")]
    pub head: String,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    #[arg(long, default_value_t = 200)]
    pub classes: usize,
    /// Timed steps (after 2 warm-up steps); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// CPU threads for the tensor ops (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `cpu` or `cuda:N` (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// TF32 matrix products on the GPU (PyTorch's default for convolutions).
    #[arg(long)]
    pub tf32: bool,
    /// Time cuDNN's convolution algorithms per shape and keep the fastest (PyTorch's
    /// `cudnn.benchmark`) instead of its heuristic pick.
    #[arg(long)]
    pub cudnn_benchmark: bool,
    /// Plan convolutions through cuDNN's graph API (built execution plans, as PyTorch)
    /// instead of its legacy calls. Experimental: off until measured against them.
    #[arg(long)]
    pub cudnn_graph: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also time each of our CPU ops per shape (convolution passes with their GFLOP/s,
    /// batch norm, ReLU) and print where a step's time goes.
    #[arg(long)]
    pub profile: bool,
}

#[derive(Args)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    pub model: BenchModelArgs,
    /// Feed the steps from the training loader on this folder of JPEGs (512 CUB-sized
    /// ones are written when it has none) and measure each step's wait for its batch.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Decode threads of the loader with --data.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

#[derive(Args)]
pub struct BenchEvalArgs {
    #[command(flatten)]
    pub model: BenchModelArgs,
    /// The CAM method (eval.cam).
    #[arg(long, default_value = "cam")]
    pub method: String,
    /// The layer a gradient method reads (eval.cam_layer; default: the last feature map).
    #[arg(long)]
    pub layer: Option<String>,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Write the built-in synthetic dataset (wsolevaluation metadata format).
    Synth(SynthArgs),
    /// Read every split of a configured dataset and report counts and problems.
    Check(CheckArgs),
    /// Convert a dataset's native files to wsolevaluation metadata (`cub`: CUB-200-2011).
    Convert(ConvertArgs),
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Source format: `cub` or `imagenet-xml`.
    pub format: String,
    /// Dataset root (cub: the folder with images.txt and images/; imagenet-xml: the
    /// folder of ILSVRC XML annotations of one split).
    #[arg(long)]
    pub root: PathBuf,
    /// imagenet-xml: the synset mapping (`LOC_synset_mapping.txt`), whose line order is the class order.
    #[arg(long)]
    pub synsets: Option<PathBuf>,
    /// imagenet-xml: the split to write.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// imagenet-xml: prefix of the image ids (default `<split>/`).
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// Metadata root to write (<out>/train, <out>/test).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub num_classes: usize,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Images go to DIR/<split>/, metadata to DIR/metadata/<split>/.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub num_classes: usize,
    #[arg(long, default_value_t = 1500)]
    pub train: usize,
    #[arg(long, default_value_t = 200)]
    pub val: usize,
    #[arg(long, default_value_t = 500)]
    pub test: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 48)]
    pub size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Annotate val and test with object and ignore masks (OpenImages-style, scored by
    /// PxAP) instead of boxes.
    #[arg(long)]
    pub masks: bool,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
}

fn load_config(args: &ConfigArgs, fallback: Option<&Path>) -> Result<Config> {
    let path = match (&args.config, fallback) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => f.to_path_buf(),
        (None, None) => anyhow::bail!("--config FILE is required"),
    };
    let mut cfg = Config::load(&path, &args.set)?;
    if let Some(d) = &args.device {
        cfg.device = d.clone();
        cfg.validate()?;
    }
    Ok(cfg)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sweep(a) => {
            let cfg = load_config(&a.common, None)?;
            anyhow::ensure!(a.trials >= 1, "--trials: expected at least 1");
            let space = match &a.search {
                Some(p) => crate::sweep::read_space(p)?,
                None => crate::sweep::default_space(&cfg),
            };
            let out = a.out.unwrap_or_else(|| {
                let run = train::default_run_dir(&cfg);
                run.with_file_name(run.file_name().unwrap().to_string_lossy().replacen(
                    &cfg.name,
                    &format!("{}-sweep", cfg.name),
                    1,
                ))
            });
            let opts = crate::sweep::SweepOptions { trials: a.trials, out: out.clone(), quiet: a.common.quiet };
            let best = crate::sweep::sweep(&cfg, &space, &opts)?;
            println!("best trial {best}: {}", out.join(format!("trial-{best:03}")).display());
            println!("summary written to {}", out.join("sweep.json").display());
            Ok(())
        }
        Command::Train(a) => {
            // Resuming a run without --config reuses the run's resolved config.
            let fallback = a
                .resume
                .as_deref()
                .map(|r| train::resolve_resume(r).map(|(dir, _)| dir.join("config.yaml")))
                .transpose()?;
            let cfg = load_config(&a.common, fallback.as_deref())?;
            let opts = train::TrainOptions {
                out: a.out,
                resume: a.resume,
                use_previous_checkpoint: a.use_previous_checkpoint,
                quiet: a.common.quiet,
            };
            train::train(&cfg, &opts)?;
            Ok(())
        }
        Command::Eval(a) => eval(a),
        Command::EvalCams(a) => eval_cams(a),
        Command::Cam(a) => cam_picture(a),
        Command::Report(a) => {
            let req =
                crate::run_report::ReportRequest { run_dir: a.run_dir, checkpoint: a.checkpoint, samples: a.samples };
            let path = crate::run_report::write(&req)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Data(DataCommand::Synth(a)) => {
            let opts = data::SynthOptions {
                num_classes: a.num_classes,
                train: a.train,
                val: a.val,
                test: a.test,
                size: a.size,
                seed: a.seed,
                masks: a.masks,
            };
            data::synth::generate(&a.out, &a.out.join("metadata"), &opts)?;
            if !a.quiet {
                eprintln!("wrote {} + {} + {} images and metadata to {}", a.train, a.val, a.test, a.out.display());
            }
            Ok(())
        }
        Command::Data(DataCommand::Check(a)) => check(a),
        Command::Data(DataCommand::Convert(a)) => convert(a),
        Command::Bench(BenchCommand::Train(a)) => bench_train(a),
        Command::Bench(BenchCommand::Eval(a)) => bench_eval(a),
        Command::Bench(BenchCommand::Data(a)) => bench_data(a),
    }
}

fn eval(a: EvalArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    let split = a.split.clone().unwrap_or_else(|| cfg.eval.split.clone());
    let result = evaluate::evaluate_checkpoint(&cfg, &a.checkpoint, &split, a.save_cams.as_deref(), a.common.quiet)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let ckpt_dir = a.checkpoint.parent().unwrap_or(Path::new("."));
        let run_dir = if ckpt_dir.file_name().is_some_and(|n| n == "checkpoints") {
            ckpt_dir.parent().unwrap_or(Path::new("."))
        } else {
            ckpt_dir
        };
        run_dir.join(format!("eval-{split}"))
    });
    result
        .write(&out, &[("checkpoint", serde_json::json!(a.checkpoint.display().to_string()))])
        .with_context(|| format!("writing results to {}", out.display()))?;
    println!("{}", metrics_table(&result.table_rows()));
    eprintln!("metrics written to {}", out.join("metrics.json").display());
    Ok(())
}

fn eval_cams(a: EvalCamsArgs) -> Result<()> {
    if !(a.cam_curve_interval > 0.0 && a.cam_curve_interval < 1.0) {
        anyhow::bail!("--cam-curve-interval {}: expected a value in (0, 1)", a.cam_curve_interval);
    }
    if !(0.0..1.0).contains(&a.fixed_threshold) {
        anyhow::bail!("--fixed-threshold {}: expected a value in [0, 1)", a.fixed_threshold);
    }
    if a.image_size == 0 {
        anyhow::bail!("--image-size: expected a positive size");
    }
    let iou_thresholds = crate::eval_cams::parse_iou_list(&a.iou)?;
    if !iou_thresholds.contains(&50) {
        anyhow::bail!("--iou {}: must contain 50 (MaxBoxAcc and GT-known Loc use IoU 0.5)", a.iou);
    }
    let opts = crate::eval_cams::EvalCamsOptions {
        metadata: a.metadata,
        cams: a.cams,
        predictions: a.predictions,
        image_size: a.image_size,
        iou_thresholds,
        cam_curve_interval: a.cam_curve_interval,
        multi_contour: !a.largest_contour,
        fixed_threshold: a.fixed_threshold,
        masks: a.masks,
    };
    let result = crate::eval_cams::eval_cams(&opts)?;
    result.write(&a.out, &[])?;
    println!("{}", metrics_table(&result.table_rows()));
    if !a.quiet {
        eprintln!("metrics written to {}", a.out.join("metrics.json").display());
    }
    Ok(())
}

/// `wsol data check`: every split's counts, then every problem found (missing or
/// unreadable images, sizes that disagree with `image_sizes.txt`, missing masks), the
/// first few of each split by name; non-zero exit when there is any. Metadata that does
/// not parse (duplicate ids, boxes outside their image, ...) stops at its first bad line.
fn check(a: CheckArgs) -> Result<()> {
    use rayon::prelude::*;
    let cfg = load_config(&a.common, None)?;
    pipeline::prepare_data(&cfg, a.common.quiet)?;
    let mut rows = Vec::new();
    let mut problems: Vec<(String, Vec<String>)> = Vec::new();
    for split in [&cfg.data.train_split, &cfg.data.val_split, &cfg.data.test_split] {
        if !pipeline::split_exists(&cfg, split) {
            rows.push((split.clone(), "absent".to_string()));
            continue;
        }
        let ds = pipeline::load_split(&cfg, split)?;
        let mut per_class = vec![0usize; cfg.data.num_classes];
        let boxes: usize = ds.meta.samples.iter().map(|s| s.boxes.len()).sum();
        ds.meta.samples.iter().for_each(|s| per_class[s.label] += 1);
        let mut found: Vec<String> = ds
            .meta
            .samples
            .par_iter()
            .enumerate()
            .flat_map_iter(|(i, s)| {
                let mut p = Vec::new();
                let path = ds.image_root.join(&s.image_id);
                match image::image_dimensions(&path) {
                    Err(_) if !path.is_file() => p.push(format!("missing image {}", path.display())),
                    Err(e) => p.push(format!("unreadable image {}: {e}", path.display())),
                    Ok(wh) if s.size != (0, 0) && wh != s.size => p.push(format!(
                        "{} is {}x{}, image_sizes.txt says {}x{} (its boxes would be rescaled wrongly)",
                        path.display(),
                        wh.0,
                        wh.1,
                        s.size.0,
                        s.size.1
                    )),
                    Ok(_) => {}
                }
                if let Some(m) = &ds.masks {
                    let ms = &m.split.samples[i];
                    for r in ms.masks.iter().chain(&ms.ignore) {
                        if !m.root.join(&r.path).is_file() {
                            p.push(format!(
                                "missing mask {} ({}:{})",
                                m.root.join(&r.path).display(),
                                m.split.localization.display(),
                                r.line
                            ));
                        }
                    }
                }
                p
            })
            .collect();
        let masks = ds.masks.as_ref().map_or(String::new(), |m| {
            format!(", {} masks", m.split.samples.iter().map(|s| s.masks.len()).sum::<usize>())
        });
        let empty = per_class.iter().filter(|&&c| c == 0).count();
        let (lo, hi) = (per_class.iter().min().copied().unwrap_or(0), per_class.iter().max().copied().unwrap_or(0));
        rows.push((
            split.clone(),
            format!(
                "{} images, {boxes} boxes{masks}, {} classes present ({lo}-{hi} images each), {empty} empty, {} problems",
                ds.meta.samples.len(),
                cfg.data.num_classes - empty,
                found.len()
            ),
        ));
        if !found.is_empty() {
            found.sort();
            problems.push((split.clone(), found));
        }
    }
    println!("{}", metrics_table(&rows));
    if problems.is_empty() {
        return Ok(());
    }
    let total: usize = problems.iter().map(|(_, p)| p.len()).sum();
    // One line (errors are one line): per split, its count and first few problems.
    let parts: Vec<String> = problems
        .iter()
        .map(|(split, found)| {
            let first: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
            format!("{split}: {} ({}{})", found.len(), first.join("; "), if found.len() > 5 { "; ..." } else { "" })
        })
        .collect();
    let msg = format!("data check found {total} problem(s) — {}", parts.join(" | "));
    anyhow::bail!(msg)
}

fn cam_picture(a: CamArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    let device = pipeline::device(&cfg.device, cfg.tf32, cfg.cudnn_benchmark)?;
    let model = pipeline::build_model(&cfg, &device)?;
    match &a.checkpoint {
        Some(c) => pipeline::load_checkpoint(&model, c)?,
        None => anyhow::ensure!(
            cfg.model.pretrained.is_some() && cfg.model.pretrained_classifier,
            "--checkpoint: required unless the config sets model.pretrained and model.pretrained_classifier"
        ),
    }
    let list = |s: &str| s.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect::<Vec<_>>();
    let methods = a.method.as_deref().map(list).unwrap_or_else(|| vec![cfg.eval.cam.clone()]);
    let classes = match &a.class {
        Some(c) => picture::Classes::Given(
            list(c)
                .iter()
                .map(|v| v.parse().with_context(|| format!("--class: `{v}` is not a class index")))
                .collect::<Result<_>>()?,
        ),
        None => picture::Classes::Top(a.top.unwrap_or(1)),
    };
    let threshold = a.threshold.unwrap_or(cfg.eval.fixed_threshold);
    anyhow::ensure!((0.0..1.0).contains(&threshold), "--threshold: expected in [0, 1), got {threshold}");
    let req = picture::Request { image: a.image, methods, classes, threshold, alpha: a.alpha };
    let (png, panels) = picture::render(model.inference_net(&cfg)?.as_ref(), &cfg, &device, &req)?;
    crate::util::atomic_write(&a.out, &png)?;
    for p in panels {
        let b = p.pred;
        println!(
            "{:<10} class {:>4}  p={:.4}  box ({}, {}, {}, {}) at threshold {threshold}",
            p.method, p.class, p.score, b.x0, b.y0, b.x1, b.y1
        );
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<()> {
    if a.format == "imagenet-xml" {
        let synsets =
            a.synsets.as_ref().context("data convert imagenet-xml: --synsets LOC_synset_mapping.txt is required")?;
        let synsets = data::imagenet::read_synsets(synsets)?;
        let prefix = a.id_prefix.clone().unwrap_or_else(|| format!("{}/", a.split));
        let meta = data::imagenet::read_xml_split(&a.root, &synsets, &a.split, &prefix)?;
        anyhow::ensure!(!meta.samples.is_empty(), "{}: no .xml annotations", a.root.display());
        data::write_split(&a.out, &meta)?;
        println!("{}: {} images -> {}", a.split, meta.samples.len(), a.out.join(&a.split).display());
        return Ok(());
    }
    anyhow::ensure!(a.format == "cub", "data convert: unknown format `{}` (available: cub, imagenet-xml)", a.format);
    anyhow::ensure!(
        data::cub::is_cub_root(&a.root),
        "{}: not a CUB-200-2011 root (expected images.txt, image_class_labels.txt, train_test_split.txt, bounding_boxes.txt)",
        a.root.display()
    );
    for split in ["train", "test"] {
        let meta = data::cub::read_cub_split(&a.root, split, a.num_classes)?;
        data::write_split(&a.out, &meta)?;
        println!("{split}: {} images -> {}", meta.samples.len(), a.out.join(split).display());
    }
    println!("image ids are relative to {}: set data.image_root to it", a.root.join("images").display());
    Ok(())
}

/// The one-line message for an error: its causes joined by `: `, without the backtraces
/// candle attaches to its errors when RUST_BACKTRACE is set.
pub fn error_message(err: &anyhow::Error) -> String {
    fn candle_text(e: &candle_core::Error) -> String {
        match e {
            candle_core::Error::WithBacktrace { inner, .. } => candle_text(inner),
            candle_core::Error::Context { inner, context } => format!("{context}: {}", candle_text(inner)),
            other => other.to_string(),
        }
    }
    let parts: Vec<String> = err
        .chain()
        .map(|c| match c.downcast_ref::<candle_core::Error>() {
            Some(e) => candle_text(e),
            None => c.to_string(),
        })
        .collect();
    let mut msg = parts.join(": ");
    // Any backtrace rendered inside a message starts on a line of its own.
    if let Some(i) = msg.find("\n") {
        msg.truncate(i);
    }
    msg
}

fn bench_data(a: BenchDataArgs) -> Result<()> {
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
    anyhow::ensure!(
        crate::models::BACKBONES.contains(&a.backbone.as_str()),
        "--backbone: unknown `{}` (available: {})",
        a.backbone,
        crate::models::BACKBONES.join(", ")
    );
    anyhow::ensure!(
        crate::models::HEADS.contains(&a.head.as_str()),
        "--head: unknown `{}` (available: {})",
        a.head,
        crate::models::HEADS.join(", ")
    );
    #[cfg(feature = "cudnn")]
    crate::models::set_cudnn_graph_api(a.cudnn_graph);
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
        backbone: a.backbone.clone(),
        head: a.head.clone(),
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

fn bench_train(a: BenchTrainArgs) -> Result<()> {
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

fn bench_eval(a: BenchEvalArgs) -> Result<()> {
    let spec = bench_model(&a.model)?;
    let r = crate::bench::eval_speed(&spec, &a.method, a.layer.as_deref())?;
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

/// Per op, ms per step and share of the mean step, slowest first; what our ops leave of
/// the step is candle's own ops.
fn print_profile(rows: &[crate::profile::Row], step_ms: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_is_one_line_without_candle_backtraces() {
        let inner = candle_core::Error::Msg("shape mismatch".into());
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let err = anyhow::Error::from(e).context("computing class activation maps");
        assert_eq!(error_message(&err), "computing class activation maps: shape mismatch");
    }
}
