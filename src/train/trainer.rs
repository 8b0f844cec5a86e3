//! The [`Trainer`]: set-up (or resumption) of a run, its epochs of [`train_step`]s,
//! validation, checkpoints, and the final evaluation into `metrics.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, DType, Device, Storage, Tensor};

use super::checkpoint::{self, PartialEpoch, TrainState};
use super::loss_scale::LossScaler;
use super::optimizer::{model_params, Optimizer};
use super::resume::{check_config, resolve_resume};
use super::step::{train_step_keeping_grads, StepBatch};
use super::{interrupt, schedule, RunLog, TrainOptions};
use crate::cam::{self, CamExtractor};
use crate::config::{CheckpointChoice, Config, Precision};
use crate::data::{epoch_batches, num_batches, ClassNames, Dataset, LoaderConfig, TransformConfig};
use crate::distributed::{self, Collective, Local};
use crate::draws::StepDraws;
use crate::evaluate::{self, EvalOutputs, EvalResult};
use crate::report::hparams as hp;
use crate::report::provenance::Provenance;
use crate::report::tensorboard::{self, box_accuracy_scalars};
use crate::report::{curve_plot, metrics_table, Progress, TbWriter};
use crate::runtime::Model;

pub struct Trainer<'a> {
    cfg: &'a Config,
    /// The ranks training together ([`Local`] alone): rank 0 writes every file.
    dist: &'a dyn Collective,
    quiet: bool,
    device: Device,
    model: Model,
    sgd: Optimizer,
    /// Dynamic loss scaling (fp16's, or `train.loss_scale.enabled`); None without.
    scaler: Option<LossScaler>,
    state: TrainState,
    extractor: Box<dyn CamExtractor>,
    /// Name the classes in TensorBoard's image tags.
    class_names: ClassNames,
    train_ds: Arc<Dataset>,
    val_ds: Option<Arc<Dataset>>,
    test_ds: Arc<Dataset>,
    run_dir: PathBuf,
    ckpt_dir: PathBuf,
    log: RunLog,
    tb: TbWriter,
    provenance: Provenance,
}

/// Running sums of an epoch (kept in the checkpoint of an interrupted one).
struct EpochSums {
    partial: PartialEpoch,
    /// Since the last TensorBoard scalars: loss sum, correct, seen.
    window: (f64, usize, usize),
    bad_images: usize,
    data_wait: Duration,
    steps_timed: u32,
    /// Time in training steps (waiting for data excluded), and in their sums over ranks.
    step_time: Duration,
    allreduce: Duration,
    /// Images the timed steps trained on (all ranks).
    step_images: usize,
}

