//! `wsol report RUN_DIR`: one self-contained HTML page per run — the metrics table, the
//! box-accuracy-vs-threshold curves (inline SVG from `curve.csv`) and CAM overlays of
//! the best- and worst-localized images of the evaluated split (by IoU of the largest
//! contour's box at the run's best threshold, read from `per_image.csv`), embedded as PNG
//! data URIs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine;
use candle_core::Tensor;

use super::{cam_overlays, eval_loader};
use crate::cam::{self, CamInput};
use crate::config::Config;
use crate::data::{epoch_batches, Dataset, SplitMetadata};
use crate::models::WsolModel;
use wsol_eval::localize::{boxes_at_thresholds, iou, prepare_map, rescale_boxes};
use wsol_eval::metrics::PerImageTable;

pub struct ReportRequest {
    pub run_dir: PathBuf,
    /// Default: the checkpoint metrics.json names, else `checkpoints/last.safetensors`.
    pub checkpoint: Option<PathBuf>,
    /// Images in each of the best and worst rows.
    pub samples: usize,
}

/// Writes `<run>/report.html` and returns its path.
pub fn write(req: &ReportRequest) -> Result<PathBuf> {
    let run = &req.run_dir;
    let cfg = Config::load(&run.join("config.yaml"), &[])?;
    let metrics_path = run.join("metrics.json");
    let text = std::fs::read_to_string(&metrics_path)
        .with_context(|| format!("cannot read {} (did the run finish?)", metrics_path.display()))?;
    let metrics: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", metrics_path.display()))?;
    let scored = metrics["checkpoint"]
        .as_str()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .unwrap_or_else(|| run.join("checkpoints/last.safetensors"));
    // Another checkpoint than the one metrics.json scores is evaluated first, so the
    // table, the curve and the threshold are its own (in `<run>/eval-<name>/`).
    let (checkpoint, metrics, curve_dir) = match &req.checkpoint {
        Some(c) if !same_file(c, &scored) => {
            let split = cfg.eval.split.clone();
            let result = super::evaluate_checkpoint(&cfg, c, &split, None, true)?;
            let stem = c.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let dir = run.join(format!("eval-{}", stem.trim_end_matches(".safetensors")));
            let checkpoint_key = ("checkpoint", serde_json::json!(c.display().to_string()));
            result.write(&dir, std::slice::from_ref(&checkpoint_key))?;
            let mut json = result.to_json();
            json[checkpoint_key.0] = checkpoint_key.1;
            (c.clone(), json, dir)
        }
        _ => (scored, metrics, run.clone()),
    };
    let threshold = metrics["best_threshold_v1"].as_f64().unwrap_or(cfg.eval.fixed_threshold);

    let mut html = String::new();
    let title = run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    write!(
        html,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>wsol report: {t}</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}\
         figure{{display:inline-block;margin:4px;text-align:center;font-size:12px}}img{{image-rendering:pixelated}}\
         </style></head><body><h1>{t}</h1><p>method <b>{cam}</b>, split <b>{split}</b>, checkpoint <code>{ck}</code></p>",
        t = escape(&title),
        cam = escape(metrics["cam"].as_str().unwrap_or("?")),
        split = escape(metrics["split"].as_str().unwrap_or("?")),
        ck = escape(&checkpoint.display().to_string()),
    )?;
    html += "<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>";
    if let Some(obj) = metrics.as_object() {
        let alias = |k: &str| wsol_eval::results::ALIASES.iter().any(|(a, _)| *a == k);
        for (k, v) in obj {
            if let Some(x) = v.as_f64().filter(|_| !alias(k)) {
                write!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(k), fmt_metric(k, x))?;
            }
        }
    }
    // Numbers of later `wsol eval` runs that the run's own metrics.json lacks (e.g. the
    // faithfulness metrics of `wsol eval RUN --set eval.faithfulness=[...]`).
    let mut evals: Vec<PathBuf> = std::fs::read_dir(run)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.join("metrics.json").is_file()).collect())
        .unwrap_or_default();
    evals.sort();
    for dir in evals {
        let Ok(text) = std::fs::read_to_string(dir.join("metrics.json")) else { continue };
        let Ok(serde_json::Value::Object(other)) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for (k, v) in &other {
            if let Some(x) = v.as_f64().filter(|_| metrics.get(k).is_none()) {
                write!(html, "<tr><td>{} ({})</td><td>{}</td></tr>", escape(k), escape(&name), fmt_metric(k, x))?;
            }
        }
    }
    html += "</table>";
    if let Ok(csv) = std::fs::read_to_string(curve_dir.join("curve.csv")) {
        html += "<h2>Box accuracy vs CAM threshold</h2>";
        html += &curve_svg(&csv, threshold)?;
    }

    let device = crate::runtime::device(&cfg.device, cfg.gemm_tf32(), cfg.cudnn_benchmark)?;
    let model = crate::runtime::build_model(&cfg, &device)?;
    crate::runtime::load_weights(&model.varmap, &checkpoint)?;
    let net = model.inference_net(&cfg)?;
    let extractor = cam::by_name(cfg.eval.cam, cfg.eval.cam_layer.as_deref(), net.as_ref())?;
    let ds = crate::data::open::load_split(&cfg, &cfg.eval.split)?;
    let names = crate::data::ClassNames::load(&cfg)?;
    if ds.meta.samples.iter().all(|s| s.boxes.is_empty()) {
        html += "<p>No boxes in this split: no localization overlays.</p>";
    } else {
        let per_image = curve_dir.join("per_image.csv");
        let scores = if per_image.is_file() {
            ious_from_per_image(&per_image, &ds)?
        } else {
            // Runs evaluated before per_image.csv was written: the same IoUs, recomputed.
            per_image_iou(&cfg, &device, net.as_ref(), extractor.as_ref(), &ds, threshold)?
        };
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let k = req.samples.min(order.len());
        for (name, picked) in [("Best localized", &order[..k]), ("Worst localized", &order[order.len() - k..])] {
            write!(html, "<h2>{name} (IoU of the predicted box at threshold {threshold:.3})</h2>")?;
            let subset = Arc::new(Dataset {
                image_root: ds.image_root.clone(),
                meta: SplitMetadata {
                    split: ds.meta.split.clone(),
                    samples: picked.iter().map(|&i| ds.meta.samples[i].clone()).collect(),
                },
                masks: None,
            });
            let pngs = cam_overlays(net.as_ref(), extractor.as_ref(), &subset, &cfg, &device, picked.len(), threshold)?;
            let side = (cfg.data.image_size as usize).max(160);
            for (png, &i) in pngs.iter().zip(picked) {
                let sample = &ds.meta.samples[i];
                // The GT class by name where the dataset names its classes.
                let class = names.name(sample.label).map(|n| format!("{}<br>", escape(n))).unwrap_or_default();
                write!(
                    html,
                    "<figure><img width=\"{side}\" height=\"{side}\" src=\"data:image/png;base64,{}\"><figcaption>{}<br>{class}IoU {:.3}</figcaption></figure>",
                    base64::engine::general_purpose::STANDARD.encode(png),
                    escape(&sample.image_id),
                    scores[i]
                )?;
            }
        }
    }
    html += "<p>Green: GT boxes; red: the box of the largest contour. Written by <code>wsol report</code>.</p></body></html>\n";
    let out = run.join("report.html");
    wsol_eval::fs::atomic_write(&out, html.as_bytes())?;
    Ok(out)
}

