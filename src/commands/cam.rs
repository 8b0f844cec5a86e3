//! `wsol cam`: a picture of one image's class maps.

use anyhow::{Context, Result};

use super::load_config;
use crate::cli::CamArgs;

pub fn run(a: CamArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    let device = crate::runtime::device(&cfg.device, cfg.tf32, cfg.cudnn_benchmark)?;
    let model = crate::runtime::build_model(&cfg, &device)?;
    match &a.checkpoint {
        Some(c) => crate::runtime::load_weights(&model.varmap, c)?,
        None => anyhow::ensure!(
            cfg.model.pretrained.is_some() && cfg.model.pretrained_classifier,
            "--checkpoint: required unless the config sets model.pretrained and model.pretrained_classifier"
        ),
    }
    let list = |s: &str| s.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect::<Vec<_>>();
    let methods = a.method.as_deref().map(list).unwrap_or_else(|| vec![cfg.eval.cam.to_string()]);
    let classes = match &a.class {
        Some(c) => crate::evaluate::cam_figure::Classes::Given(
            list(c)
                .iter()
                .map(|v| v.parse().with_context(|| format!("--class: `{v}` is not a class index")))
                .collect::<Result<_>>()?,
        ),
        None => crate::evaluate::cam_figure::Classes::Top(a.top.unwrap_or(1)),
    };
    let threshold = a.threshold.unwrap_or(cfg.eval.fixed_threshold);
    anyhow::ensure!((0.0..1.0).contains(&threshold), "--threshold: expected in [0, 1), got {threshold}");
    let req = crate::evaluate::cam_figure::Request { image: a.image, methods, classes, threshold, alpha: a.alpha };
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