impl<'a> Trainer<'a> {
    /// Data, model, run directory, optimizer; with `opts.resume`, the state of the run's
    /// last complete checkpoint.
    pub fn new(cfg: &'a Config, opts: &TrainOptions) -> Result<Trainer<'a>> {
        Self::new_distributed(cfg, opts, &Local)
    }

    /// [`Trainer::new`] for one rank of `dist`. Every check that could fail on some ranks
    /// only (files, config) ends in [`distributed::agree`], so all ranks stop together.
    pub fn new_distributed(cfg: &'a Config, opts: &TrainOptions, dist: &'a dyn Collective) -> Result<Trainer<'a>> {
        let root = dist.is_root();
        distributed::check_same_config(dist, &cfg.to_yaml())?;
        distributed::agree(dist, "distributed set-up", check_distributed(cfg, dist.world()))?;
        let precision_note = distributed::agree(dist, "train.precision", check_precision(cfg))?;
        // A resumption is checked against the run's own config before anything is loaded.
        let resolved = (|| -> Result<_> {
            Ok(match &opts.resume {
                Some(p) => {
                    let (dir, state) = resolve_resume(p)?;
                    let notes = check_config(&dir.join("config.yaml"), cfg)?;
                    (opts.out.clone().unwrap_or(dir), Some(state), notes)
                }
                None => (opts.out.clone().unwrap_or_else(|| super::default_run_dir(cfg)), None, Vec::new()),
            })
        })();
        let (run_dir, resume_state, resume_notes) = distributed::agree(dist, "resume", resolved)?;
        // The default directory is stamped with the time: rank 0's names the run.
        let run_dir = PathBuf::from(distributed::broadcast_string(dist, &run_dir.to_string_lossy())?);
        let device = crate::runtime::device(&cfg.device, cfg.gemm_tf32(), cfg.cudnn_benchmark)?;
        // Rank 0 first: it may generate the synthetic set, which the others then find.
        if root {
            distributed::agree(dist, "preparing the data", crate::data::open::prepare_data(cfg, opts.quiet))?;
        } else {
            distributed::agree(dist, "preparing the data", Ok(()))?;
            distributed::agree(dist, "preparing the data", crate::data::open::prepare_data(cfg, true))?;
        }
        if root {
            distributed::agree(dist, "preparing the data", Ok(()))?;
        }
        let loaded = (|| -> Result<_> {
            let train_ds = crate::data::open::load_split(cfg, &cfg.data.train_split)?;
            let val_ds = match crate::data::open::split_exists(cfg, &cfg.data.val_split) {
                true => Some(crate::data::open::load_split(cfg, &cfg.data.val_split)?),
                false => None,
            };
            let test_ds = crate::data::open::load_split(cfg, &cfg.eval.split)?;
            let class_names = ClassNames::load(cfg)?;
            let model = crate::runtime::build_model(cfg, &device)?;
            Ok((train_ds, val_ds, test_ds, class_names, model))
        })();
        let (train_ds, val_ds, test_ds, class_names, model) = distributed::agree(dist, "loading", loaded)?;
        let cost_warning = crate::methods::cost_warning(&cfg.model, &model.varmap);
        let extractor = cam::by_name(cfg.eval.cam, cfg.eval.cam_layer.as_deref(), model.net.as_ref())?;

        let ckpt_dir = run_dir.join("checkpoints");
        let mut log = RunLog { file: None, quiet: opts.quiet || !root, muted: !root };
        if root {
            let made = (|| -> Result<()> {
                std::fs::create_dir_all(&ckpt_dir)
                    .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
                wsol_eval::fs::atomic_write(&run_dir.join("config.yaml"), cfg.to_yaml().as_bytes())
            })();
            distributed::agree(dist, "run directory", made)?;
            log.file = std::fs::OpenOptions::new().create(true).append(true).open(run_dir.join("train.log")).ok();
        } else {
            distributed::agree(dist, "run directory", Ok(()))?;
        }
        let provenance = Provenance::detect(&cfg.device, cfg.training_precision().as_str());
        log.line(None, &format!("run: {}", provenance.summary()));
        let warnings = [
            cost_warning,
            crate::models::receptive_field_warning(&cfg.model, cfg.data.image_size as usize),
            crate::runtime::pretrained_missing(cfg),
            precision_note,
        ];
        for w in warnings.into_iter().flatten() {
            log.warn(None, &w);
        }
        for note in &resume_notes {
            log.warn(None, note);
        }
        let tb_dir = run_dir.join("tb");
        // A resumed run already holds its start record (TensorBoard keeps the first one).
        let started_before = tensorboard::dir_has_early_tag(&tb_dir, hp::SESSION_START_TAG);
        let mut tb = if cfg.log.tensorboard && root { TbWriter::new(&tb_dir) } else { TbWriter::disabled() };
        if tb.is_enabled() && !started_before {
            write_session_start(&mut tb, cfg, opts.own_experiment);
        } else if started_before && cfg.log.tensorboard && !resume_notes.is_empty() {
            log.line(None, "note: TensorBoard's HParams view keeps the config values the run started with");
        }

        // An optional pretrained file that is absent leaves nothing pretrained to go slow on:
        // from scratch, every layer trains at `lr`.
        let scratch = crate::runtime::pretrained_missing(cfg).is_some();
        let params = model_params(&model.varmap, model.net.as_ref(), &cfg.train.optimizer, scratch);
        let mut sgd = Optimizer::new(params, &cfg.train.optimizer);
        let mut state = TrainState {
            epochs_done: 0,
            global_step: 0,
            best_score: None,
            best_epoch: None,
            seed: cfg.seed,
            partial_epoch: None,
            model_file: None,
            optim_file: None,
            loss_scale: None,
        };
        let mut scaler = cfg.loss_scaling().then(|| LossScaler::new(&cfg.train.loss_scale));
        match &resume_state {
            Some(state_path) => {
                let loaded =
                    load_resume_checkpoint(state_path, &model.varmap, &mut sgd, opts.use_previous_checkpoint, &mut log)
                        .inspect_err(|e| append_error(&run_dir.join("train.log"), e));
                state = distributed::agree(dist, "loading the checkpoint", loaded)?;
                // Whatever a killed run logged after this checkpoint is replaced by what follows.
                tb.restart_at(state.global_step + 1);
                let (dir, step) = (run_dir.display(), state.global_step);
                let line = match &state.partial_epoch {
                    Some(p) => format!(
                        "resuming {dir} in epoch {} after batch {} (step {step})",
                        state.epochs_done + 1,
                        p.batches_done
                    ),
                    None => format!("resuming {dir} after epoch {} (step {step})", state.epochs_done),
                };
                log.line(None, &line);
                match (&mut scaler, state.loss_scale) {
                    (Some(s), Some(saved)) => s.restore(saved),
                    (Some(s), None) => log.line(
                        None,
                        &format!(
                            "note: the checkpoint holds no loss scale (its run scaled none): starting at {}",
                            s.scale()
                        ),
                    ),
                    (None, _) => {}
                }
            }
            None => log.line(None, &format!("run directory: {}", run_dir.display())),
        }
        if dist.world() > 1 {
            // Every rank starts from rank 0's weights, whatever its own initialization drew.
            let vars: Vec<(String, candle_core::Var)> =
                model.varmap.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut vars = vars;
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            distributed::broadcast_params(dist, &vars)?;
            let per_rank = cfg.data.batch_size / dist.world();
            log.line(
                None,
                &format!(
                    "distributed: {} ranks ({}), {per_rank} images per rank per step",
                    dist.world(),
                    dist.engine()
                ),
            );
        }
        Ok(Trainer {
            cfg,
            dist,
            // Progress bars from rank 0 only.
            quiet: opts.quiet || !root,
            device,
            model,
            sgd,
            scaler,
            state,
            extractor,
            class_names,
            train_ds,
            val_ds,
            test_ds,
            run_dir,
            ckpt_dir,
            log,
            tb,
            provenance,
        })
    }