/// The `iou` column of an evaluation's `per_image.csv`, per image of `ds` (0 for an image
/// without GT boxes, as [`per_image_iou`]); the file must cover exactly the split.
fn ious_from_per_image(path: &Path, ds: &Dataset) -> Result<Vec<f64>> {
    let table = PerImageTable::read(path)?;
    let index: HashMap<&str, usize> =
        ds.meta.samples.iter().enumerate().map(|(i, s)| (s.image_id.as_str(), i)).collect();
    let mut scores = vec![None; ds.meta.samples.len()];
    for row in &table.rows {
        let Some(&i) = index.get(row.image_id.as_str()) else {
            bail!("{}: image `{}` is not in split `{}`", path.display(), row.image_id, ds.meta.split);
        };
        scores[i] = Some(row.iou.unwrap_or(0.0));
    }
    if let Some(i) = scores.iter().position(Option::is_none) {
        bail!("{}: no row for image `{}` of split `{}`", path.display(), ds.meta.samples[i].image_id, ds.meta.split);
    }
    Ok(scores.into_iter().flatten().collect())
}

/// Best IoU of the largest contour's box with any GT box, per image of `ds`.
fn per_image_iou(
    cfg: &Config,
    device: &candle_core::Device,
    model: &dyn WsolModel,
    extractor: &dyn cam::CamExtractor,
    ds: &Arc<Dataset>,
    threshold: f64,
) -> Result<Vec<f64>> {
    let size = cfg.data.image_size as usize;
    let mut scores = Vec::with_capacity(ds.meta.samples.len());
    for batch in epoch_batches(ds.clone(), eval_loader(cfg, cfg.data.batch_size)) {
        let batch = batch?;
        let n = batch.labels.len();
        let x = Tensor::from_vec(batch.images, (n, 3, size, size), device)?;
        let labels = Tensor::from_vec(batch.labels, n, device)?;
        let out = model.forward_t(&x, false)?;
        let maps = extractor.extract(&CamInput { model, images: &x, out: &out, targets: &labels })?;
        let (_, h, w) = maps.dims3()?;
        let maps: Vec<f32> = maps.flatten_all()?.to_vec1()?;
        for (i, &index) in batch.indices.iter().enumerate() {
            let map = prepare_map(&maps[i * h * w..(i + 1) * h * w], w, h, size);
            let pred = boxes_at_thresholds(&map, size, size, &[threshold])[0].largest;
            let s = &ds.meta.samples[index];
            let best = rescale_boxes(&s.boxes, s.size, size).iter().map(|g| iou(&pred, g)).fold(0.0, f64::max);
            scores.push(best);
        }
    }
    Ok(scores)
}

