//! `wsol eval-cams`: scores maps made by anyone against a metadata split, with the same
//! engine as `wsol eval`. Depends on no model code. With `--masks` the split is a mask
//! split (OpenImages30k) and is scored by PxAP instead of box accuracy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::localize::{cam_thresholds, prepare_map, prepare_quantized_into, rescale_boxes};
use crate::masks::{load_mask, read_mask_split};
use crate::metadata::read_split;
use crate::metrics::{
    BoxAccumulator, BoxEvalConfig, ClsOutcome, ImageInfo, LocalizationMetrics, PerImageRecorder, PerImageTable,
    Prediction, PxapAccumulator,
};
use crate::results::EvalResult;
use crate::scoremaps::{self, MapReader, MapValues};

pub struct EvalCamsOptions {
    /// A split folder of the metadata (`.../test` holding image_ids.txt etc.).
    pub metadata: PathBuf,
    /// Folder of maps; `None`: the centre-Gaussian baseline of Choe et al. 2020 (every
    /// image gets the same isotropic Gaussian centred on it).
    pub cams: Option<PathBuf>,
    pub predictions: Option<PathBuf>,
    pub image_size: usize,
    pub iou_thresholds: Vec<u32>,
    pub cam_curve_interval: f64,
    pub multi_contour: bool,
    pub fixed_threshold: f64,
    /// Mask root: the split's localization.txt names masks relative to it (PxAP).
    pub masks: Option<PathBuf>,
}

pub fn eval_cams(opts: &EvalCamsOptions) -> Result<EvalResult> {
    if opts.image_size == 0 {
        bail!("image_size: expected a positive size (maps are scored on an image_size square)");
    }
    // Checked before any file is read: a bad option fails at once.
    let thresholds = cam_thresholds(opts.cam_curve_interval)?;
    let box_cfg = BoxEvalConfig {
        thresholds: thresholds.clone(),
        iou_thresholds: opts.iou_thresholds.clone(),
        multi_contour: opts.multi_contour,
        fixed_threshold: opts.fixed_threshold,
    };
    let boxes = BoxAccumulator::new(&box_cfg)?;
    let split_dir = opts.metadata.as_path();
    let (root, split) = match (split_dir.parent(), split_dir.file_name()) {
        (Some(r), Some(s)) => {
            (if r.as_os_str().is_empty() { Path::new(".") } else { r }, s.to_string_lossy().into_owned())
        }
        _ => bail!("--metadata {}: expected a split folder such as metadata/CUB/test", split_dir.display()),
    };
    if let Some(mask_root) = &opts.masks {
        return eval_masks(opts, root, split, mask_root, &thresholds);
    }
    let meta = read_split(root, &split, usize::MAX).map_err(|e| {
        match looks_like_masks(&split_dir.join("localization.txt")) {
            true => e.context("localization.txt names mask files: score a mask split with --masks DIR (the mask root)"),
            false => e,
        }
    })?;
    if meta.samples.is_empty() {
        bail!("{}: no images listed", split_dir.join("image_ids.txt").display());
    }
    if let Some(s) = meta.samples.iter().find(|s| s.boxes.is_empty()) {
        bail!(
            "{}: image `{}` has no box; eval-cams needs boxes for every image",
            split_dir.join("localization.txt").display(),
            s.image_id
        );
    }
    let (paths, predicted) =
        maps_and_outcomes(opts, &meta.samples.iter().map(|s| (s.image_id.as_str(), s.label)).collect::<Vec<_>>())?;
    let size = opts.image_size;
    let recorder = PerImageRecorder::new(thresholds.len(), size)?;
    let (acc, recorder) = fold_maps(
        &paths,
        meta.samples.len(),
        size,
        |map, w, h, size, q: &mut Vec<u8>| match map {
            // float32 maps are quantized from float32: the same levels (see `quantize_f32`).
            MapValues::F32(raw) => prepare_quantized_into(raw, w, h, size, q),
            MapValues::F64(raw) => prepare_quantized_into(raw, w, h, size, q),
        },
        || (boxes.clone(), recorder.clone()),
        |(acc, rec), i, q: &Vec<u8>| {
            let s = &meta.samples[i];
            let gt = rescale_boxes(&s.boxes, s.size, size);
            let scored = acc.score(q, size, size, &gt);
            let p = predicted.as_ref().map(|p| &p[i]);
            acc.add_scored(&scored, p.map(|p| p.outcome));
            // --predictions names classes without scores: no probabilities.
            let predictions = p.map_or_else(Vec::new, |p| {
                p.top5.iter().map(|&class| Prediction { class, probability: None }).collect()
            });
            let info = ImageInfo {
                image_id: s.image_id.clone(),
                gt_class: s.label,
                original_size: s.size,
                predictions,
                cls: p.map(|p| p.outcome),
            };
            rec.record(i, info, &gt, &scored);
            Ok(())
        },
        |(a, rec_a), (b, rec_b)| {
            a.merge(&b);
            rec_a.merge(rec_b);
        },
    )?;
    let loc = acc.finish();
    let per_image = recorder.finish(&loc)?;
    let outcomes = outcomes_of(predicted.as_deref());
    Ok(result(opts, split, meta.samples.len(), outcomes.as_deref(), Some(loc), None, Some(per_image)))
}