    /// The remaining epochs, then the final evaluation. A run that fails ends its
    /// `train.log` with the error (an interrupt has logged its own line already).
    pub fn run(self) -> Result<(PathBuf, EvalResult)> {
        let log = self.run_dir.join("train.log");
        let root = self.dist.is_root();
        let result = self.epochs_then_test();
        if let Err(e) = &result {
            if root && e.downcast_ref::<interrupt::Interrupted>().is_none() {
                append_error(&log, e);
            }
        }
        result
    }

    fn epochs_then_test(mut self) -> Result<(PathBuf, EvalResult)> {
        for epoch in self.state.epochs_done..self.cfg.train.epochs {
            self.epoch(epoch)?;
        }
        self.final_evaluation()
    }

    fn transform(&self) -> TransformConfig {
        let d = &self.cfg.data;
        TransformConfig {
            image_size: d.image_size,
            resize_size: self.cfg.resize_size(),
            train: true,
            hflip: d.hflip,
            mean: d.mean,
            std: d.std,
        }
    }

    /// One epoch: its steps (continuing an interrupted one), its log line, validation
    /// and checkpoints.
    fn epoch(&mut self, epoch: usize) -> Result<()> {
        let cfg = self.cfg;
        let epochs = cfg.train.epochs;
        let lr = schedule::lr_at(&cfg.train.schedule, cfg.train.optimizer.lr, epoch, epochs);
        let started = Instant::now();
        let samples = self.train_ds.meta.samples.len();
        let steps_per_epoch = num_batches(samples, cfg.data.batch_size, true).max(1);
        let progress = Progress::new(steps_per_epoch as u64, &format!("epoch {}/{epochs}", epoch + 1), self.quiet);
        // An interrupted epoch continues after its last trained batch.
        let partial =
            if epoch == self.state.epochs_done { self.state.partial_epoch.take() } else { None }.unwrap_or_default();
        let loader = LoaderConfig {
            batch_size: cfg.data.batch_size,
            shuffle: true,
            drop_last: samples >= cfg.data.batch_size,
            workers: cfg.data.workers,
            seed: cfg.seed,
            epoch: epoch as u64,
            transform: self.transform(),
            skip_batches: partial.batches_done,
            skip_bad: cfg.data.skip_bad_images,
            shard: (self.dist.rank(), self.dist.world()),
            whole_batches: false,
        };
        progress.inc(partial.batches_done as u64);
        let mut sums = EpochSums {
            partial,
            window: (0.0, 0, 0),
            bad_images: 0,
            data_wait: Duration::ZERO,
            steps_timed: 0,
            step_time: Duration::ZERO,
            allreduce: Duration::ZERO,
            step_images: 0,
        };
        let mut batches = epoch_batches(self.train_ds.clone(), loader);
        loop {
            // Time the step spends waiting for its batch: zero when decoding keeps up.
            let waited = Instant::now();
            let Some(batch) = batches.next() else { break };
            sums.data_wait += waited.elapsed();
            sums.steps_timed += 1;
            if self.interrupt_requested()? {
                return Err(self.interrupted(epoch, &progress, sums.partial));
            }
            let batch = batch?;
            sums.partial.batches_done += 1;
            for e in &batch.skipped {
                sums.bad_images += 1;
                if sums.bad_images <= 5 {
                    self.log
                        .warn(Some(&progress), &format!("warning: skipped a bad image (data.skip_bad_images): {e}"));
                }
            }
            // A rank whose shard is empty still takes part in the step's sums.
            if !batch.labels.is_empty() || self.dist.world() > 1 {
                let size = cfg.data.image_size as usize;
                let step_batch = StepBatch { images: batch.images, labels: batch.labels, size };
                self.step(epoch, step_batch, &batch.indices, lr, &mut sums, &progress)?;
            }
            progress.inc(1);
        }
        progress.finish();
        self.end_epoch(epoch, lr, started, &sums)
    }

