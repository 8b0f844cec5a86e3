//! Scores a model on a split: forward, class maps, then the model-free evaluation
//! engine (wsol-eval's `localize` + `metrics`), exactly as for maps from anywhere else.
//! Also the two views of a trained model that run it on images: [`cam_figure`] (`wsol
//! cam`) and [`html_report`] (`wsol report`).

pub mod cam_figure;
pub mod faithfulness;
pub mod html_report;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::cam::{CamExtractor, CamInput};
use crate::config::Config;
use crate::data::transforms::to_rgb8;
use crate::data::{epoch_batches, Dataset, LoaderConfig, SplitMetadata, TransformConfig};
use crate::distributed::{Collective, Local};
use crate::models::WsolModel;
use crate::report::overlay::overlay;
use crate::report::{encode_png_rgb, Progress};
use wsol_eval::faithfulness::{FaithfulnessAccumulator, ImageFaithfulness, Metric};
use wsol_eval::localize::{
    boxes_at_thresholds, cam_thresholds, prepare_map, prepare_quantized, quantize, rescale_boxes,
};
use wsol_eval::masks::load_mask;
use wsol_eval::metrics::{
    topk_correct, BoxAccumulator, BoxEvalConfig, ClsOutcome, ImageInfo, PerImageRecorder, Prediction, PxapAccumulator,
};
pub use wsol_eval::results::{EvalResult, FaithfulnessResult};
use wsol_eval::scoremaps::{self, ScoreMap};

pub fn box_eval_config(cfg: &Config) -> Result<BoxEvalConfig> {
    Ok(BoxEvalConfig {
        thresholds: cam_thresholds(cfg.eval.cam_curve_interval)?,
        iou_thresholds: cfg.eval.iou_thresholds.clone(),
        multi_contour: cfg.eval.multi_contour,
        fixed_threshold: cfg.eval.fixed_threshold,
    })
}

pub fn eval_transform(cfg: &Config) -> TransformConfig {
    TransformConfig {
        image_size: cfg.data.image_size,
        resize_size: cfg.data.image_size,
        train: false,
        hflip: false,
        mean: cfg.data.mean,
        std: cfg.data.std,
    }
}

/// Every image once, in metadata order, with the evaluation transform.
pub fn eval_loader(cfg: &Config, batch_size: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: false,
        drop_last: false,
        workers: cfg.data.workers,
        seed: cfg.seed,
        epoch: 0,
        transform: eval_transform(cfg),
        skip_batches: 0,
        skip_bad: false,
        shard: (0, 1),
        whole_batches: false,
    }
}

/// What an evaluation keeps besides its numbers.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalOutputs<'a> {
    /// Writes every scored map (resized, normalized) as `<dir>/<image_id>.npy`, the layout
    /// the official evaluator reads, so the numbers can be re-checked elsewhere.
    pub save_cams: Option<&'a Path>,
    /// Keeps the rows of `per_image.csv` ([`EvalResult::per_image`]): worth it where
    /// metrics.json is written, not for every epoch's validation.
    pub per_image: bool,
    /// Computes `eval.faithfulness` (when the config asks for any): each metric scores
    /// extra inputs per image, so final evaluations only, not each epoch's validation.
    pub faithfulness: bool,
}

/// Builds the configured model, loads `checkpoint` and evaluates it on `split`: what
/// `wsol eval` and the sweep's final test do (with the rows of `per_image.csv`).
pub fn evaluate_checkpoint(
    cfg: &Config,
    checkpoint: &Path,
    split: &str,
    save_cams: Option<&Path>,
    quiet: bool,
) -> Result<EvalResult> {
    evaluate_checkpoint_sharded(cfg, checkpoint, split, save_cams, quiet, &Local)
}

