//! The YAML run configuration: schema, defaults, `--set` overrides and validation.
//!
//! Every struct denies unknown fields so a typo'd key is an error with its line and
//! column, never a silently ignored setting.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

mod names;

pub use names::{
    AcolMap, Backbone, CamMethod, CheckpointChoice, DataFormat, Method, OptimizerName, Precision, ScheduleName,
    SelectBy, Substrate,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run name; defaults to the config file's stem.
    pub name: String,
    pub seed: u64,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// GPU matrix products (and so convolutions) in TF32, PyTorch's default for
    /// convolutions: faster on tensor cores, 10-bit mantissas. Off: plain f32. The older
    /// spelling of `train.precision: tf32`; [`Config::load`] keeps the two in agreement.
    pub tf32: bool,
    /// Choose each convolution's cuDNN algorithm by timing them all on the first call
    /// (PyTorch's `cudnn.benchmark`); off: cuDNN's heuristic pick (PyTorch's default).
    pub cudnn_benchmark: bool,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub format: DataFormat,
    pub metadata_root: PathBuf,
    pub image_root: PathBuf,
    /// Folder the mask paths of a mask split (OpenImages) are relative to; null =
    /// `image_root`.
    pub mask_root: Option<PathBuf>,
    pub num_classes: usize,
    /// Class names file (one name per line, line k naming class k) for pictures and
    /// printed lines; null = `<metadata_root>/class_names.txt` when it exists.
    pub class_names: Option<PathBuf>,
    /// Evaluation resize and training crop, in pixels (224 in the papers).
    pub image_size: u32,
    /// Training images are resized to this before the random crop; null = image_size * 256/224.
    pub resize_size: Option<u32>,
    pub hflip: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub batch_size: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Training skips (and counts) images that fail to decode instead of stopping; off by
    /// default, since a silently smaller training set changes results.
    pub skip_bad_images: bool,
    pub train_split: String,
    pub val_split: String,
    pub test_split: String,
    /// Used only when `format: synthetic` and the metadata is missing.
    pub synthetic: SynthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Side of the generated images in pixels.
    pub size: u32,
    pub seed: u64,
    /// The cluttered scene (default); false draws the same objects white on black
    /// (`data::synth::SynthOptions::clutter`).
    pub clutter: bool,
}

/// timm's DeiT patch side, the default `model.patch_size` (its weights are all 16-pixel ones).
pub const DEIT_PATCH: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub backbone: Backbone,
    /// The WSOL method; `head` is its older spelling and still loads (also in `--set`).
    #[serde(alias = "head")]
    pub method: Method,
    /// Local `.safetensors` / `.pth` with torchvision names; nothing is downloaded.
    pub pretrained: Option<PathBuf>,
    /// A missing `pretrained` file means training from scratch (with a warning), not an
    /// error: one config for machines with and without the weights.
    pub pretrained_optional: bool,
    /// Channel width of the first stage of the `tiny` backbone.
    pub width: usize,
    /// Also load the pretrained file's ImageNet classifier into the CAM head (needs
    /// `data.num_classes` equal to its classes): the pretrained network's own CAMs.
    pub pretrained_classifier: bool,
    /// Keep one more stage at full resolution: 28x28 maps at 224 instead of 14x14
    /// (ResNet layer3 at stride 1, VGG without pool4), as wsolevaluation's option.
    pub large_feature_map: bool,
    /// Batch norm always uses (and never updates) its running statistics.
    pub freeze_bn: bool,
    /// Stochastic depth of a transformer backbone (timm's `drop_path_rate`): block i of
    /// D drops its residual branches per sample with probability rate * i / (D - 1), in
    /// training only.
    pub drop_path_rate: f64,
    /// Side of a transformer backbone's square patches in pixels (timm's `patch_size`);
    /// `data.image_size` must be a multiple of it. 16 is timm's DeiT and the only size its
    /// weights load at; a smaller patch gives a finer token grid (more tokens, slower steps)
    /// for small images trained from scratch.
    pub patch_size: usize,
    /// `head: acol` settings.
    pub acol: AcolConfig,
    /// `head: has` (Hide-and-Seek) settings.
    pub has: HasConfig,
    /// `head: cutmix` settings.
    pub cutmix: CutMixConfig,
    /// `head: adl` settings.
    pub adl: AdlConfig,
    /// `head: spg` settings.
    pub spg: SpgConfig,
    /// `method: bas` settings.
    pub bas: BasConfig,
    /// `method: scm` settings.
    pub scm: ScmConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdlConfig {
    /// Probability that a layer applies its drop mask (else its importance map).
    pub drop_rate: f64,
    /// Positions whose channel-mean is >= this times the image's maximum are dropped.
    pub drop_threshold: f64,
}

impl Default for AdlConfig {
    /// wsolevaluation's `--adl_drop_rate 0.75 --adl_threshold 0.9`.
    fn default() -> Self {
        AdlConfig { drop_rate: 0.75, drop_threshold: 0.9 }
    }
}

/// SPG's (high, low) thresholds of its three self-produced masks, named as
/// wsolevaluation's `--spg_threshold_{1,2,3}{h,l}`: positions above `h` are foreground,
/// below `l` background, the rest ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpgConfig {
    /// Mask from the classifier's GT-class map, supervising branch B2.
    pub threshold_1h: f64,
    pub threshold_1l: f64,
    /// Mask from B2's output, supervising B1.
    pub threshold_2h: f64,
    pub threshold_2l: f64,
    /// Mask from the fused B1 + B2 attention, supervising branch C.
    pub threshold_3h: f64,
    pub threshold_3l: f64,
}

