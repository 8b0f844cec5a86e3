//! The training loop: batches -> forward -> method loss -> backward -> SGD, per-epoch
//! validation, checkpoints, TensorBoard, and the final evaluation into `metrics.json`.

pub mod checkpoint;
pub mod interrupt;
pub mod optimizer;
pub mod schedule;
pub mod sweep;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor, D};

use crate::cam;
use crate::config::Config;
use crate::data::{epoch_batches, num_batches, LoaderConfig, TransformConfig};
use crate::evaluate::{self, evaluate, EvalResult};
use crate::report::{metrics_table, Progress, TbWriter};
use checkpoint::{PartialEpoch, TrainState};
use optimizer::{Param, Sgd};

pub struct TrainOptions {
    /// Run directory; None = `<log.dir>/<name>-<UTC timestamp>`.
    pub out: Option<PathBuf>,
    /// Run directory or checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// When the latest checkpoint cannot be loaded, resume from the one saved before it.
    pub use_previous_checkpoint: bool,
    pub quiet: bool,
}

/// Appends to `<run>/train.log` and echoes to the console unless quiet.
struct RunLog {
    file: Option<std::fs::File>,
    quiet: bool,
}

impl RunLog {
    fn line(&mut self, progress: Option<&Progress>, text: &str) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{text}");
        }
        if !self.quiet {
            match progress {
                Some(p) => p.println(text),
                None => eprintln!("{text}"),
            }
        }
    }
}

pub fn default_run_dir(cfg: &Config) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace([':', '-'], "");
    cfg.log.dir.join(format!("{}-{}", cfg.name, stamp.trim_end_matches('Z')))
}

/// Finds `checkpoints/last.json` from a run directory or any file of a checkpoint.
pub fn resolve_resume(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let (ckpt_dir, tag) = if path.is_dir() {
        let dir = if path.join("checkpoints").is_dir() { path.join("checkpoints") } else { path.to_path_buf() };
        (dir, "last".to_string())
    } else if path.exists() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tag = name.split('.').next().unwrap_or("last").to_string();
        (path.parent().unwrap_or(Path::new(".")).to_path_buf(), tag)
    } else {
        bail!("--resume {}: no such run directory or checkpoint", path.display());
    };
    let state = ckpt_dir.join(format!("{tag}.json"));
    if !state.exists() {
        bail!("--resume {}: no complete checkpoint found (expected {})", path.display(), state.display());
    }
    let run_dir = if ckpt_dir.file_name().is_some_and(|n| n == "checkpoints") {
        ckpt_dir.parent().unwrap().to_path_buf()
    } else {
        ckpt_dir.clone()
    };
    Ok((run_dir, state))
}