/// Lines of `curve.csv` (threshold, then one column per mode and IoU) as an SVG chart,
/// the largest-contour (v1) curves solid, the all-contour (v2) ones dashed, the best
/// threshold marked.
fn curve_svg(csv: &str, best: f64) -> Result<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let rows: Vec<Vec<f64>> =
        lines.map(|l| l.split(',').map(|v| v.trim().parse().unwrap_or(f64::NAN)).collect()).collect();
    let (w, h, m) = (560.0, 320.0, 40.0);
    let x = |t: f64| m + t * (w - 2.0 * m);
    let y = |a: f64| h - m - a / 100.0 * (h - 2.0 * m);
    let mut svg = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"11\">");
    write!(
        svg,
        "<rect x=\"{m}\" y=\"{m}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
        w - 2.0 * m,
        h - 2.0 * m
    )?;
    for v in [0.0, 0.25, 0.5, 0.75, 1.0] {
        write!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v}</text>", x(v), h - m + 14.0)?;
        write!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", m - 4.0, y(v * 100.0) + 4.0, v * 100.0)?;
    }
    write!(
        svg,
        "<line x1=\"{0}\" x2=\"{0}\" y1=\"{m}\" y2=\"{1}\" stroke=\"#888\" stroke-dasharray=\"2,3\"/>",
        x(best),
        h - m
    )?;
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    let mut legend = 0;
    for (c, name) in header.iter().enumerate().skip(1) {
        if !(name.starts_with("v1_") || name.starts_with("v2_")) {
            continue;
        }
        let points: Vec<String> = rows
            .iter()
            .filter(|r| r.len() > c && r[0].is_finite() && r[c].is_finite())
            .map(|r| format!("{:.1},{:.1}", x(r[0]), y(r[c])))
            .collect();
        let colour = colours[(c - 1) % 3];
        let dash = if name.starts_with("v2_") { " stroke-dasharray=\"5,3\"" } else { "" };
        write!(svg, "<polyline fill=\"none\" stroke=\"{colour}\"{dash} points=\"{}\"/>", points.join(" "))?;
        write!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>",
            w - m - 110.0,
            m + 14.0 + 13.0 * legend as f64,
            escape(name)
        )?;
        legend += 1;
    }
    svg += "</svg>";
    Ok(svg)
}

/// One number format per kind, as in the console table: counts whole, thresholds with
/// three decimals, percentages with two.
fn fmt_metric(key: &str, x: f64) -> String {
    if key == "num_images" {
        format!("{x:.0}")
    } else if key.contains("threshold") {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
/// Whether two paths name one file (a checkpoint's public name is a hard link to its
/// step-stamped file).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) if a == b => true,
        _ => match (std::fs::metadata(a), std::fs::metadata(b)) {
            #[cfg(unix)]
            (Ok(a), Ok(b)) => {
                use std::os::unix::fs::MetadataExt;
                (a.dev(), a.ino()) == (b.dev(), b.ino())
            }
            _ => false,
        },
    }
}