/// An image's classes from --predictions: the first five, and whether they hold its label.
struct Predicted {
    top5: Vec<usize>,
    outcome: ClsOutcome,
}

fn outcomes_of(predicted: Option<&[Predicted]>) -> Option<Vec<ClsOutcome>> {
    predicted.map(|p| p.iter().map(|p| p.outcome).collect())
}

/// The maps to score: one file per image, or the centre baseline's one map for all.
enum Maps {
    Files(Vec<PathBuf>),
    Centre(Vec<f32>),
}

/// The centre-Gaussian baseline's map (Choe et al. 2020): an isotropic Gaussian centred
/// on the image, sigma = size / 4, so the threshold sweep draws centred discs from a few
/// pixels to beyond the corners (the sweep picks the best size; sigma only spaces them).
pub fn centre_gaussian(size: usize) -> Vec<f32> {
    let c = (size as f64 - 1.0) / 2.0;
    let s2 = 2.0 * (size as f64 / 4.0).powi(2);
    (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f64 - c, (i / size) as f64 - c);
            (-(x * x + y * y) / s2).exp() as f32
        })
        .collect()
}

/// Reads and prepares every map in parallel (`prepare_map` for pixel scores,
/// `prepare_quantized_into` for boxes) and folds them into one accumulator per thread,
/// then merges: the shared loop of box and mask scoring. Each thread keeps its file
/// buffer and its prepared map from one image to the next.
#[allow(clippy::too_many_arguments)]
fn fold_maps<A: Send, P: Default + Send + Sync>(
    maps: &Maps,
    n: usize,
    size: usize,
    prepare: fn(MapValues<'_>, usize, usize, usize, &mut P),
    empty: impl Fn() -> A + Sync + Send,
    add: impl Fn(&mut A, usize, &P) -> Result<()> + Sync + Send,
    merge: impl Fn(&mut A, A) + Sync + Send,
) -> Result<A> {
    // The baseline's one map is prepared once for all images.
    enum Source<'a, P> {
        Files(&'a [PathBuf]),
        Centre(P),
    }
    let source = match maps {
        Maps::Files(paths) => Source::Files(paths),
        Maps::Centre(map) => {
            let mut p = P::default();
            prepare(MapValues::F32(map), size, size, size, &mut p);
            Source::Centre(p)
        }
    };
    (0..n)
        .into_par_iter()
        .try_fold(
            || (empty(), MapReader::default(), P::default()),
            |(mut acc, mut reader, mut prepared), i| -> Result<(A, MapReader, P)> {
                match &source {
                    Source::Files(paths) => {
                        let map = reader.read(&paths[i])?;
                        prepare(map.values, map.width, map.height, size, &mut prepared);
                        add(&mut acc, i, &prepared)?;
                    }
                    Source::Centre(map) => add(&mut acc, i, map)?,
                }
                Ok((acc, reader, prepared))
            },
        )
        .map(|folded| folded.map(|(acc, _, _)| acc))
        .try_reduce(&empty, |mut a, b| {
            merge(&mut a, b);
            Ok(a)
        })
}

/// The result of an eval-cams run; classification numbers only with --predictions.
fn result(
    opts: &EvalCamsOptions,
    split: String,
    num_images: usize,
    outcomes: Option<&[ClsOutcome]>,
    loc: Option<LocalizationMetrics>,
    pxap: Option<f64>,
    per_image: Option<PerImageTable>,
) -> EvalResult {
    let pct = |o: &[ClsOutcome], top: fn(&ClsOutcome) -> bool| {
        o.iter().filter(|c| top(c)).count() as f64 * 100.0 / o.len() as f64
    };
    EvalResult {
        split,
        cam: opts.cams.as_ref().map_or_else(|| "centre-gaussian".to_string(), |c| format!("npy:{}", c.display())),
        num_images,
        top1_cls: outcomes.map(|o| pct(o, |c| c.top1)),
        top5_cls: outcomes.map(|o| pct(o, |c| c.top5)),
        loc,
        pxap,
        per_image,
        faithfulness: None,
    }
}

/// Score map paths (all present, or an error listing the missing) and, with
/// --predictions, each image's predicted classes and classification outcome.
fn maps_and_outcomes(opts: &EvalCamsOptions, samples: &[(&str, usize)]) -> Result<(Maps, Option<Vec<Predicted>>)> {
    let predictions = opts.predictions.as_deref().map(scoremaps::read_predictions).transpose()?;
    let outcomes = match &predictions {
        Some(p) => Some(cls_outcomes(samples, p, opts.predictions.as_deref().unwrap())?),
        None => None,
    };
    let Some(cams) = &opts.cams else {
        let size = opts.image_size;
        return Ok((Maps::Centre(centre_gaussian(size)), outcomes));
    };
    if !cams.is_dir() {
        bail!("--cams {}: no such directory", cams.display());
    }
    let paths: Vec<Option<PathBuf>> = samples.iter().map(|(id, _)| scoremaps::find(cams, id)).collect();
    let missing: Vec<&str> = samples.iter().zip(&paths).filter(|(_, p)| p.is_none()).map(|((id, _), _)| *id).collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} score maps are missing under {} (first: {}); expected <cams>/<image_id>.npy or <cams>/<image_id with / as __>.npy",
            missing.len(), samples.len(), cams.display(), missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok((Maps::Files(paths.into_iter().map(Option::unwrap).collect()), outcomes))
}

