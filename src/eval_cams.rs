//! `wsol eval-cams`: scores maps made by anyone against a metadata split, with the same
//! engine as `wsol eval`. Depends on no model code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::data::read_split;
use crate::localize::{cam_thresholds, prepare_map, rescale_box, BBox};
use crate::metrics::{BoxAccumulator, BoxEvalConfig, ClsOutcome};
use crate::results::EvalResult;
use crate::scoremaps;

pub struct EvalCamsOptions {
    /// A split folder of the metadata (`.../test` holding image_ids.txt etc.).
    pub metadata: PathBuf,
    pub cams: PathBuf,
    pub predictions: Option<PathBuf>,
    pub image_size: usize,
    pub iou_thresholds: Vec<u32>,
    pub cam_curve_interval: f64,
    pub multi_contour: bool,
    pub fixed_threshold: f64,
}

pub fn eval_cams(opts: &EvalCamsOptions) -> Result<EvalResult> {
    let split_dir = opts.metadata.as_path();
    let (root, split) = match (split_dir.parent(), split_dir.file_name()) {
        (Some(r), Some(s)) => (if r.as_os_str().is_empty() { Path::new(".") } else { r }, s.to_string_lossy().into_owned()),
        _ => bail!("--metadata {}: expected a split folder such as metadata/CUB/test", split_dir.display()),
    };
    let meta = read_split(root, &split, usize::MAX)?;
    if meta.samples.is_empty() {
        bail!("{}: no images listed", split_dir.join("image_ids.txt").display());
    }
    if let Some(s) = meta.samples.iter().find(|s| s.boxes.is_empty()) {
        bail!("{}: image `{}` has no box; eval-cams needs boxes for every image", split_dir.join("localization.txt").display(), s.image_id);
    }
    if !opts.cams.is_dir() {
        bail!("--cams {}: no such directory", opts.cams.display());
    }
    let predictions = opts.predictions.as_deref().map(scoremaps::read_predictions).transpose()?;
    let paths: Vec<Option<PathBuf>> = meta.samples.iter().map(|s| scoremaps::find(&opts.cams, &s.image_id)).collect();
    let missing: Vec<&str> = meta.samples.iter().zip(&paths).filter(|(_, p)| p.is_none()).map(|(s, _)| s.image_id.as_str()).collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} score maps are missing under {} (first: {}); expected <cams>/<image_id>.npy or <cams>/<image_id with / as __>.npy",
            missing.len(), meta.samples.len(), opts.cams.display(), missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let outcomes = match &predictions {
        Some(p) => Some(cls_outcomes(&meta.samples.iter().map(|s| (s.image_id.as_str(), s.label)).collect::<Vec<_>>(), p, opts.predictions.as_deref().unwrap())?),
        None => None,
    };
    let cfg = BoxEvalConfig {
        thresholds: cam_thresholds(opts.cam_curve_interval),
        iou_thresholds: opts.iou_thresholds.clone(),
        multi_contour: opts.multi_contour,
        fixed_threshold: opts.fixed_threshold,
    };
    let size = opts.image_size;
    let acc = meta
        .samples
        .par_iter()
        .enumerate()
        .try_fold(
            || BoxAccumulator::new(&cfg),
            |mut acc, (i, s)| -> Result<BoxAccumulator> {
                let map = scoremaps::read(paths[i].as_ref().unwrap())?;
                let prepared = prepare_map(&map.data, map.width, map.height, size);
                let (w, h) = s.size;
                let gt: Vec<BBox> = s.boxes.iter().map(|b| rescale_box(*b, (w as f64, h as f64), (size as f64, size as f64))).collect();
                acc.add(&prepared, size, size, &gt, outcomes.as_ref().map(|o| o[i]));
                Ok(acc)
            },
        )
        .try_reduce(|| BoxAccumulator::new(&cfg), |mut a, b| {
            a.merge(&b);
            Ok(a)
        })?;
    let n = meta.samples.len();
    let pct = |k: usize| k as f64 * 100.0 / n as f64;
    Ok(EvalResult {
        split,
        cam: format!("npy:{}", opts.cams.display()),
        num_images: n,
        top1_cls: outcomes.as_ref().map(|o| pct(o.iter().filter(|c| c.top1).count())),
        top5_cls: outcomes.as_ref().map(|o| pct(o.iter().filter(|c| c.top5).count())),
        loc: Some(acc.finish()),
    })
}

fn cls_outcomes(samples: &[(&str, usize)], predictions: &HashMap<String, Vec<usize>>, path: &Path) -> Result<Vec<ClsOutcome>> {
    let mut out = Vec::with_capacity(samples.len());
    let mut missing = Vec::new();
    for (id, label) in samples {
        match predictions.get(*id) {
            Some(p) => out.push(ClsOutcome { top1: p[0] == *label, top5: p.iter().take(5).any(|c| c == label) }),
            None => missing.push(*id),
        }
    }
    if !missing.is_empty() {
        bail!("{}: no prediction for {} image(s) (first: {})", path.display(), missing.len(), missing.iter().take(5).cloned().collect::<Vec<_>>().join(", "));
    }
    Ok(out)
}

/// Parses `30,50,70`.
pub fn parse_iou_list(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(|t| {
            let v: u32 = t.trim().parse().with_context(|| format!("--iou {text}: `{t}` is not an integer percentage"))?;
            if !(1..=100).contains(&v) {
                bail!("--iou {text}: {v} is not a percentage in 1..=100");
            }
            Ok(v)
        })
        .collect()
}