    /// One step of the epoch and its bookkeeping: running sums, TensorBoard, progress; a
    /// non-finite loss skips the batch (`train.skip_nonfinite_loss`) or stops the run.
    fn step(
        &mut self,
        epoch: usize,
        batch: StepBatch,
        indices: &[usize],
        lr: f64,
        sums: &mut EpochSums,
        progress: &Progress,
    ) -> Result<()> {
        let cfg = self.cfg;
        let step = self.state.global_step;
        distributed::test_stall(self.dist);
        let started = Instant::now();
        let dist = (self.dist.world() > 1).then_some(self.dist);
        let every = cfg.log.histograms_every;
        let histograms = every > 0 && self.tb.is_enabled() && (step + 1).is_multiple_of(every);
        let (r, grads) = train_step_keeping_grads(
            self.model.net.as_ref(),
            &mut self.sgd,
            &cfg.model,
            StepDraws::seeded(cfg.seed, step),
            batch,
            &self.device,
            lr,
            false,
            histograms,
            dist,
            cfg.train.sync_bn,
            self.scaler.as_mut(),
        )?;
        let n = r.seen;
        sums.step_time += started.elapsed();
        sums.allreduce += r.times.allreduce;
        sums.step_images += n;
        if r.overflow {
            // fp16's normal course, as PyTorch's GradScaler: the step counts, the update is skipped.
            sums.partial.overflows += 1;
        } else if !r.updated {
            // The first images of the batch, for the message.
            let samples = &self.train_ds.meta.samples;
            let ids: Vec<&str> = indices.iter().take(4).map(|&i| samples[i].image_id.as_str()).collect();
            if cfg.train.skip_nonfinite_loss {
                sums.partial.skipped += 1;
                let msg = format!(
                    "warning: skipped batch with non-finite loss at epoch {} step {step} (images {})",
                    epoch + 1,
                    ids.join(", ")
                );
                self.log.warn(Some(progress), &msg);
                return Ok(());
            }
            let last = self.ckpt_dir.join("last.safetensors");
            let kept = match last.exists() {
                true => format!("the last good checkpoint is kept at {}", last.display()),
                false => "no checkpoint was written yet".into(),
            };
            bail!(
                "loss became {} at epoch {} step {step} ({kept}); hint: lower train.optimizer.lr, check the images of this batch ({}…), or set train.skip_nonfinite_loss: true",
                r.loss,
                epoch + 1,
                ids.join(", ")
            );
        }
        let p = &mut sums.partial;
        p.loss_sum += r.loss * n as f64;
        p.correct += r.correct;
        p.seen += n;
        let w = &mut sums.window;
        *w = (w.0 + r.loss * n as f64, w.1 + r.correct, w.2 + n);
        self.state.global_step += 1;
        let gs = self.state.global_step;
        if gs.is_multiple_of(cfg.log.every_steps) {
            self.tb.add_scalar("train/loss", (w.0 / w.2 as f64) as f32, gs);
            self.tb.add_scalar("train/acc", (w.1 as f64 * 100.0 / w.2 as f64) as f32, gs);
            self.tb.add_scalar("train/lr", lr as f32, gs);
            if let Some(s) = &self.scaler {
                self.tb.add_scalar("train/loss_scale", s.scale(), gs);
            }
            *w = (0.0, 0, 0);
        }
        if let Some(grads) = grads {
            if let Err(e) = self.histograms(&grads, gs) {
                self.log.warn(Some(progress), &format!("warning: no histograms at step {gs}: {e:#}"));
            }
        }
        progress.set_message(format!(
            "loss {:.4} acc {:.1}%",
            p.loss_sum / p.seen as f64,
            p.correct as f64 * 100.0 / p.seen as f64
        ));
        Ok(())
    }

