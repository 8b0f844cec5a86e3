//! `wsol cam`: a picture of one image's class maps.

use anyhow::{anyhow, bail, Result};

use super::load_config;
use crate::cam::CamMethod;
use crate::cli::CamArgs;
use crate::evaluate::cam_figure::{Classes, Request};

pub fn run(a: CamArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    // The flags are checked before the model is built: a typo fails at once.
    let methods = match a.method.as_deref() {
        Some(m) => parse_methods(m)?,
        None => vec![cfg.eval.cam.to_string()],
    };
    let classes = match (&a.class, a.top) {
        (Some(c), _) => Classes::Given(parse_classes(c, cfg.data.num_classes)?),
        (None, Some(0)) => bail!("--top: expected at least 1 (one row per top class), got 0"),
        (None, k) => Classes::Top(k.unwrap_or(1)),
    };
    let threshold = a.threshold.unwrap_or(cfg.eval.fixed_threshold);
    anyhow::ensure!((0.0..1.0).contains(&threshold), "--threshold: expected in [0, 1), got {threshold}");
    let device = crate::runtime::device(&cfg.device, cfg.tf32, cfg.cudnn_benchmark)?;
    let model = crate::runtime::build_model(&cfg, &device)?;
    match &a.checkpoint {
        Some(c) => crate::runtime::load_weights(&model.varmap, c)?,
        None => anyhow::ensure!(
            cfg.model.pretrained.is_some() && cfg.model.pretrained_classifier,
            "--checkpoint: required unless the config sets model.pretrained and model.pretrained_classifier"
        ),
    }
    let req = Request { image: a.image, methods, classes, threshold, alpha: a.alpha };
    let (png, panels) = crate::evaluate::cam_figure::render(model.inference_net(&cfg)?.as_ref(), &cfg, &device, &req)?;
    wsol_eval::fs::atomic_write(&a.out, &png)?;
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

/// The items of a comma-separated flag value; blank ones (`a,,b`, a trailing comma) are
/// skipped.
fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// `--method`: one grid column per method.
fn parse_methods(text: &str) -> Result<Vec<String>> {
    let methods: Vec<String> = items(text).map(String::from).collect();
    if methods.is_empty() {
        bail!("--method: expected a comma-separated list of CAM methods ({}), got {text:?}", CamMethod::list());
    }
    if let Some(bad) = methods.iter().find(|m| m.parse::<CamMethod>().is_err()) {
        bail!("--method: unknown CAM method `{bad}` (available: {})", CamMethod::list());
    }
    Ok(methods)
}

/// `--class`: one grid row per class index, each below `num_classes`.
fn parse_classes(text: &str, num_classes: usize) -> Result<Vec<usize>> {
    let last = num_classes.saturating_sub(1);
    let expected = format!("a comma-separated list of class indices from 0 to {last}");
    let classes = items(text)
        .map(|v| v.parse::<usize>().map_err(|_| anyhow!("--class: `{v}` is not a class index; expected {expected}")))
        .collect::<Result<Vec<_>>>()?;
    if classes.is_empty() {
        bail!("--class: expected {expected}, got {text:?}");
    }
    if let Some(bad) = classes.iter().find(|&&k| k >= num_classes) {
        bail!("--class {bad}: the model has {num_classes} classes (0..{last})");
    }
    Ok(classes)
}
