//! `wsol cam`: pictures of images' class maps, one PNG per image; what each panel shows
//! (method, class, probability, box in the image's own pixels) goes to stdout, progress
//! to stderr.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::load_config;
use crate::cam::CamMethod;
use crate::cli::CamArgs;
use crate::data::ClassNames;
use crate::evaluate::cam_figure::{CamFigure, Classes, Request};
use crate::report::Progress;

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
    let jobs = plan(&a.image, &a.out)?;
    let names = ClassNames::load(&cfg)?;
    let device = crate::runtime::device(&cfg.device, cfg.gemm_tf32(), cfg.cudnn_benchmark)?;
    let model = crate::runtime::build_model(&cfg, &device)?;
    match &a.checkpoint {
        Some(c) => crate::runtime::load_weights(&model.varmap, c)?,
        None => anyhow::ensure!(
            cfg.model.pretrained.is_some() && cfg.model.pretrained_classifier,
            "--checkpoint: required unless the config sets model.pretrained and model.pretrained_classifier"
        ),
    }
    let panels = methods.len() * classes.rows(cfg.data.num_classes);
    let progress = Progress::new((jobs.len() * panels) as u64, "cam", a.common.quiet);
    let net = model.inference_net(&cfg)?;
    let req = Request { methods, classes, threshold, alpha: a.alpha };
    let figure = CamFigure::new(net.as_ref(), &cfg, &device, req, names.clone(), &progress)?;
    for (image, out) in &jobs {
        let f = figure.render(image)?;
        wsol_eval::fs::atomic_write(out, &f.png)?;
        let (w, h) = f.image_size;
        progress.stdout_line(&format!("{} ({w}x{h})", image.display()));
        for p in f.panels {
            let b = p.pred;
            progress.stdout_line(&format!(
                "  {:<10} {}  p={:.4}  box ({}, {}, {}, {}) at threshold {threshold}",
                p.method,
                names.describe(p.class),
                p.score,
                b.x0,
                b.y0,
                b.x1,
                b.y1
            ));
        }
        progress.stdout_line(&format!("wrote {}", out.display()));
    }
    progress.finish();
    Ok(())
}

/// (image, PNG to write) pairs: `image` itself, or every .jpg/.jpeg/.png file of the
/// folder `image` in name order, each to `<out>/<stem>.png`.
fn plan(image: &Path, out: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    if !image.is_dir() {
        // An existing folder as --out takes the picture as `<stem>.png`, as `cp` would.
        let out = match (out.is_dir(), image.file_stem()) {
            (true, Some(stem)) => out.join(png_name(stem)),
            _ => out.to_path_buf(),
        };
        return Ok(vec![(image.to_path_buf(), out)]);
    }
    let mut images: Vec<PathBuf> = std::fs::read_dir(image)
        .with_context(|| format!("--image {}: cannot list the folder", image.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_name(p))
        .collect();
    images.sort();
    if images.is_empty() {
        bail!("--image {}: no .jpg, .jpeg or .png files in this folder", image.display());
    }
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {}: is a file; with a folder as --image, --out is the folder that gets one PNG per image",
            out.display()
        );
    }
    let mut jobs: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(images.len());
    for img in images {
        let png = out.join(png_name(img.file_stem().unwrap_or_default()));
        if let Some((other, _)) = jobs.iter().find(|(_, o)| *o == png) {
            bail!(
                "--image {}: {} and {} would both be drawn to {}; rename one",
                image.display(),
                other.display(),
                img.display(),
                png.display()
            );
        }
        jobs.push((img, png));
    }
    std::fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create the folder", out.display()))?;
    Ok(jobs)
}

/// `<stem>.png` (a stem may hold dots: `a.b` of `a.b.jpg` gives `a.b.png`).
fn png_name(stem: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut name = stem.to_os_string();
    name.push(".png");
    name
}

fn is_image_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let e = e.to_ascii_lowercase();
        matches!(e.as_str(), "jpg" | "jpeg" | "png")
    })
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