/// [`evaluate_checkpoint`] by the ranks of `dist` together ([`evaluate_sharded`]): every
/// rank gets the metrics, rank 0 alone the per-image rows and faithfulness means (and the
/// saved maps are written by it).
pub fn evaluate_checkpoint_sharded(
    cfg: &Config,
    checkpoint: &Path,
    split: &str,
    save_cams: Option<&Path>,
    quiet: bool,
    dist: &dyn Collective,
) -> Result<EvalResult> {
    let device = crate::runtime::device(&cfg.device, cfg.gemm_tf32(), cfg.cudnn_benchmark)?;
    let ds = crate::data::open::load_split(cfg, split)?;
    let model = crate::runtime::build_model(cfg, &device)?;
    crate::runtime::load_weights(&model.varmap, checkpoint)?;
    let net = model.inference_net(cfg)?;
    let extractor = crate::cam::by_name(cfg.eval.cam, cfg.eval.cam_layer.as_deref(), net.as_ref())?;
    let batches = crate::data::num_batches(ds.meta.samples.len(), cfg.data.batch_size, false) as u64;
    let progress = Progress::new(batches, &format!("eval {split}"), quiet || !dist.is_root());
    let outputs = EvalOutputs { save_cams, per_image: true, faithfulness: true };
    let result = evaluate_sharded(net.as_ref(), extractor.as_ref(), ds, cfg, &device, &progress, outputs, dist)?;
    progress.finish();
    Ok(result)
}

/// Evaluates `model` on `ds` with the GT-class maps of `extractor`, keeping what
/// `outputs` asks for besides the numbers.
pub fn evaluate(
    model: &dyn WsolModel,
    extractor: &dyn CamExtractor,
    ds: Arc<Dataset>,
    cfg: &Config,
    device: &Device,
    progress: &Progress,
    outputs: EvalOutputs,
) -> Result<EvalResult> {
    evaluate_sharded(model, extractor, ds, cfg, device, progress, outputs, &Local)
}