    /// `weights/<name>` and `grads/<name>` of every parameter after step `gs` (variables
    /// without a gradient, such as batch-norm statistics, get the first only).
    fn histograms(&mut self, grads: &GradStore, gs: usize) -> Result<()> {
        for p in self.sgd.params() {
            with_f32_values(p.var.as_tensor(), |v| self.tb.add_histogram(&format!("weights/{}", p.name), v, gs))?;
            if let Some(g) = grads.get(p.var.as_tensor()) {
                with_f32_values(g, |v| self.tb.add_histogram(&format!("grads/{}", p.name), v, gs))?;
            }
        }
        Ok(())
    }

    /// Ctrl-C or SIGTERM on any rank (all of them stop at the same step).
    fn interrupt_requested(&self) -> Result<bool> {
        let mut flag = [interrupt::requested() as u64];
        if self.dist.world() > 1 {
            self.dist.all_reduce_sum_u64(&mut flag)?;
        }
        Ok(flag[0] > 0)
    }

    /// Ctrl-C or SIGTERM: a checkpoint of the unfinished epoch, then the error that exits 130.
    fn interrupted(&mut self, epoch: usize, progress: &Progress, partial: PartialEpoch) -> anyhow::Error {
        progress.finish();
        self.state.partial_epoch = Some(partial);
        if let Err(e) = self.checkpoint("last") {
            return e;
        }
        self.tb.flush();
        let msg = format!(
            "interrupted in epoch {} after step {}; checkpoint written to {} — continue with `wsol train --resume {}`",
            epoch + 1,
            self.state.global_step,
            self.ckpt_dir.join("last.safetensors").display(),
            self.run_dir.display()
        );
        self.log.line(None, &msg);
        interrupt::Interrupted(msg).into()
    }

    /// The epoch's scalars and log line, validation (and `best`), the `last` checkpoint.
    fn end_epoch(&mut self, epoch: usize, lr: f64, started: Instant, sums: &EpochSums) -> Result<()> {
        let epochs = self.cfg.train.epochs;
        let p = &sums.partial;
        anyhow::ensure!(p.seen > 0, "epoch {} had no usable batch", epoch + 1);
        let (train_loss, train_acc) = (p.loss_sum / p.seen as f64, p.correct as f64 * 100.0 / p.seen as f64);
        let gs = self.state.global_step;
        self.tb.add_scalar("epoch/train_loss", train_loss as f32, gs);
        self.tb.add_scalar("epoch/train_acc", train_acc as f32, gs);
        self.tb.add_scalar("epoch/lr", lr as f32, gs);
        let wait_ms = sums.data_wait.as_secs_f64() * 1e3 / sums.steps_timed.max(1) as f64;
        self.tb.add_scalar("epoch/data_wait_ms_per_step", wait_ms as f32, gs);

        let mut line =
            format!("epoch {}/{epochs}  lr {lr:.2e}  loss {train_loss:.4}  train acc {train_acc:.2}", epoch + 1);
        line.push_str(&format!("  data wait {wait_ms:.1} ms/step"));
        let steps = sums.steps_timed.max(1) as f64;
        let step_ms = sums.step_time.as_secs_f64() * 1e3 / steps;
        let rate = sums.step_images as f64 / sums.step_time.as_secs_f64().max(1e-9);
        line.push_str(&format!("  step {step_ms:.1} ms ({rate:.0} img/s)"));
        if self.dist.world() > 1 {
            let ms = sums.allreduce.as_secs_f64() * 1e3 / steps;
            line.push_str(&format!("  allreduce {ms:.1} ms/step"));
        }
        if p.skipped > 0 {
            line.push_str(&format!("  skipped {} batches", p.skipped));
        }
        if let Some(s) = &self.scaler {
            let scale = s.scale();
            // 65536 as it is, a scale far from 1 in exponent form.
            let scale = match (1e-3..1e7).contains(&scale) {
                true => format!("{scale}"),
                false => format!("{scale:e}"),
            };
            line.push_str(&format!("  loss scale {scale} ({} overflow steps skipped)", p.overflows));
        }
        if sums.bad_images > 0 {
            line.push_str(&format!("  skipped {} bad images", sums.bad_images));
        }
        self.state.epochs_done = epoch + 1;
        if self.val_ds.is_some() {
            self.validate(epoch, &mut line)?;
        } else if epoch + 1 == epochs {
            self.state.best_epoch = Some(epoch + 1);
            self.checkpoint("best")?;
        }
        self.checkpoint("last")?;
        self.tb.flush();
        line.push_str(&format!("  ({:.1}s)", started.elapsed().as_secs_f64()));
        self.log.line(None, &line);
        Ok(())
    }