/// Loads the checkpoint named by `state_path`; if it is damaged, says so with its path and,
/// when asked, falls back to the checkpoint saved before it.
fn load_resume_checkpoint(
    state_path: &Path,
    varmap: &candle_nn::VarMap,
    sgd: &mut Sgd,
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

pub fn train(cfg: &Config, opts: &TrainOptions) -> Result<(PathBuf, EvalResult)> {
    interrupt::install();
    let device = crate::runtime::device(&cfg.device, cfg.tf32, cfg.cudnn_benchmark)?;
    crate::data::open::prepare_data(cfg, opts.quiet)?;
    let train_ds = crate::data::open::load_split(cfg, &cfg.data.train_split)?;
    let val_ds = if crate::data::open::split_exists(cfg, &cfg.data.val_split) {
        Some(crate::data::open::load_split(cfg, &cfg.data.val_split)?)
    } else {
        None
    };
    let test_ds = crate::data::open::load_split(cfg, &cfg.eval.split)?;
    let model = crate::runtime::build_model(cfg, &device)?;
    let extractor = cam::by_name(cfg.eval.cam, cfg.eval.cam_layer.as_deref(), model.net.as_ref())?;

    // Run directory, resolved config, log.
    let (run_dir, resume_state) = match &opts.resume {
        Some(p) => {
            let (dir, state) = resolve_resume(p)?;
            (opts.out.clone().unwrap_or(dir), Some(state))
        }
        None => (opts.out.clone().unwrap_or_else(|| default_run_dir(cfg)), None),
    };
    let ckpt_dir = run_dir.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    wsol_eval::fs::atomic_write(&run_dir.join("config.yaml"), cfg.to_yaml().as_bytes())?;
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(run_dir.join("train.log")).ok();
    let mut log = RunLog { file: log_file, quiet: opts.quiet };
    let provenance = crate::report::provenance::Provenance::detect(&cfg.device);
    log.line(None, &format!("run: {}", provenance.summary()));
    let mut tb = if cfg.log.tensorboard { TbWriter::new(&run_dir.join("tb")) } else { TbWriter::disabled() };

    let params: Vec<Param> = {
        let data = model.varmap.data().lock().expect("varmap lock");
        data.iter()
            .map(|(name, var)| {
                let lr_mult =
                    if model.net.has_new_layer_lr(name) { cfg.train.optimizer.new_layer_lr_mult } else { 1.0 };
                Param { name: name.clone(), var: var.clone(), lr_mult }
            })
            .collect()
    };
    let mut sgd = Sgd::new(params, &cfg.train.optimizer);
    let mut state = TrainState {
        epochs_done: 0,
        global_step: 0,
        best_score: None,
        best_epoch: None,
        seed: cfg.seed,
        partial_epoch: None,
        model_file: None,
        optim_file: None,
    };
    if let Some(state_path) = &resume_state {
        state = load_resume_checkpoint(state_path, &model.varmap, &mut sgd, opts.use_previous_checkpoint, &mut log)?;
        // Whatever a killed run logged after this checkpoint is replaced by what follows.
        tb.restart_at(state.global_step + 1);
        log.line(
            None,
            &match &state.partial_epoch {
                Some(p) => format!(
                    "resuming {} in epoch {} after batch {} (step {})",
                    run_dir.display(),
                    state.epochs_done + 1,
                    p.batches_done,
                    state.global_step
                ),
                None => format!(
                    "resuming {} after epoch {} (step {})",
                    run_dir.display(),
                    state.epochs_done,
                    state.global_step
                ),
            },
        );
    } else {
        log.line(None, &format!("run directory: {}", run_dir.display()));
    }

    let size = cfg.data.image_size as usize;
    let transform = TransformConfig {
        image_size: cfg.data.image_size,
        resize_size: cfg.resize_size(),
        train: true,
        hflip: cfg.data.hflip,
        mean: cfg.data.mean,
        std: cfg.data.std,
    };
    let epochs = cfg.train.epochs;
    let steps_per_epoch = num_batches(train_ds.meta.samples.len(), cfg.data.batch_size, true).max(1);
    let drop_last = train_ds.meta.samples.len() >= cfg.data.batch_size;
    for epoch in state.epochs_done..epochs {
        let lr = schedule::lr_at(&cfg.train.schedule, cfg.train.optimizer.lr, epoch, epochs);
        let started = Instant::now();
        let progress = Progress::new(steps_per_epoch as u64, &format!("epoch {}/{epochs}", epoch + 1), opts.quiet);
        let loader = LoaderConfig {
            batch_size: cfg.data.batch_size,
            shuffle: true,
            drop_last,
            workers: cfg.data.workers,
            seed: cfg.seed,
            epoch: epoch as u64,
            transform: transform.clone(),
            skip_batches: 0,
            skip_bad: cfg.data.skip_bad_images,
        };
        // An interrupted epoch continues after its last trained batch.
        let partial = if epoch == state.epochs_done { state.partial_epoch.take() } else { None }.unwrap_or_default();
        let loader = LoaderConfig { skip_batches: partial.batches_done, ..loader };
        progress.inc(partial.batches_done as u64);
        let PartialEpoch { mut batches_done, mut loss_sum, mut correct, mut seen, mut skipped } = partial;
        let (mut win_loss, mut win_correct, mut win_seen) = (0f64, 0usize, 0usize);
        let mut bad_images = 0usize;
        // Time the step spends waiting for its batch: zero when decoding keeps up.
        let (mut data_wait, mut steps_timed) = (std::time::Duration::ZERO, 0u32);
        let mut batches = epoch_batches(train_ds.clone(), loader);
        loop {
            let waited = std::time::Instant::now();
            let Some(batch) = batches.next() else { break };
            data_wait += waited.elapsed();
            steps_timed += 1;
            if interrupt::requested() {
                progress.finish();
                state.partial_epoch = Some(PartialEpoch { batches_done, loss_sum, correct, seen, skipped });
                checkpoint::save(&ckpt_dir, "last", &model.varmap, sgd.state(), &state)?;
                tb.flush();
                let msg = format!(
                    "interrupted in epoch {} after step {}; checkpoint written to {} — continue with `wsol train --config ... --resume {}`",
                    epoch + 1,
                    state.global_step,
                    ckpt_dir.join("last.safetensors").display(),
                    run_dir.display()
                );
                log.line(None, &msg);
                return Err(interrupt::Interrupted(msg).into());
            }
            let batch = batch?;
            batches_done += 1;
            for e in &batch.skipped {
                bad_images += 1;
                if bad_images <= 5 {
                    log.line(Some(&progress), &format!("warning: skipped a bad image (data.skip_bad_images): {e}"));
                }
            }
            if batch.labels.is_empty() {
                progress.inc(1);
                continue;
            }
            let n = batch.labels.len();
            let mut images = batch.images;
            let mut rng = crate::methods::step_rng(cfg.seed, state.global_step);
            let mix = crate::methods::transform_batch(&cfg.model, &mut images, &batch.labels, size, &mut rng);
            let x = Tensor::from_vec(images, (n, 3, size, size), &device)?;
            let y = Tensor::from_vec(batch.labels, n, &device)?;
            model.net.begin_step(crate::methods::adl::step_seed(cfg.seed, state.global_step));
            let out = model.net.forward_t(&x, true)?;
            let loss = match &mix {
                None => model.net.loss(&out, &y)?,
                Some(m) => {
                    let other = Tensor::from_vec(m.other_labels.clone(), n, &device)?;
                    ((model.net.loss(&out, &y)? * m.lambda)? + (model.net.loss(&out, &other)? * (1.0 - m.lambda))?)?
                }
            };
            let loss_value = loss.to_scalar::<f32>()? as f64;
            if !loss_value.is_finite() {
                let ids: Vec<&str> =
                    batch.indices.iter().take(4).map(|&i| train_ds.meta.samples[i].image_id.as_str()).collect();
                if cfg.train.skip_nonfinite_loss {
                    skipped += 1;
                    log.line(
                        Some(&progress),
                        &format!(
                            "warning: skipped batch with non-finite loss at epoch {} step {} (images {})",
                            epoch + 1,
                            state.global_step,
                            ids.join(", ")
                        ),
                    );
                    progress.inc(1);
                    continue;
                }
                let last = ckpt_dir.join("last.safetensors");
                let kept = if last.exists() {
                    format!("the last good checkpoint is kept at {}", last.display())
                } else {
                    "no checkpoint was written yet".into()
                };
                bail!(
                    "loss became {loss_value} at epoch {} step {} ({kept}); hint: lower train.optimizer.lr, check the images of this batch ({}…), or set train.skip_nonfinite_loss: true",
                    epoch + 1, state.global_step, ids.join(", ")
                );
            }
            let grads = loss.backward()?;
            sgd.step(&grads, lr)?;
            let batch_correct =
                out.logits.argmax(D::Minus1)?.eq(&y)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize;
            loss_sum += loss_value * n as f64;
            correct += batch_correct;
            seen += n;
            win_loss += loss_value * n as f64;
            win_correct += batch_correct;
            win_seen += n;
            state.global_step += 1;
            if state.global_step.is_multiple_of(cfg.log.every_steps) {
                tb.add_scalar("train/loss", (win_loss / win_seen as f64) as f32, state.global_step);
                tb.add_scalar("train/acc", (win_correct as f64 * 100.0 / win_seen as f64) as f32, state.global_step);
                tb.add_scalar("train/lr", lr as f32, state.global_step);
                (win_loss, win_correct, win_seen) = (0.0, 0, 0);
            }
            progress.set_message(format!(
                "loss {:.4} acc {:.1}%",
                loss_sum / seen as f64,
                correct as f64 * 100.0 / seen as f64
            ));
            progress.inc(1);
        }
        progress.finish();
        anyhow::ensure!(seen > 0, "epoch {} had no usable batch", epoch + 1);
        let (train_loss, train_acc) = (loss_sum / seen as f64, correct as f64 * 100.0 / seen as f64);
        tb.add_scalar("epoch/train_loss", train_loss as f32, state.global_step);
        tb.add_scalar("epoch/train_acc", train_acc as f32, state.global_step);
        tb.add_scalar("epoch/lr", lr as f32, state.global_step);
        let wait_ms = data_wait.as_secs_f64() * 1e3 / steps_timed.max(1) as f64;
        tb.add_scalar("epoch/data_wait_ms_per_step", wait_ms as f32, state.global_step);

        let mut line =
            format!("epoch {}/{epochs}  lr {lr:.2e}  loss {train_loss:.4}  train acc {train_acc:.2}", epoch + 1);
        line.push_str(&format!("  data wait {wait_ms:.1} ms/step"));
        if skipped > 0 {
            line.push_str(&format!("  skipped {skipped} batches"));
        }
        if bad_images > 0 {
            line.push_str(&format!("  skipped {bad_images} bad images"));
        }
        state.epochs_done = epoch + 1;
        if let Some(val) = &val_ds {
            let vp = Progress::new(
                num_batches(val.meta.samples.len(), cfg.data.batch_size, false) as u64,
                "validate",
                opts.quiet,
            );
            let net = model.inference_net(cfg)?;
            let r = evaluate(net.as_ref(), extractor.as_ref(), val.clone(), cfg, &device, &vp, None)?;
            vp.finish();
            for (k, v) in r.to_json().as_object().unwrap() {
                if let Some(x) = v.as_f64().filter(|_| k != "num_images") {
                    tb.add_scalar(&format!("val/{k}"), x as f32, state.global_step);
                }
            }
            line.push_str(&format!("  val top1 {:.2}", r.top1_cls.unwrap_or(f64::NAN)));
            if cfg.log.tensorboard && cfg.log.cam_images > 0 {
                let threshold = r.loc.as_ref().map_or(cfg.eval.fixed_threshold, |l| l.best_threshold);
                match evaluate::cam_overlays(
                    net.as_ref(),
                    extractor.as_ref(),
                    val,
                    cfg,
                    &device,
                    cfg.log.cam_images,
                    threshold,
                ) {
                    Ok(pngs) => {
                        let s = cfg.data.image_size;
                        for (k, png) in pngs.iter().enumerate() {
                            tb.add_image_png(&format!("val_cam/{k}"), png, s, s, state.global_step);
                        }
                    }
                    Err(e) => log.line(None, &format!("warning: no CAM overlays this epoch: {e:#}")),
                }
            }
            if let Some(l) = &r.loc {
                line.push_str(&format!("  gt-known {:.2}  v2 {:.2}", l.gt_known_loc, l.maxboxacc_v2));
            }
            if let Some(score) = r.metric(cfg.train.select_by.as_str()) {
                if state.best_score.is_none_or(|b| score > b) {
                    state.best_score = Some(score);
                    state.best_epoch = Some(epoch + 1);
                    checkpoint::save(&ckpt_dir, "best", &model.varmap, sgd.state(), &state)?;
                    line.push_str("  *best*");
                }
            }
        } else if epoch + 1 == epochs {
            state.best_epoch = Some(epoch + 1);
            checkpoint::save(&ckpt_dir, "best", &model.varmap, sgd.state(), &state)?;
        }
        checkpoint::save(&ckpt_dir, "last", &model.varmap, sgd.state(), &state)?;
        tb.flush();
        line.push_str(&format!("  ({:.1}s)", started.elapsed().as_secs_f64()));
        log.line(None, &line);
    }

    // Final evaluation on the test split with the chosen checkpoint.
    let tag = cfg.eval.checkpoint.as_str();
    let ckpt = ckpt_dir.join(format!("{tag}.safetensors"));
    if tag == "best" && ckpt.exists() {
        crate::runtime::load_weights(&model.varmap, &ckpt)?;
    }
    let tp =
        Progress::new(num_batches(test_ds.meta.samples.len(), cfg.data.batch_size, false) as u64, "test", opts.quiet);
    let result = evaluate(model.inference_net(cfg)?.as_ref(), extractor.as_ref(), test_ds, cfg, &device, &tp, None)?;
    tp.finish();
    let extra = [("checkpoint", serde_json::json!(ckpt.display().to_string())), ("provenance", provenance.to_json())];
    result.write(&run_dir, &extra)?;
    for (k, v) in result.to_json().as_object().unwrap() {
        if let Some(x) = v.as_f64().filter(|_| k != "num_images") {
            tb.add_scalar(&format!("test/{k}"), x as f32, state.global_step);
        }
    }
    tb.flush();
    log.line(None, &metrics_table(&result.table_rows()));
    log.line(None, &format!("metrics written to {}", run_dir.join("metrics.json").display()));
    Ok((run_dir, result))
}