/// [`evaluate`] by the ranks of `dist` together: each scores whole batches of the split
/// (rank r batches r, r + world, ...: every image goes through the model in the single
/// process's batch, so its logits and map are that process's bits) and the counts behind
/// every metric (classification hits, box hits per threshold and IoU, PxAP histograms)
/// are summed, so every rank gets the single process's numbers exactly. Rank 0 also
/// receives the other ranks' per-image rows, faithfulness values (added in split order,
/// as one process adds them) and saved maps, and alone returns the rows and the
/// faithfulness means: it writes what one process writes.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_sharded(
    model: &dyn WsolModel,
    extractor: &dyn CamExtractor,
    ds: Arc<Dataset>,
    cfg: &Config,
    device: &Device,
    progress: &Progress,
    outputs: EvalOutputs,
    dist: &dyn Collective,
) -> Result<EvalResult> {
    let (world, root) = (dist.world(), dist.is_root());
    let save_cams = outputs.save_cams;
    let size = cfg.data.image_size as usize;
    let n_classes = cfg.data.num_classes;
    let has_boxes = ds.meta.samples.iter().any(|s| !s.boxes.is_empty());
    let box_cfg = box_eval_config(cfg)?;
    let proto = Scores {
        boxes: BoxAccumulator::new(&box_cfg)?,
        pxap: ds.masks.as_ref().map(|_| PxapAccumulator::new(&box_cfg.thresholds)).transpose()?,
        per_image: (outputs.per_image && has_boxes)
            .then(|| PerImageRecorder::new(box_cfg.thresholds.len(), size))
            .transpose()?,
    };
    let empty = || proto.clone();
    let mut acc = empty();
    let faith_cfg = match outputs.faithfulness {
        true => Some(cfg.faithfulness()?).filter(|f| !f.metrics.is_empty()),
        false => None,
    };
    // Each image's faithfulness by its position in the split: added up in split order at
    // the end, so a sharded run sums in the single process's order.
    let mut faith_images: Vec<(usize, ImageFaithfulness)> = Vec::new();
    let (mut faith_forwards, mut faith_time) = (0u64, std::time::Duration::ZERO);
    let (mut top1, mut top5, mut count) = (0usize, 0usize, 0usize);
    let batch_size = cfg.data.batch_size;
    let loader = LoaderConfig { shard: (dist.rank(), world), whole_batches: true, ..eval_loader(cfg, batch_size) };
    let total = crate::data::num_batches(ds.meta.samples.len(), batch_size, false);
    let mut batches = epoch_batches(ds.clone(), loader);
    // Rounds of one batch per rank (the last may leave some ranks none): every rank makes
    // the same collective calls whatever it was dealt.
    for round in 0..total.div_ceil(world) {
        // Maps to save, sent to rank 0 when sharded.
        let outgoing = std::sync::Mutex::new(Vec::<(usize, Vec<f64>)>::new());
        let batch = batches.next().transpose()?;
        let n = batch.as_ref().map_or(0, |b| b.labels.len());
        if let (Some(batch), true) = (batch, n > 0) {
            let host_images = faith_cfg.is_some().then(|| batch.images.clone());
            let x = Tensor::from_vec(batch.images, (n, 3, size, size), device)?;
            let labels = Tensor::from_vec(batch.labels.clone(), n, device)?;
            let out = model.forward_t(&x, false)?;
            let logits: Vec<Vec<f32>> = out.logits.to_vec2()?;
            let outcomes: Vec<ClsOutcome> = logits
                .iter()
                .zip(&batch.labels)
                .map(|(l, &y)| ClsOutcome {
                    top1: topk_correct(l, y as usize, 1),
                    top5: topk_correct(l, y as usize, 5.min(n_classes)),
                })
                .collect();
            top1 += outcomes.iter().filter(|o| o.top1).count();
            top5 += outcomes.iter().filter(|o| o.top5).count();
            count += n;
            if has_boxes || ds.masks.is_some() || faith_cfg.is_some() {
                let input = CamInput { model, images: &x, out: &out, targets: &labels };
                let maps = extractor.extract(&input).context("computing class activation maps")?;
                let (_, h, w) = maps.dims3()?;
                let maps: Vec<f32> = maps.flatten_all()?.to_vec1()?;
                if let (Some(fc), Some(images)) = (&faith_cfg, &host_images) {
                    let start = std::time::Instant::now();
                    progress.set_message("faithfulness".into());
                    // The maps as scored (resized, min-max), for the GT class they were made for.
                    let prepared: Vec<f32> = (0..n)
                        .into_par_iter()
                        .flat_map_iter(|i| {
                            prepare_map(&maps[i * h * w..(i + 1) * h * w], w, h, size).into_iter().map(|v| v as f32)
                        })
                        .collect();
                    let classes: Vec<usize> = batch.labels.iter().map(|&y| y as usize).collect();
                    let probs: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&out.logits)?.to_vec2()?;
                    let base: Vec<f32> = probs.iter().zip(&classes).map(|(p, &c)| p[c]).collect();
                    let keys: Vec<u64> = batch.indices.iter().map(|&i| i as u64).collect();
                    let (per, inputs) = faithfulness::score_images(
                        model,
                        fc,
                        images,
                        &prepared,
                        (3, size),
                        &classes,
                        &base,
                        &keys,
                        device,
                        batch_size,
                    )
                    .context("scoring faithfulness")?;
                    faith_images.extend(batch.indices.iter().copied().zip(per));
                    faith_forwards += inputs;
                    faith_time += start.elapsed();
                    progress.set_message(String::new());
                }
                if has_boxes || ds.masks.is_some() {
                    let batch_acc = (0..n)
                        .into_par_iter()
                        .try_fold(empty, |mut a, i| -> Result<Scores> {
                            let index = batch.indices[i];
                            let sample = &ds.meta.samples[index];
                            let raw = &maps[i * h * w..(i + 1) * h * w];
                            // The float map only where pixel scores or exported maps need it.
                            let pixels = ds.masks.is_some() && a.pxap.is_some();
                            let map = (pixels || save_cams.is_some()).then(|| prepare_map(raw, w, h, size));
                            if has_boxes {
                                let gt = rescale_boxes(&sample.boxes, sample.size, size);
                                let q = map.as_deref().map_or_else(|| prepare_quantized(raw, w, h, size), quantize);
                                let scored = a.boxes.score(&q, size, size, &gt);
                                a.boxes.add_scored(&scored, Some(outcomes[i]));
                                if let Some(rec) = a.per_image.as_mut() {
                                    let info = ImageInfo {
                                        image_id: sample.image_id.clone(),
                                        gt_class: sample.label,
                                        original_size: sample.size,
                                        predictions: top_predictions(&logits[i], 5),
                                        cls: Some(outcomes[i]),
                                    };
                                    rec.record(index, info, &gt, &scored);
                                }
                            }
                            if let (Some(m), Some(p), Some(map)) = (&ds.masks, a.pxap.as_mut(), &map) {
                                let s = &m.split.samples[index];
                                p.add(map, &load_mask(&m.root, s, &m.split.localization, size)?);
                            }
                            match (save_cams, map) {
                                (Some(_), Some(map)) if world > 1 => {
                                    outgoing.lock().expect("maps to send").push((index, map));
                                }
                                (Some(dir), Some(map)) => save_map(dir, &sample.image_id, size, map)?,
                                _ => {}
                            }
                            Ok(a)
                        })
                        .try_reduce(empty, |mut a, b| {
                            a.merge(b);
                            Ok(a)
                        })?;
                    acc.merge(batch_acc);
                }
            }
        }
        if let (Some(dir), true) = (save_cams, world > 1) {
            let sent = dist.gather_bytes(&maps_to_bytes(&outgoing.into_inner().expect("maps to send")))?;
            for bytes in sent.unwrap_or_default() {
                for (index, map) in maps_from_bytes(&bytes, size * size)? {
                    let id = &ds.meta.samples.get(index).context("a saved map from another rank")?.image_id;
                    save_map(dir, id, size, map)?;
                }
            }
        }
        progress.inc(world.min(total - round * world) as u64);
    }
    let mut faith_nanos = faith_time.as_nanos() as u64;
    if world > 1 {
        let sums = [&mut top1, &mut top5, &mut count];
        sum_over_ranks(dist, &mut acc, sums, [&mut faith_forwards, &mut faith_nanos])?;
        gather_to_root(dist, &mut acc, &mut faith_images)?;
    }
    anyhow::ensure!(count > 0, "split `{}` has no images", ds.meta.split);
    let pct = |k: usize| k as f64 * 100.0 / count as f64;
    let pxap = match (&acc.pxap, &ds.masks) {
        (Some(p), Some(m)) => Some(p.finish().with_context(|| {
            format!("scoring {} against the masks under {}", m.split.localization.display(), m.root.display())
        })?),
        _ => None,
    };
    let loc = has_boxes.then(|| acc.boxes.finish());
    let per_image = match (acc.per_image, &loc, root) {
        (Some(rec), Some(loc), true) => Some(rec.finish(loc)?),
        _ => None,
    };
    faith_images.sort_by_key(|(i, _)| *i);
    let mut faith = FaithfulnessAccumulator::default();
    faith_images.iter().for_each(|(_, f)| faith.add(f));
    faith.forwards = faith_forwards;
    let faithfulness = faith_cfg.filter(|_| root).map(|_| FaithfulnessResult {
        values: faith.finish(),
        inputs_per_image: faith.forwards as f64 / count as f64,
        seconds_per_image: faith_nanos as f64 * 1e-9 / count as f64,
    });
    Ok(EvalResult {
        split: ds.meta.split.clone(),
        cam: extractor.name().to_string(),
        num_images: count,
        top1_cls: Some(pct(top1)),
        top5_cls: Some(pct(top5)),
        loc,
        pxap,
        per_image,
        faithfulness,
    })
}