    /// Scores the val split, logs it (and CAM overlays) to TensorBoard, and saves `best`
    /// when `train.select_by` improved.
    fn validate(&mut self, epoch: usize, line: &mut String) -> Result<()> {
        let cfg = self.cfg;
        let Some(val) = self.val_ds.clone() else { return Ok(()) };
        let gs = self.state.global_step;
        let batches = num_batches(val.meta.samples.len(), cfg.data.batch_size, false) as u64;
        let vp = Progress::new(batches, "validate", self.quiet);
        let net = self.model.inference_net(cfg)?;
        let outputs = EvalOutputs::default();
        let (ex, dev) = (self.extractor.as_ref(), &self.device);
        let r = evaluate::evaluate_sharded(net.as_ref(), ex, val.clone(), cfg, dev, &vp, outputs, self.dist)?;
        vp.finish();
        for (k, v) in r.to_json().as_object().expect("metrics are an object") {
            if let Some(x) = v.as_f64().filter(|_| k != "num_images") {
                self.tb.add_scalar(&format!("val/{k}"), x as f32, gs);
            }
        }
        if let Some(l) = &r.loc {
            let (ious, multi) = (&cfg.eval.iou_thresholds, cfg.eval.multi_contour);
            for (tag, v) in box_accuracy_scalars(&l.curves, ious, multi) {
                self.tb.add_scalar(&format!("val/{tag}"), v as f32, gs);
            }
            // Drawn only when it goes somewhere: a chart costs a few milliseconds.
            if self.tb.is_enabled() {
                match curve_plot::curve_png(&l.curves) {
                    Ok(png) => self.tb.add_image_png("val_curve", &png, curve_plot::WIDTH, curve_plot::HEIGHT, gs),
                    Err(e) => self.log.line(None, &format!("warning: no accuracy curve this epoch: {e:#}")),
                }
            }
        }
        line.push_str(&format!("  val top1 {:.2}", r.top1_cls.unwrap_or(f64::NAN)));
        if self.tb.is_enabled() && cfg.log.cam_images > 0 {
            let threshold = r.loc.as_ref().map_or(cfg.eval.fixed_threshold, |l| l.best_threshold_v1);
            let (ex, n) = (self.extractor.as_ref(), cfg.log.cam_images);
            match evaluate::cam_overlays(net.as_ref(), ex, &val, cfg, &self.device, n, threshold) {
                Ok(pngs) => {
                    let s = cfg.data.image_size;
                    for (k, png) in pngs.iter().enumerate() {
                        let tag = val_cam_tag(k, self.class_names.name(val.meta.samples[k].label));
                        self.tb.add_image_png(&tag, png, s, s, gs);
                    }
                }
                Err(e) => self.log.warn(None, &format!("warning: no CAM overlays this epoch: {e:#}")),
            }
        }
        if let Some(l) = &r.loc {
            line.push_str(&format!("  gt-known {:.2}  v2 {:.2}", l.gt_known_loc, l.maxboxacc_v2));
        }
        if let Some(score) = r.metric(cfg.train.select_by.as_str()) {
            if self.state.best_score.is_none_or(|b| score > b) {
                self.state.best_score = Some(score);
                self.state.best_epoch = Some(epoch + 1);
                self.checkpoint("best")?;
                line.push_str("  *best*");
            }
        }
        Ok(())
    }