impl Default for SpgConfig {
    fn default() -> Self {
        SpgConfig {
            threshold_1h: 0.7,
            threshold_1l: 0.01,
            threshold_2h: 0.5,
            threshold_2l: 0.05,
            threshold_3h: 0.7,
            threshold_3l: 0.1,
        }
    }
}

impl SpgConfig {
    /// The three (high, low) pairs.
    pub fn pairs(&self) -> [(f64, f64); 3] {
        [
            (self.threshold_1h, self.threshold_1l),
            (self.threshold_2h, self.threshold_2l),
            (self.threshold_3h, self.threshold_3l),
        ]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HasConfig {
    /// Side of the square patches, in pixels of the training crop.
    pub grid_size: usize,
    /// Probability that a patch is hidden.
    pub drop_rate: f64,
}

impl Default for HasConfig {
    fn default() -> Self {
        HasConfig { grid_size: 4, drop_rate: 0.5 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CutMixConfig {
    /// lambda ~ Beta(beta, beta); 0 turns CutMix off.
    pub beta: f64,
    /// Probability that a batch is mixed.
    pub prob: f64,
}

impl Default for CutMixConfig {
    fn default() -> Self {
        CutMixConfig { beta: 1.0, prob: 1.0 }
    }
}

/// BAS's knobs (Wu et al., CVPR 2022; wpy1999/BAS). Unset (null) values take the
/// authors' CUB value for the backbone (`methods::bas`); the ILSVRC configs set theirs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasConfig {
    /// Weight of the area constraint, the mean of the foreground map (their `bas_loss`:
    /// CUB 0.7 VGG16, 1.2 ResNet-50, 1.0 Inception-v3; ILSVRC 2.0 ResNet-50, 2.5 Inception-v3).
    pub area_weight: Option<f64>,
    /// Weight of the cross-entropy of the foreground-weighted scores (their `loss_2`:
    /// CUB 0 VGG16, 0.5 otherwise; ILSVRC 0.05 VGG16, 1 otherwise).
    pub fg_weight: Option<f64>,
    /// The localization map: the mean of the foreground maps of the `top_k` classes the
    /// classifier scores highest (their CUB inference: 200, all classes, or 80 on VGG16);
    /// unset: the GT class's map (their ILSVRC inference, wsolevaluation's protocol).
    pub top_k: Option<usize>,
    /// Channels of the classifier's two 3x3 convs; unset: 1024 on VGG16, ResNet-50 and
    /// Inception-v3 (theirs), the backbone's channels up to 1024 elsewhere.
    pub width: Option<usize>,
}

/// SCM's spatial calibration module (Bai et al., ECCV 2022; 164140757/SCM
/// lib/models/deit.py `SCM`, `Encoder`, graphFusion.py `Fuse`); defaults are theirs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScmConfig {
    /// Calibration layers stacked in training (their `num_layers`).
    pub layers: usize,
    /// Initial value of each layer's learned threshold `thred` (activations are divided by
    /// it times the map's maximum before the tanh-shrink).
    pub threshold: f64,
    /// Initial value of each layer's learned `loss_rate`, the similarity's weight in the
    /// diffusion matrix.
    pub loss_rate: f64,
    /// Newton-Schulz iterations of the first layer's matrix inverse (their `Encoder`
    /// default).
    pub first_iterations: usize,
    /// Newton-Schulz iterations of the other layers' (their `fusion_cfg`).
    pub iterations: usize,
    /// The Newton-Schulz start, `alpha * X^T` (their `inverse_schulz` default).
    pub schulz_alpha: f64,
}

impl Default for ScmConfig {
    fn default() -> Self {
        ScmConfig {
            layers: 4,
            threshold: 0.5,
            loss_rate: 1.0,
            first_iterations: 16,
            iterations: 4,
            schulz_alpha: 0.002,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcolConfig {
    /// Branch A's GT-class map, min-max normalized, is erased from branch B's input where
    /// >= this (0.6 in the ACoL paper's code, 0.7 in wsolevaluation's runs).
    pub erase_threshold: f64,
    /// Channels of the two 3x3 convs of each branch; unset (null): 1024 on the papers'
    /// layouts (VGG16, ResNet-50, Inception-v3), the backbone's channels elsewhere.
    pub width: Option<usize>,
    /// Which map the `cam` method reads: the fused one (default, as wsolevaluation scores
    /// ACoL), either branch, or branch B without erasing — to see what erasing did.
    pub map: AcolMap,
}

impl Default for AcolConfig {
    fn default() -> Self {
        AcolConfig { erase_threshold: 0.6, width: None, map: AcolMap::Fused }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    /// Validation metric that picks `best.safetensors`.
    pub select_by: SelectBy,
    /// Stop at a non-finite loss (default) or skip that batch.
    pub skip_nonfinite_loss: bool,
    /// Data-parallel runs: batch-norm statistics (and their gradient sums) over the
    /// global batch, all-reduced per layer, as PyTorch's SyncBatchNorm; one process's
    /// statistics are already the whole batch's, so alone it changes nothing.
    pub sync_bn: bool,
    /// Number formats of training: `fp32`, `tf32`, `bf16` or `fp16` (the last two on a
    /// CUDA device only).
    pub precision: Precision,
    /// `precision: fp16`'s dynamic loss scaling, PyTorch's `GradScaler` arguments.
    pub loss_scale: LossScaleConfig,
}

/// `torch.amp.GradScaler(init_scale, growth_factor, backoff_factor, growth_interval)`,
/// with its defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossScaleConfig {
    /// Unset (null): on exactly with `precision: fp16`. `true` scales in any precision,
    /// as `GradScaler(enabled=True)` does in f32 too (on the CPU: the scaler's part of a
    /// step, its checkpoint and `--resume`, in full f32); `false`: never.
    pub enabled: Option<bool>,
    /// The first scale (held in f32, as PyTorch's).
    pub init_scale: f64,
    /// The scale is multiplied by this after `growth_interval` clean steps in a row.
    pub growth_factor: f64,
    /// ... and by this at a step whose gradients hold an inf or NaN (which is skipped).
    pub backoff_factor: f64,
    pub growth_interval: u32,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        LossScaleConfig {
            enabled: None,
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub name: OptimizerName,
    pub lr: f64,
    /// SGD only.
    pub momentum: f64,
    /// SGD: L2 added to the gradient; AdamW: decoupled, p *= 1 - lr * weight_decay.
    pub weight_decay: f64,
    /// SGD only.
    pub nesterov: bool,
    /// AdamW only: the decay rates of the first and second moment estimates.
    pub betas: [f64; 2],
    /// AdamW only: added to the second moment's root.
    pub eps: f64,
    /// Learning-rate multiplier of layers that are not pretrained (the classifier head).
    pub new_layer_lr_mult: f64,
    /// No weight decay for one-dimensional parameters (biases, norms) and a transformer's
    /// position embedding and class token: timm's `create_optimizer(filter_bias_and_bn)`.
    pub filter_bias_and_bn: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub name: ScheduleName,
    pub step_epochs: usize,
    pub gamma: f64,
    pub warmup_epochs: usize,
    /// `step`: epochs added before counting decays, `gamma^((epoch + step_offset) /
    /// step_epochs)` with epochs from 0. 0 decays after `step_epochs` epochs; 1 decays one
    /// epoch earlier, as wsolevaluation's main.py, which calls
    /// `adjust_learning_rate(epoch + 1)` and decays when that is a multiple of
    /// `lr_decay_frequency` (the paper configs use it).
    pub step_offset: usize,
    /// `multistep`: the lr is multiplied by `gamma` once for each milestone reached, epochs
    /// counted from 0 as PyTorch's `MultiStepLR(milestones)`: epoch e (from 0) runs at
    /// `gamma^(milestones <= e)`.
    pub milestones: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// CAM method, for localization metrics and pictures.
    pub cam: CamMethod,
    /// Backbone layer the CAM reads (its torchvision name); unset: the last feature map.
    pub cam_layer: Option<String>,
    pub cam_curve_interval: f64,
    pub iou_thresholds: Vec<u32>,
    /// MaxBoxAccV2 counts every contour (true, the official V2) or only the largest.
    pub multi_contour: bool,
    /// Threshold of the classic CAM-paper numbers (`*_fixed` keys).
    pub fixed_threshold: f64,
    pub split: String,
    /// Which checkpoint the final evaluation of `wsol train` uses.
    pub checkpoint: CheckpointChoice,
    /// Faithfulness metrics of the maps (`avg_drop`, `avg_increase`, `deletion`,
    /// `insertion`, `road_morf`, `road_lerf`, `road` for both): none by default, since each
    /// scores extra perturbed inputs per image (wsol-eval's `faithfulness`).
    pub faithfulness: Vec<String>,
    /// Deletion / Insertion intervals.
    pub faithfulness_steps: usize,
    /// What Deletion / Insertion put in place of removed pixels.
    pub faithfulness_substrate: Substrate,
    /// ROAD's percentiles (pytorch-grad-cam's 10..90).
    pub road_percentiles: Vec<u32>,
    /// Standard deviation of ROAD's imputation noise (the reference's 0.01), seeded by `seed`.
    pub road_noise: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub tensorboard: bool,
    pub every_steps: usize,
    /// CAM overlays (GT box green, predicted box red) of this many fixed validation
    /// images written to TensorBoard each epoch (`val_cam/<k>`).
    pub cam_images: usize,
    /// Histograms of every weight and its gradient to TensorBoard every this many
    /// training steps (`weights/<name>`, `grads/<name>`); 0 = never.
    pub histograms_every: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "run".into(),
            seed: 0,
            device: "cpu".into(),
            tf32: false,
            cudnn_benchmark: false,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            format: DataFormat::Wsol,
            metadata_root: "data/synth/metadata".into(),
            image_root: "data/synth".into(),
            mask_root: None,
            num_classes: 5,
            class_names: None,
            image_size: 224,
            resize_size: None,
            hflip: true,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            batch_size: 32,
            workers: 2,
            skip_bad_images: false,
            train_split: "train".into(),
            val_split: "val".into(),
            test_split: "test".into(),
            synthetic: SynthConfig::default(),
        }
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { train: 1500, val: 200, test: 500, size: 48, seed: 0, clutter: true }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            backbone: Backbone::Tiny,
            method: Method::Cam,
            pretrained: None,
            pretrained_optional: false,
            width: 16,
            pretrained_classifier: false,
            large_feature_map: false,
            freeze_bn: false,
            drop_path_rate: 0.0,
            patch_size: DEIT_PATCH,
            acol: AcolConfig::default(),
            has: HasConfig::default(),
            cutmix: CutMixConfig::default(),
            adl: AdlConfig::default(),
            spg: SpgConfig::default(),
            bas: BasConfig::default(),
            scm: ScmConfig::default(),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            select_by: SelectBy::GtKnownLoc,
            skip_nonfinite_loss: false,
            sync_bn: false,
            precision: Precision::Fp32,
            loss_scale: LossScaleConfig::default(),
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            name: OptimizerName::Sgd,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            betas: [0.9, 0.999],
            eps: 1e-8,
            new_layer_lr_mult: 1.0,
            filter_bias_and_bn: false,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            name: ScheduleName::Step,
            step_epochs: 5,
            gamma: 0.1,
            warmup_epochs: 0,
            step_offset: 0,
            milestones: Vec::new(),
        }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            cam: CamMethod::Cam,
            cam_layer: None,
            cam_curve_interval: 0.01,
            iou_thresholds: vec![30, 50, 70],
            multi_contour: true,
            fixed_threshold: 0.2,
            split: "test".into(),
            checkpoint: CheckpointChoice::Last,
            faithfulness: Vec::new(),
            faithfulness_steps: 20,
            faithfulness_substrate: Substrate::Zero,
            road_percentiles: (1..=9).map(|k| k * 10).collect(),
            road_noise: 0.01,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: "experiments/runs".into(),
            tensorboard: true,
            every_steps: 10,
            cam_images: 8,
            histograms_every: 0,
        }
    }
}

/// torchvision's ImageNet statistics, the default input normalization.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The normalization (mean, std on [0, 1] pixels) that `model.pretrained`'s weights were
/// trained with: torchvision's ImageNet statistics, except EfficientNet-Lite, trained in
/// TensorFlow on (pixel - 127) / 128 (tensorflow/tpu `efficientnet_lite_builder.py`,
/// MEAN_RGB and STDDEV_RGB), and timm's `vit_small_patch16_224` (the AugReg weights, on
/// (pixel - 0.5) / 0.5; DINO's ViT-S/16 uses ImageNet's: set `data.mean` / `data.std`).
/// None without pretrained weights.
pub fn weights_normalization(model: &ModelConfig) -> Option<([f32; 3], [f32; 3])> {
    model.pretrained.as_ref()?;
    Some(match model.backbone {
        Backbone::EfficientNetLite0 => ([127.0 / 255.0; 3], [128.0 / 255.0; 3]),
        Backbone::VitSmall => ([0.5; 3], [0.5; 3]),
        _ => (IMAGENET_MEAN, IMAGENET_STD),
    })
}

/// Where a config key got its value, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Given {
    Default,
    File,
    Set,
}

/// The one place YAML is parsed, so the (deprecated upstream) serde_yaml can be swapped
/// for a fork in one line.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

impl Config {
    /// Reads `path`, applies `--set key=value` overrides in order, validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut cfg = Config::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let named: serde_yaml::Value = parse_yaml(&text).unwrap_or(serde_yaml::Value::Null);
        if named.get("name").is_none() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        }
        cfg.apply_overrides(overrides)?;
        // Pretrained weights expect the input normalization they were trained with, unless
        // the config says otherwise.
        let given_where = |key: &str| {
            let in_file = match key.split_once('.') {
                Some((section, field)) => named.get(section).and_then(|v| v.get(field)).is_some(),
                None => named.get(key).is_some(),
            };
            if overrides.iter().any(|o| o.split_once('=').is_some_and(|(k, _)| k.trim() == key)) {
                Given::Set
            } else if in_file {
                Given::File
            } else {
                Given::Default
            }
        };
        let given = |key: &str| given_where(key) != Given::Default;
        cfg.resolve_precision(given_where("tf32"), given_where("train.precision"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if let Some((mean, std)) = weights_normalization(&cfg.model) {
            if !given("data.mean") {
                cfg.data.mean = mean;
            }
            if !given("data.std") {
                cfg.data.std = std;
            }
        }
        cfg.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    pub fn from_yaml(text: &str) -> Result<Config> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        Ok(parse_yaml(text)?)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config serializes")
    }

    /// Applies `a.b.c=value` overrides; the value is read as YAML, so types are checked
    /// by the same schema as the file. Unknown keys are errors naming the valid ones.
    pub fn apply_overrides(&mut self, overrides: &[String]) -> Result<()> {
        if overrides.is_empty() {
            return Ok(());
        }
        let mut tree = serde_yaml::to_value(&*self)?;
        for item in overrides {
            let (key, raw) = item
                .split_once('=')
                .with_context(|| format!("--set {item}: expected key=value, e.g. --set train.epochs=3"))?;
            let value: serde_yaml::Value =
                parse_yaml(raw).with_context(|| format!("--set {item}: value is not valid YAML"))?;
            let key = key.trim();
            let key = canonical_key(key);
            set_path(&mut tree, key, value).with_context(|| format!("--set {item}"))?;
            // Checked after each override, so a wrong type names its key.
            serde_yaml::from_value::<Config>(tree.clone()).map_err(|e| anyhow::anyhow!("--set {item}: {key}: {e}"))?;
        }
        *self = serde_yaml::from_value(tree).map_err(|e| anyhow::anyhow!("--set: {e}"))?;
        Ok(())
    }

    /// Checks ranges and names the offending key.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        let mut errs: Vec<String> = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                errs.push(msg)
            }
        };
        check(d.num_classes >= 2, format!("data.num_classes: expected >= 2, got {}", d.num_classes));
        check(d.image_size >= 8, format!("data.image_size: expected >= 8 pixels, got {}", d.image_size));
        if let Some(r) = d.resize_size {
            check(
                r >= d.image_size,
                format!("data.resize_size: expected >= data.image_size ({}), got {r}", d.image_size),
            );
        }
        check(d.batch_size >= 1, "data.batch_size: expected >= 1".into());
        check(d.workers >= 1, "data.workers: expected >= 1".into());
        check(d.std.iter().all(|s| *s > 0.0), "data.std: expected positive values".into());
        if d.format == DataFormat::Synthetic {
            let s = &d.synthetic;
            check(s.train >= 1 && s.test >= 1, "data.synthetic: expected train >= 1 and test >= 1 images".into());
            // Its size and class count are the generator's to check (data::synth::generate).
        }
        check(self.model.width >= 1, "model.width: expected >= 1".into());
        let rate = self.model.drop_path_rate;
        check((0.0..1.0).contains(&rate), format!("model.drop_path_rate: expected in [0, 1), got {rate}"));
        // A transformer-only method on a CNN is refused by model.method (methods::build),
        // the root cause, before this could be.
        let transformer_method = matches!(self.model.method, Method::TsCam | Method::Scm);
        check(
            rate == 0.0 || self.model.backbone.is_transformer() || transformer_method,
            format!(
                "model.drop_path_rate: drop path is for the transformer backbones (deit_tiny, deit_small, vit_small), not `{}`; set it to 0",
                self.model.backbone
            ),
        );
        let (patch, size) = (self.model.patch_size, d.image_size as usize);
        if self.model.backbone.is_transformer() {
            check(
                (1..=size).contains(&patch),
                format!("model.patch_size: expected 1..=data.image_size ({}) pixels, got {patch}", d.image_size),
            );
            check(
                !(1..=size).contains(&patch) || size.is_multiple_of(patch),
                format!(
                    "data.image_size: {} is not a multiple of {}'s {patch}-pixel patch (model.patch_size; e.g. image size {} or {})",
                    d.image_size,
                    self.model.backbone,
                    (size / patch.max(1)).max(1) * patch,
                    (size / patch.max(1) + 1) * patch
                ),
            );
        } else {
            check(
                patch == DEIT_PATCH,
                format!(
                    "model.patch_size: patches are for the transformer backbones (deit_tiny, deit_small, vit_small), not `{}`; leave it at 16",
                    self.model.backbone
                ),
            );
        }
        let acol = &self.model.acol;
        check(
            acol.erase_threshold > 0.0 && acol.erase_threshold <= 1.0,
            format!("model.acol.erase_threshold: expected in (0, 1], got {}", acol.erase_threshold),
        );
        check(acol.width != Some(0), "model.acol.width: expected >= 1 (or unset: it follows the backbone)".into());
        let bas = &self.model.bas;
        for (key, v) in [("area_weight", bas.area_weight), ("fg_weight", bas.fg_weight)] {
            check(
                v.is_none_or(|v| v >= 0.0 && v.is_finite()),
                format!("model.bas.{key}: expected >= 0 (or unset: the authors' value), got {v:?}"),
            );
        }
        for (key, v) in [("top_k", bas.top_k), ("width", bas.width)] {
            check(v != Some(0), format!("model.bas.{key}: expected >= 1 (or unset)"));
        }
        if let Some(k) = bas.top_k {
            check(
                k <= self.data.num_classes,
                format!("model.bas.top_k: expected <= data.num_classes ({}), got {k}", self.data.num_classes),
            );
        }
        let scm = &self.model.scm;
        check(scm.layers >= 1, "model.scm.layers: expected >= 1".into());
        for (key, v) in [("threshold", scm.threshold), ("loss_rate", scm.loss_rate), ("schulz_alpha", scm.schulz_alpha)]
        {
            check(v > 0.0 && v.is_finite(), format!("model.scm.{key}: expected > 0, got {v}"));
        }
        for (key, v) in [("first_iterations", scm.first_iterations), ("iterations", scm.iterations)] {
            check(v >= 1, format!("model.scm.{key}: expected >= 1"));
        }
        let adl = &self.model.adl;
        for (key, v) in [("drop_rate", adl.drop_rate), ("drop_threshold", adl.drop_threshold)] {
            check((0.0..=1.0).contains(&v), format!("model.adl.{key}: expected in [0, 1], got {v}"));
        }
        for (k, (h, l)) in self.model.spg.pairs().into_iter().enumerate() {
            check(
                (0.0..=1.0).contains(&h) && (0.0..=1.0).contains(&l) && l <= h,
                format!(
                    "model.spg.threshold_{0}h / threshold_{0}l: expected 0 <= low <= high <= 1, got high {h}, low {l}",
                    k + 1
                ),
            );
        }
        check(
            self.device == "cpu" || self.device.starts_with("cuda"),
            format!("device: expected `cpu`, `cuda` (the local rank's GPU) or `cuda:N`, got `{}`", self.device),
        );
        let t = &self.train;
        check(
            t.optimizer.lr > 0.0 && t.optimizer.lr.is_finite(),
            format!("train.optimizer.lr: expected > 0, got {}", t.optimizer.lr),
        );
        check(
            (0.0..1.0).contains(&t.optimizer.momentum),
            format!("train.optimizer.momentum: expected in [0, 1), got {}", t.optimizer.momentum),
        );
        check(t.optimizer.weight_decay >= 0.0, "train.optimizer.weight_decay: expected >= 0".into());
        check(t.optimizer.new_layer_lr_mult > 0.0, "train.optimizer.new_layer_lr_mult: expected > 0".into());
        check(
            t.optimizer.betas.iter().all(|b| (0.0..1.0).contains(b)),
            format!("train.optimizer.betas: expected two values in [0, 1), got {:?}", t.optimizer.betas),
        );
        check(
            t.optimizer.eps > 0.0 && t.optimizer.eps.is_finite(),
            format!("train.optimizer.eps: expected > 0, got {}", t.optimizer.eps),
        );
        check(
            !(t.optimizer.name == OptimizerName::AdamW && t.optimizer.nesterov),
            "train.optimizer.nesterov: an SGD setting; `adamw` has none (set it false)".into(),
        );
        check(
            t.schedule.name != ScheduleName::Step || t.schedule.step_epochs >= 1,
            "train.schedule.step_epochs: expected >= 1".into(),
        );
        let m = &t.schedule.milestones;
        if t.schedule.name == ScheduleName::MultiStep {
            check(
                !m.is_empty() && m.windows(2).all(|w| w[0] < w[1]),
                format!("train.schedule.milestones: expected ascending epochs (from 0) for `multistep`, e.g. [9, 11, 19], got {m:?}"),
            );
        } else {
            check(
                m.is_empty(),
                format!(
                    "train.schedule.milestones: only read by `name: multistep` (the schedule is `{}`); remove it or set the name",
                    t.schedule.name.as_str()
                ),
            );
        }
        let e = &self.eval;
        let min_interval = wsol_eval::localize::MIN_CAM_CURVE_INTERVAL;
        check(
            (min_interval..1.0).contains(&e.cam_curve_interval),
            format!("eval.cam_curve_interval: expected in [{min_interval}, 1), got {:?}", e.cam_curve_interval),
        );
        check(
            !e.iou_thresholds.is_empty() && e.iou_thresholds.iter().all(|&t| (1..=100).contains(&t)),
            "eval.iou_thresholds: expected percentages in 1..=100, e.g. [30, 50, 70]".into(),
        );
        check(
            e.iou_thresholds.contains(&50),
            "eval.iou_thresholds: must contain 50 (MaxBoxAcc and GT-known Loc use IoU 0.5)".into(),
        );
        check(
            (0.0..1.0).contains(&e.fixed_threshold),
            format!("eval.fixed_threshold: expected in [0, 1), got {}", e.fixed_threshold),
        );
        let faithfulness = self.faithfulness().and_then(|f| f.validate(d.image_size as usize));
        check(faithfulness.is_ok(), faithfulness.err().map(|e| e.to_string()).unwrap_or_default());
        let ls = &self.train.loss_scale;
        check(
            ls.init_scale > 0.0 && (ls.init_scale as f32).is_finite(),
            format!("train.loss_scale.init_scale: expected > 0 and finite in f32, got {}", ls.init_scale),
        );
        check(
            ls.growth_factor > 1.0 && ls.growth_factor.is_finite(),
            format!("train.loss_scale.growth_factor: expected > 1, got {}", ls.growth_factor),
        );
        check(
            ls.backoff_factor > 0.0 && ls.backoff_factor < 1.0,
            format!("train.loss_scale.backoff_factor: expected in (0, 1), got {}", ls.backoff_factor),
        );
        check(ls.growth_interval >= 1, "train.loss_scale.growth_interval: expected >= 1".into());
        check(self.log.every_steps >= 1, "log.every_steps: expected >= 1".into());
        check(
            self.log.histograms_every == 0 || self.log.tensorboard,
            "log.histograms_every: histograms go to TensorBoard; set log.tensorboard: true or log.histograms_every: 0"
                .into(),
        );
        if errs.is_empty() {
            Ok(())
        } else {
            bail!("invalid config: {}", errs.join("; "))
        }
    }

    /// `eval.faithfulness` and its options as wsol-eval takes them; `metrics` empty when
    /// none are asked for. Fails on an unknown metric name.
    pub fn faithfulness(&self) -> Result<wsol_eval::faithfulness::FaithfulnessConfig> {
        use wsol_eval::faithfulness::{FaithfulnessConfig, Metric};
        let e = &self.eval;
        Ok(FaithfulnessConfig {
            metrics: Metric::parse_list(&e.faithfulness)?,
            steps: e.faithfulness_steps,
            substrate: match e.faithfulness_substrate {
                Substrate::Zero => wsol_eval::faithfulness::Substrate::Zero,
                Substrate::Blur => wsol_eval::faithfulness::Substrate::Blur,
            },
            percentiles: e.road_percentiles.clone(),
            road_noise: e.road_noise,
            seed: self.seed,
        })
    }

    /// Folds the older `tf32: true` into `train.precision: tf32`, so the resolved config
    /// (and `--resume`'s comparison) holds one answer: afterwards `tf32` is false and
    /// `train.precision` says it. Where each was given (`Given`) settles a disagreement:
    /// a `--set` beats the file, either beats the default, and `tf32: true` beside a
    /// different `train.precision` given in the same place is an error naming both.
    pub fn resolve_precision(&mut self, tf32: Given, precision: Given) -> Result<()> {
        if !self.tf32 {
            return Ok(());
        }
        let p = self.train.precision;
        if p != Precision::Tf32 {
            if tf32 == precision {
                bail!(
                    "tf32: true (the older spelling of train.precision: tf32) contradicts train.precision: {p}; \
                     keep one: set train.precision (one of {}) and remove tf32",
                    Precision::list()
                );
            }
            if tf32 > precision {
                self.train.precision = Precision::Tf32;
            }
        }
        self.tf32 = false;
        Ok(())
    }

    /// Whether the GPU's f32 matrix products and convolutions may use TF32: `train.precision:
    /// tf32` (or a `tf32: true` not yet folded into it). Under `bf16`/`fp16` the ops autocast
    /// keeps in f32 stay in full f32, as PyTorch's default for matrix products.
    pub fn gemm_tf32(&self) -> bool {
        self.tf32 || self.train.precision == Precision::Tf32
    }

    /// The number formats training runs in: `train.precision`, except that `tf32` only
    /// changes a GPU's products, so on the CPU it is the fp32 run.
    pub fn training_precision(&self) -> Precision {
        match self.train.precision {
            Precision::Tf32 if self.device == "cpu" => Precision::Fp32,
            p => p,
        }
    }

    /// Evaluation has no autocast: fp32, with TF32 products on a GPU when asked.
    pub fn eval_precision(&self) -> Precision {
        match self.device != "cpu" && self.gemm_tf32() {
            true => Precision::Tf32,
            false => Precision::Fp32,
        }
    }

    /// Whether training scales its loss (`train.loss_scale.enabled`, by default fp16's).
    pub fn loss_scaling(&self) -> bool {
        self.train.loss_scale.enabled.unwrap_or_else(|| self.training_precision().needs_loss_scaling())
    }

    /// Training-time resize before the random crop.
    pub fn resize_size(&self) -> u32 {
        self.data.resize_size.unwrap_or_else(|| (self.data.image_size as f64 * 256.0 / 224.0).round() as u32)
    }
}