/// `<dir>/<image_id>.npy`, as `--save-cams` names it.
fn save_map(dir: &Path, image_id: &str, size: usize, map: Vec<f64>) -> Result<()> {
    scoremaps::write(&scoremaps::nested_path(dir, image_id), &ScoreMap { width: size, height: size, data: map })
}

/// Maps to save as bytes for rank 0: (position in the split, the map's values).
fn maps_to_bytes(maps: &[(usize, Vec<f64>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, map) in maps {
        out.extend((*index as u64).to_le_bytes());
        map.iter().for_each(|v| out.extend(v.to_le_bytes()));
    }
    out
}

fn maps_from_bytes(bytes: &[u8], plane: usize) -> Result<Vec<(usize, Vec<f64>)>> {
    let record = 8 * (1 + plane);
    anyhow::ensure!(bytes.len().is_multiple_of(record), "saved maps from another rank: {} bytes", bytes.len());
    Ok(bytes
        .chunks_exact(record)
        .map(|r| {
            let word = |k: usize| <[u8; 8]>::try_from(&r[8 * k..8 * k + 8]).expect("8 bytes");
            (u64::from_le_bytes(word(0)) as usize, (1..=plane).map(|k| f64::from_le_bytes(word(k))).collect())
        })
        .collect())
}

/// The `k` most likely classes with their softmax probabilities, most likely first; ties
/// go to the lower class index and NaN logits last, as [`topk_correct`] ranks them.
fn top_predictions(logits: &[f32], k: usize) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // A stable sort: equal logits keep their class order.
    order.sort_by(|&a, &b| {
        let (x, y) = (logits[a], logits[b]);
        x.is_nan().cmp(&y.is_nan()).then(y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal))
    });
    // Softmax in f64, shifted by the largest logit so no exponent overflows.
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().filter(|v| !v.is_nan()).map(|&v| (v as f64 - max).exp()).sum();
    order
        .into_iter()
        .take(k)
        .map(|class| Prediction { class, probability: Some(((logits[class] as f64 - max).exp() / sum) as f32) })
        .collect()
}

