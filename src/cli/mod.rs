//! The command line's definitions (clap) and nothing else: each subcommand's work is in
//! [`crate::commands`], one file each.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Backbone, CamMethod, Method};

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
    /// Before a long run: dataset check, weights and checksum, the recipe beside
    /// wsolevaluation's, the time on this machine.
    Preflight(PreflightArgs),
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
    /// Where metrics.json and curve.csv go (default: a new folder eval-cams-<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
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
pub struct PreflightArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Training steps timed for the estimate (after one warm-up step); 0 skips it.
    #[arg(long, default_value_t = 2)]
    pub bench_steps: usize,
}

#[derive(Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// Number of trials.
    #[arg(long)]
    pub trials: usize,
    /// YAML file, one range per config key, e.g.
    /// `train.optimizer.lr: {log_uniform: [1.0e-4, 1.0]}`, `model.acol.erase_threshold:
    /// {uniform: [0.5, 0.9]}`, `data.batch_size: {choice: [32, 64]}`. Default:
    /// train.optimizer.lr log-uniform in [1e-5, 1] plus the method's own knob.
    #[arg(long, value_name = "RANGES.yaml")]
    pub search: Option<PathBuf>,
    /// Sweep directory: trial-000/, trial-001/, ... (one run directory each), sweep.json,
    /// sweep.csv, best-test/ (default: <log.dir>/<name>-sweep-<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: ConfigArgs,
    /// A run directory: its checkpoint named by eval.checkpoint (`last` unless the run's
    /// config says `best`), scored with the run's own config.yaml.
    #[arg(value_name = "RUN_DIR", required_unless_present = "checkpoint", conflicts_with = "checkpoint")]
    pub run: Option<PathBuf>,
    /// Model weights (.safetensors written by `wsol train`); without --config, the run's
    /// own config.yaml (next to checkpoints/) is used.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
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
    /// Image file (PNG / JPEG), or a folder: its .jpg/.jpeg/.png files, in name order. GT
    /// boxes are drawn when an image is in the eval split.
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
    /// Output PNG; with a folder as --image, the folder that gets `<image stem>.png` per
    /// image (created if missing).
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
    /// Faithfulness metrics (eval.faithfulness) per image on random input and smooth
    /// maps: each metric's perturbed inputs made and scored by the model, timed alone.
    /// `scripts/bench_faithfulness.py` runs pytorch-grad-cam's and torch-cam's beside it.
    Faithfulness(BenchFaithfulnessArgs),
}

#[derive(Args)]
pub struct BenchFaithfulnessArgs {
    #[command(flatten)]
    pub model: BenchModelArgs,
    /// Metrics to time, each alone (names of eval.faithfulness).
    #[arg(long, value_delimiter = ',', default_value = "avg_drop,deletion,insertion,road")]
    pub metrics: Vec<String>,
    /// Deletion / Insertion intervals (eval.faithfulness_steps).
    #[arg(long, default_value_t = 20)]
    pub faithfulness_steps: usize,
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
    pub backbone: Backbone,
    /// The WSOL method (model.method).
    #[arg(long, default_value = "cam")]
    pub head: Method,
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
    pub method: CamMethod,
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
    /// Write a WSOL set of MNIST digits on cluttered canvases (needs the `digits` feature).
    Digits(DigitsArgs),
}

#[derive(Args)]
pub struct DigitsArgs {
    /// The folder with MNIST's four idx files (train-images-idx3-ubyte, ...; gzipped or not).
    #[arg(long)]
    pub mnist: PathBuf,
    /// Images go to DIR/<split>/, metadata to DIR/metadata/<split>/.
    #[arg(long)]
    pub out: PathBuf,
    /// Image side in pixels (configs/digits.yaml trains at 64).
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    #[arg(long, default_value_t = 3000)]
    pub train: usize,
    #[arg(long, default_value_t = 300)]
    pub val: usize,
    #[arg(long, default_value_t = 1000)]
    pub test: usize,
    /// Whole digits of other classes drawn beside the target (0-4).
    #[arg(long, default_value_t = 0)]
    pub distractors: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub quiet: bool,
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