/// The key a config key is stored under: older spellings of renamed keys map to the
/// current name (`model.head` -> `model.method`).
pub fn canonical_key(key: &str) -> &str {
    match key {
        "model.head" => "model.method",
        other => other,
    }
}

fn set_path(tree: &mut serde_yaml::Value, key: &str, value: serde_yaml::Value) -> Result<()> {
    let mut node = tree;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let here = parts[..i].join(".");
        let map = node.as_mapping_mut().with_context(|| format!("`{here}` is not a section, cannot set `{key}`"))?;
        let known: Vec<String> = map.keys().filter_map(|k| k.as_str().map(String::from)).collect();
        let k = serde_yaml::Value::String(part.to_string());
        if !map.contains_key(&k) {
            let section = if here.is_empty() { "top level".to_string() } else { format!("`{here}`") };
            bail!("unknown config key `{key}` (keys at {section}: {})", known.join(", "));
        }
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.get_mut(&k).unwrap();
    }
    unreachable!("split yields at least one part")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_is_rejected_with_line() {
        let err = Config::from_yaml("train:\n  epochs: 3\n  optimizer:\n    momentun: 0.9\n").unwrap_err().to_string();
        assert!(err.contains("momentun") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn set_overrides_are_typed() {
        let mut c = Config::default();
        c.apply_overrides(&[
            "train.epochs=3".into(),
            "train.optimizer.lr=0.5".into(),
            "model.pretrained=w.safetensors".into(),
            "cudnn_benchmark=true".into(),
        ])
        .unwrap();
        assert!(c.cudnn_benchmark);
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.train.optimizer.lr, 0.5);
        assert_eq!(c.model.pretrained.as_deref(), Some(Path::new("w.safetensors")));
        let err = c.apply_overrides(&["train.epocs=3".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown config key `train.epocs`"), "{err:#}");
        let err = c.apply_overrides(&["train.epochs=abc".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("invalid type") && format!("{err:#}").contains("train.epochs"), "{err:#}");
        let err = c.apply_overrides(&["data.batch_size=-4".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("data.batch_size"), "{err:#}");
        c.apply_overrides(&["model.head=acol".into()]).unwrap();
        assert_eq!(c.model.method, Method::Acol);
        let err = c.apply_overrides(&["model.backbone=resnet19".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("resnet19") && format!("{err:#}").contains("resnet18"), "{err:#}");
    }

    #[test]
    fn pretrained_weights_bring_their_normalization_unless_set() {
        let tmp = tempfile::tempdir().unwrap();
        let load = |yaml: &str, sets: &[&str]| {
            let p = tmp.path().join("c.yaml");
            std::fs::write(&p, yaml).unwrap();
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Config::load(&p, &sets).unwrap().data
        };
        let lite = "model: {backbone: efficientnet_lite0, pretrained: w.pth}\n";
        let d = load(lite, &[]);
        assert_eq!((d.mean, d.std), ([127.0 / 255.0; 3], [128.0 / 255.0; 3]));
        let d = load(&format!("{lite}data: {{mean: [0.5, 0.5, 0.5]}}\n"), &["data.std=[0.25, 0.25, 0.25]"]);
        assert_eq!((d.mean, d.std), ([0.5; 3], [0.25; 3]), "what the config sets wins");
        let d = load("model: {backbone: efficientnet_lite0}\n", &[]);
        assert_eq!((d.mean, d.std), (IMAGENET_MEAN, IMAGENET_STD), "from scratch: the default");
        let d = load("model: {backbone: resnet50, pretrained: w.pth}\n", &[]);
        assert_eq!((d.mean, d.std), (IMAGENET_MEAN, IMAGENET_STD), "torchvision weights");
        let d = load("model: {backbone: vit_small, pretrained: w.safetensors}\n", &[]);
        assert_eq!((d.mean, d.std), ([0.5; 3], [0.5; 3]), "timm's AugReg ViT-S");
        let d = load("model: {backbone: deit_small, pretrained: w.pth}\n", &[]);
        assert_eq!((d.mean, d.std), (IMAGENET_MEAN, IMAGENET_STD), "DeiT");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config::default();
        c.data.batch_size = 0;
        c.eval.cam_curve_interval = 2.0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("data.batch_size") && err.contains("eval.cam_curve_interval"), "{err}");
    }

    #[test]
    fn milestones_belong_to_multistep() {
        let mut c = Config::default();
        c.apply_overrides(&["train.schedule.name=multistep".into()]).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("train.schedule.milestones: expected ascending epochs"), "{err}");
        c.apply_overrides(&["train.schedule.milestones=[9, 11, 19]".into()]).unwrap();
        c.validate().unwrap();
        c.apply_overrides(&["train.schedule.milestones=[11, 9]".into()]).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("got [11, 9]"));
        c.apply_overrides(&["train.schedule.name=step".into(), "train.schedule.milestones=[9]".into()]).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("train.schedule.milestones: only read by `name: multistep` (the schedule is `step`)"),
            "{err}"
        );
    }

    #[test]
    fn a_cam_curve_interval_too_fine_to_hold_is_refused() {
        let mut c = Config::default();
        c.eval.cam_curve_interval = 1e-300;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("eval.cam_curve_interval: expected in [0.0001, 1), got 1e-300"), "{err}");
        c.eval.cam_curve_interval = 0.001;
        c.validate().unwrap();
    }

    #[test]
    fn tf32_is_the_older_spelling_of_precision_tf32() {
        let tmp = tempfile::tempdir().unwrap();
        let load = |yaml: &str, sets: &[&str]| {
            let p = tmp.path().join("c.yaml");
            std::fs::write(&p, yaml).unwrap();
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Config::load(&p, &sets).map_err(|e| format!("{e:#}"))
        };
        let c = load("tf32: true\n", &[]).unwrap();
        assert_eq!((c.tf32, c.train.precision, c.gemm_tf32()), (false, Precision::Tf32, true));
        let c = load("seed: 1\n", &["tf32=true"]).unwrap();
        assert_eq!(c.train.precision, Precision::Tf32);
        let c = load("train: {precision: tf32}\n", &["tf32=true"]).unwrap();
        assert_eq!(c.train.precision, Precision::Tf32);
        let c = load("train: {precision: bf16}\n", &[]).unwrap();
        assert_eq!((c.train.precision, c.gemm_tf32()), (Precision::Bf16, false));
        // A resolved config (tf32: false, train.precision written out) takes `--set tf32=true`.
        let resolved = Config::default().to_yaml();
        assert_eq!(load(&resolved, &["tf32=true"]).unwrap().train.precision, Precision::Tf32);
        // A --set beats the file.
        assert_eq!(load("tf32: true\n", &["train.precision=bf16"]).unwrap().train.precision, Precision::Bf16);
        assert_eq!(load("train: {precision: fp16}\n", &["tf32=true"]).unwrap().train.precision, Precision::Tf32);
        for (yaml, sets) in [
            ("tf32: true\ntrain: {precision: fp16}\n", &[][..]),
            ("tf32: true\ntrain: {precision: fp32}\n", &[][..]),
            ("seed: 0\n", &["tf32=true", "train.precision=bf16"][..]),
        ] {
            let e = load(yaml, sets).unwrap_err();
            assert!(
                e.contains("tf32: true")
                    && e.contains("contradicts train.precision")
                    && e.contains("fp32, tf32, bf16, fp16"),
                "{e}"
            );
        }
        let e = load("train: {precision: fp8}\n", &[]).unwrap_err();
        assert!(e.contains("precision") && e.contains("fp8") && e.contains("bf16"), "{e}");
        let e = load("seed: 0\n", &["train.precision=half"]).unwrap_err();
        assert!(e.contains("train.precision") && e.contains("half") && e.contains("fp16"), "{e}");
        let e = load("seed: 0\n", &["train.loss_scale.growth_interval=0", "train.loss_scale.backoff_factor=1.5"])
            .unwrap_err();
        assert!(e.contains("train.loss_scale.growth_interval") && e.contains("train.loss_scale.backoff_factor"), "{e}");
    }

    #[test]
    fn yaml_round_trip() {
        let c = Config::default();
        let back = Config::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(back.to_yaml(), c.to_yaml());
    }
}