    /// Saves the weights, optimizer state and counters as checkpoint `tag` (`last`, `best`).
    fn checkpoint(&self, tag: &str) -> Result<()> {
        if !self.dist.is_root() {
            return Ok(());
        }
        let state = TrainState { loss_scale: self.scaler.as_ref().map(|s| s.state()), ..self.state.clone() };
        checkpoint::save(&self.ckpt_dir, tag, &self.model.varmap, self.sgd.state(), &state)
    }

    /// The test split scored with `eval.checkpoint`'s weights, into `metrics.json`,
    /// TensorBoard and the log.
    fn final_evaluation(mut self) -> Result<(PathBuf, EvalResult)> {
        let cfg = self.cfg;
        let tag = cfg.eval.checkpoint.as_str();
        let ckpt = self.ckpt_dir.join(format!("{tag}.safetensors"));
        if cfg.eval.checkpoint == CheckpointChoice::Best && ckpt.exists() {
            crate::runtime::load_weights(&self.model.varmap, &ckpt)?;
        }
        let batches = num_batches(self.test_ds.meta.samples.len(), cfg.data.batch_size, false) as u64;
        let tp = Progress::new(batches, "test", self.quiet);
        let net = self.model.inference_net(cfg)?;
        let outputs = EvalOutputs { per_image: true, faithfulness: true, ..EvalOutputs::default() };
        let test_ds = self.test_ds.clone();
        // Sharded like validation; rank 0 receives the per-image rows and faithfulness
        // values and writes what one process writes.
        let (ex, dev) = (self.extractor.as_ref(), &self.device);
        let result = evaluate::evaluate_sharded(net.as_ref(), ex, test_ds, cfg, dev, &tp, outputs, self.dist)?;
        tp.finish();
        if !self.dist.is_root() {
            return Ok((self.run_dir, result));
        }
        let extra =
            [("checkpoint", serde_json::json!(ckpt.display().to_string())), ("provenance", self.provenance.to_json())];
        result.write(&self.run_dir, &extra)?;
        for (k, v) in result.to_json().as_object().expect("metrics are an object") {
            if let Some(x) = v.as_f64().filter(|_| k != "num_images") {
                self.tb.add_scalar(&format!("test/{k}"), x as f32, self.state.global_step);
            }
        }
        // The score `best` was chosen by (what a sweep ranks its trials by), beside the last
        // epoch's `val/` ones.
        if let Some(best) = self.state.best_score {
            self.tb.add_scalar(&format!("best_val/{}", cfg.train.select_by), best as f32, self.state.global_step);
        }
        let end = hp::session_end_content(hp::SessionStatus::Success, wall_time());
        self.tb.add_plugin_record(hp::SESSION_END_TAG, hp::PLUGIN_NAME, end, self.state.global_step);
        self.tb.flush();
        // The table goes to the log here and to stdout from `wsol train` (a sweep's trials
        // print none).
        self.log.write_file(&metrics_table(&result.table_rows()));
        self.log.line(None, &format!("metrics written to {}", self.run_dir.join("metrics.json").display()));
        Ok((self.run_dir, result))
    }
}

/// What a distributed run needs of its config: a global batch that the ranks share
/// equally; synchronized batch norm on the CPU, where its fused op runs.
fn check_distributed(cfg: &Config, world: usize) -> Result<()> {
    if world == 1 {
        return Ok(());
    }
    let b = cfg.data.batch_size;
    if !b.is_multiple_of(world) {
        bail!(
            "data.batch_size: {b} is the global batch and must divide evenly among the {world} ranks; expected a multiple of {world} (e.g. {})",
            b.div_ceil(world) * world
        );
    }
    if cfg.train.sync_bn && cfg.device != "cpu" {
        bail!(
            "train.sync_bn: true runs on the CPU only (the MPI engine's device), but device is `{}`; set device: cpu or train.sync_bn: false",
            cfg.device
        );
    }
    Ok(())
}