/// Localization accumulators of one pass: boxes always, PxAP on mask splits, the rows
/// of `per_image.csv` when asked for.
#[derive(Clone)]
struct Scores {
    boxes: BoxAccumulator,
    pxap: Option<PxapAccumulator>,
    per_image: Option<PerImageRecorder>,
}

impl Scores {
    fn merge(&mut self, other: Scores) {
        self.boxes.merge(&other.boxes);
        if let (Some(a), Some(b)) = (self.pxap.as_mut(), other.pxap.as_ref()) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (self.per_image.as_mut(), other.per_image) {
            a.merge(b);
        }
    }
}

/// Every rank's counts replaced by their sum over the ranks: exact integers, so the
/// metrics computed from them are the single process's.
fn sum_over_ranks(dist: &dyn Collective, acc: &mut Scores, cls: [&mut usize; 3], more: [&mut u64; 2]) -> Result<()> {
    let boxes = acc.boxes.counts();
    let pxap = acc.pxap.as_ref().map(PxapAccumulator::counts).unwrap_or_default();
    let mut flat: Vec<u64> = cls.iter().map(|c| **c as u64).chain(more.iter().map(|m| **m)).collect();
    let head = flat.len();
    flat.extend(&boxes);
    flat.extend(&pxap);
    dist.all_reduce_sum_u64(&mut flat)?;
    for (c, v) in cls.into_iter().zip(&flat) {
        *c = *v as usize;
    }
    for (m, v) in more.into_iter().zip(&flat[3..]) {
        *m = *v;
    }
    acc.boxes.set_counts(&flat[head..head + boxes.len()])?;
    if let Some(p) = acc.pxap.as_mut() {
        p.set_counts(&flat[head + boxes.len()..])?;
    }
    Ok(())
}

/// The other ranks' per-image records and faithfulness values added to rank 0's (one
/// gather of bytes each); on the other ranks, theirs are dropped.
fn gather_to_root(dist: &dyn Collective, acc: &mut Scores, faith: &mut Vec<(usize, ImageFaithfulness)>) -> Result<()> {
    let rows = acc.per_image.as_ref().map(PerImageRecorder::to_bytes).unwrap_or_default();
    let gathered = dist.gather_bytes(&rows)?;
    if let (Some(all), Some(rec)) = (gathered, acc.per_image.as_mut()) {
        for bytes in &all[1..] {
            rec.extend_from_bytes(bytes).context("per-image rows from another rank")?;
        }
    }
    let mut mine = Vec::new();
    for (index, f) in faith.iter() {
        mine.extend((*index as u64).to_le_bytes());
        mine.push(f.0.len() as u8);
        for (m, v) in &f.0 {
            mine.push(Metric::ALL.iter().position(|x| x == m).expect("a known metric") as u8);
            mine.extend(v.to_le_bytes());
        }
    }
    let Some(all) = dist.gather_bytes(&mine)? else {
        faith.clear();
        return Ok(());
    };
    for bytes in &all[1..] {
        faith.extend(faithfulness_from_bytes(bytes).context("faithfulness values from another rank")?);
    }
    Ok(())
}