/// Whether the first line of a localization file has the mask layout
/// (`id,mask_path,ignore_path`): used only to suggest --masks when box parsing fails.
fn looks_like_masks(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else { return false };
    let f: Vec<&str> = line.rsplitn(3, ',').collect();
    f.len() == 3 && f[1].trim().parse::<f64>().is_err()
}

/// PxAP over a mask split: every map is prepared as for boxes (resize, min-max), every
/// mask loaded on the same grid, and pixel histograms are merged over the split.
fn eval_masks(
    opts: &EvalCamsOptions,
    root: &Path,
    split: String,
    mask_root: &Path,
    thresholds: &[f64],
) -> Result<EvalResult> {
    if !mask_root.is_dir() {
        bail!("--masks {}: no such directory", mask_root.display());
    }
    let meta = read_mask_split(root, &split)?;
    let (paths, predicted) =
        maps_and_outcomes(opts, &meta.samples.iter().map(|s| (s.image_id.as_str(), s.label)).collect::<Vec<_>>())?;
    let outcomes = outcomes_of(predicted.as_deref());
    let pixels = PxapAccumulator::new(thresholds)?;
    let size = opts.image_size;
    let acc = fold_maps(
        &paths,
        meta.samples.len(),
        size,
        |map, w, h, size, out: &mut Vec<f64>| {
            *out = match map {
                MapValues::F32(raw) => prepare_map(raw, w, h, size),
                MapValues::F64(raw) => prepare_map(raw, w, h, size),
            }
        },
        || pixels.clone(),
        |acc, i, map: &Vec<f64>| {
            acc.add(map, &load_mask(mask_root, &meta.samples[i], &meta.localization, size)?);
            Ok(())
        },
        |a, b| a.merge(&b),
    )?;
    let pxap = acc.finish().with_context(|| {
        format!("scoring {} against the masks under {}", meta.localization.display(), mask_root.display())
    })?;
    Ok(result(opts, split, meta.samples.len(), outcomes.as_deref(), None, Some(pxap), None))
}

fn cls_outcomes(
    samples: &[(&str, usize)],
    predictions: &HashMap<String, Vec<usize>>,
    path: &Path,
) -> Result<Vec<Predicted>> {
    let mut out = Vec::with_capacity(samples.len());
    let mut missing = Vec::new();
    for (id, label) in samples {
        match predictions.get(*id) {
            Some(p) => out.push(Predicted {
                top5: p.iter().take(5).copied().collect(),
                outcome: ClsOutcome { top1: p[0] == *label, top5: p.iter().take(5).any(|c| c == label) },
            }),
            None => missing.push(*id),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: no prediction for {} image(s) (first: {})",
            path.display(),
            missing.len(),
            missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(out)
}

/// Parses `30,50,70`.
pub fn parse_iou_list(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(|t| {
            let v: u32 =
                t.trim().parse().with_context(|| format!("--iou {text}: `{t}` is not an integer percentage"))?;
            if !(1..=100).contains(&v) {
                bail!("--iou {text}: {v} is not a percentage in 1..=100");
            }
            Ok(v)
        })
        .collect()
}