/// Whether `train.precision` can run on `device`; the warning to give when it changes
/// nothing there. bf16 and fp16 need CUDA (the CPU kernels compute in f32 only). On a GPU
/// they are refused too until the forward pass applies `models::autocast`'s casting rules:
/// the rules and fp16's loss scaler (wired into the step) are ready, the 16-bit forward is
/// not, and a run must not claim a precision it did not compute in.
fn check_precision(cfg: &Config) -> Result<Option<String>> {
    let p = cfg.train.precision;
    let cpu = cfg.device == "cpu";
    if p.is_mixed() && cpu {
        bail!(
            "train.precision: {p} needs a CUDA device (device: cuda:N, wsol built with --features cuda): the CPU \
             kernels compute in f32 only; on the CPU set train.precision: fp32 (one of {})",
            Precision::list()
        );
    }
    if p.is_mixed() {
        bail!(
            "train.precision: {p} on {}: mixed-precision training is not implemented on the GPU yet (its casting \
             rules and fp16's loss scaler are in place, the 16-bit forward pass is not); set train.precision: \
             fp32 or tf32",
            cfg.device
        );
    }
    Ok((p == Precision::Tf32 && cpu).then(|| {
        "warning: train.precision: tf32 (or tf32: true) changes only a GPU's matrix products; on the CPU this \
         run is fp32, and its provenance says so"
            .to_string()
    }))
}

/// The HParams records of a run's start: its experiment (unless a sweep writes one for
/// all its trials) and its session's hyperparameters, at step 0 so that a resumed run's
/// purge of later steps keeps them.
fn write_session_start(tb: &mut TbWriter, cfg: &Config, own_experiment: bool) {
    let now = wall_time();
    let hparams = super::hparams::config_hparams(cfg);
    if own_experiment {
        let experiment = super::hparams::run_experiment(cfg, &hparams, now);
        tb.add_plugin_record(hp::EXPERIMENT_TAG, hp::PLUGIN_NAME, experiment.plugin_content(), 0);
    }
    let start = hp::SessionStart { hparams, group_name: String::new(), start_time_secs: now };
    tb.add_plugin_record(hp::SESSION_START_TAG, hp::PLUGIN_NAME, start.plugin_content(), 0);
    tb.flush();
}

/// Calls `f` with the tensor's values as f32: a contiguous CPU f32 tensor's own storage
/// (no copy), else a copy on the host.
fn with_f32_values(t: &Tensor, f: impl FnOnce(&[f32])) -> Result<()> {
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            f(&cpu.as_slice::<f32>()?[start..end]);
            return Ok(());
        }
    }
    f(&t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    Ok(())
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Ends `train.log` with the error the run stops on, as the console shows it.
fn append_error(log: &Path, err: &anyhow::Error) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(f, "error: {}", crate::error::message(err));
    }
}

/// Loads the checkpoint named by `state_path`; if it is damaged, says so with its path and,
/// when asked, falls back to the checkpoint saved before it.
fn load_resume_checkpoint(
    state_path: &Path,
    varmap: &candle_nn::VarMap,
    sgd: &mut Optimizer,
    use_previous: bool,
    log: &mut RunLog,
) -> Result<TrainState> {
    let err = match checkpoint::load(state_path, varmap, |m| sgd.load_state(m)) {
        Ok(state) => return Ok(state),
        Err(e) => e,
    };
    let dir = state_path.parent().unwrap_or(Path::new("."));
    let tag = state_path.file_stem().unwrap_or_default().to_string_lossy();
    let previous = checkpoint::previous_state_path(dir, &tag);
    let Ok(prev) = checkpoint::load_state(&previous) else {
        return Err(err);
    };
    if !use_previous {
        bail!(
            "{}; `--use-previous-checkpoint` resumes from the one saved before it (step {}, {})",
            crate::error::message(&err),
            prev.global_step,
            previous.display()
        );
    }
    log.line(
        None,
        &format!("{}; resuming from the previous checkpoint (step {})", crate::error::message(&err), prev.global_step),
    );
    checkpoint::load(&previous, varmap, |m| sgd.load_state(m))
        .with_context(|| format!("the previous checkpoint {} cannot be loaded either", previous.display()))
}

/// TensorBoard tag of the `k`-th validation overlay: `val_cam/<k>`, and `_<GT class name>`
/// when the classes are named (spaces and slashes, which TensorBoard would read as
/// grouping, become `_`).
fn val_cam_tag(k: usize, class_name: Option<&str>) -> String {
    match class_name {
        Some(n) => {
            let n: String = n.chars().map(|c| if c.is_alphanumeric() || "-.".contains(c) { c } else { '_' }).collect();
            format!("val_cam/{k}_{n}")
        }
        None => format!("val_cam/{k}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlay_tags_name_the_class_when_known() {
        assert_eq!(super::val_cam_tag(3, None), "val_cam/3");
        assert_eq!(super::val_cam_tag(0, Some("disk")), "val_cam/0_disk");
        assert_eq!(super::val_cam_tag(7, Some("great white shark/x")), "val_cam/7_great_white_shark_x");
    }
}