fn faithfulness_from_bytes(bytes: &[u8]) -> Result<Vec<(usize, ImageFaithfulness)>> {
    fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8]> {
        let s = bytes.get(*at..*at + n).context("cut short")?;
        *at += n;
        Ok(s)
    }
    let word = |b: &[u8]| <[u8; 8]>::try_from(b).expect("8 bytes");
    let (mut out, mut at) = (Vec::new(), 0);
    while at < bytes.len() {
        let index = u64::from_le_bytes(word(take(bytes, &mut at, 8)?)) as usize;
        let mut values = std::collections::BTreeMap::new();
        for _ in 0..take(bytes, &mut at, 1)?[0] {
            let m = *Metric::ALL.get(take(bytes, &mut at, 1)?[0] as usize).context("an unknown metric")?;
            values.insert(m, f64::from_le_bytes(word(take(bytes, &mut at, 8)?)));
        }
        out.push((index, ImageFaithfulness(values)));
    }
    Ok(out)
}

/// PNG overlays (map, GT box, predicted box at `threshold`) of the first `count` images
/// of `ds`, for TensorBoard: the same images every epoch, so the maps can be watched.
pub fn cam_overlays(
    model: &dyn WsolModel,
    extractor: &dyn CamExtractor,
    ds: &Dataset,
    cfg: &Config,
    device: &Device,
    count: usize,
    threshold: f64,
) -> Result<Vec<Vec<u8>>> {
    let count = count.min(ds.meta.samples.len());
    if count == 0 {
        return Ok(Vec::new());
    }
    let subset = Arc::new(Dataset {
        image_root: ds.image_root.clone(),
        meta: SplitMetadata { split: ds.meta.split.clone(), samples: ds.meta.samples[..count].to_vec() },
        masks: None,
    });
    let loader = eval_loader(cfg, count);
    let batch = epoch_batches(subset.clone(), loader).next().context("no overlay batch")??;
    let size = cfg.data.image_size as usize;
    let x = Tensor::from_vec(batch.images.clone(), (count, 3, size, size), device)?;
    let labels = Tensor::from_vec(batch.labels.clone(), count, device)?;
    let out = model.forward_t(&x, false)?;
    let maps = extractor.extract(&CamInput { model, images: &x, out: &out, targets: &labels })?;
    let (_, h, w) = maps.dims3()?;
    let maps: Vec<f32> = maps.flatten_all()?.to_vec1()?;
    let plane = size * size;
    let mut pngs = Vec::with_capacity(count);
    for i in 0..count {
        let map = prepare_map(&maps[i * h * w..(i + 1) * h * w], w, h, size);
        let rgb = to_rgb8(&batch.images[i * 3 * plane..(i + 1) * 3 * plane], cfg.data.mean, cfg.data.std);
        let sample = &subset.meta.samples[batch.indices[i]];
        let gt = rescale_boxes(&sample.boxes, sample.size, size);
        let pred = boxes_at_thresholds(&map, size, size, &[threshold]).first().map(|t| t.largest);
        let img = overlay(&rgb, &map, size, size, 0.5, &gt, pred);
        pngs.push(encode_png_rgb(&img, size as u32, size as u32)?);
    }
    Ok(pngs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_predictions_rank_as_topk_correct_with_softmax_probabilities() {
        let logits = [1.0f32, 3.0, f32::NAN, 3.0, -2.0, 0.5, 2.0];
        let p = top_predictions(&logits, 5);
        let classes: Vec<usize> = p.iter().map(|p| p.class).collect();
        // Equal logits: the lower class first; the NaN never ranks.
        assert_eq!(classes, [1, 3, 6, 0, 5]);
        for (rank, c) in classes.iter().enumerate() {
            assert!(topk_correct(&logits, *c, rank + 1) && !topk_correct(&logits, *c, rank));
        }
        let finite: f64 = logits.iter().filter(|v| !v.is_nan()).map(|&v| (v as f64).exp()).sum();
        for q in &p {
            let want = (logits[q.class] as f64).exp() / finite;
            assert!((q.probability.unwrap() as f64 - want).abs() < 1e-6, "{q:?} vs {want}");
        }
        // Large logits do not overflow; fewer classes than k give fewer predictions.
        let p = top_predictions(&[1000.0, 999.0], 5);
        assert_eq!(p.len(), 2);
        let e = (-1.0f64).exp();
        assert_eq!(p[0].probability, Some((1.0 / (1.0 + e)) as f32));
    }
}
