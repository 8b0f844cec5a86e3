//! `wsol preflight`: what a run needs, checked before GPU hours are spent on it — the
//! dataset (`wsol data check`), the weights file and its checksum, the recipe beside
//! wsolevaluation's, and the run's time on this machine from a short `bench train`.

use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::load_config;
use crate::cli::PreflightArgs;
use crate::config::{Config, Method};

/// Full SHA-256 of weights files whose names do not carry one (torchvision's do: the 8
/// hex digits before `.pth` start their SHA-256).
const KNOWN_SHA256: &[(&str, &str)] =
    &[("efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")];

pub fn run(a: PreflightArgs) -> Result<()> {
    let cfg = load_config(&a.common, None)?;
    let mut failed = Vec::new();
    println!("preflight of {} ({})\n", a.common.config.as_deref().unwrap_or(Path::new("?")).display(), cfg.name);

    println!("data (wsol data check):");
    // A split may be absent for data check; a run cannot train without its train split.
    let checked = super::data::check_config(&cfg, a.common.quiet)
        .and_then(|train| train.with_context(|| format!("the train split `{}` is absent", cfg.data.train_split)));
    let train_images = match checked {
        Ok(n) => Some(n),
        Err(e) => {
            println!("  FAIL: {}", crate::error::message(&e));
            failed.push("data");
            None
        }
    };

    match weights(&cfg) {
        Ok(line) => println!("\nweights: {line}"),
        Err(line) => {
            println!("\nweights: FAIL: {line}");
            failed.push("weights");
        }
    }

    println!("\nrecipe (* = differs from wsolevaluation's default):");
    println!("{}", crate::report::table::grid(&["", "key", "this config", "wsolevaluation", "source"], &recipe(&cfg)));

    if a.bench_steps > 0 {
        let b = crate::bench::ModelBench {
            backbone: cfg.model.backbone,
            head: cfg.model.method,
            batch: cfg.data.batch_size,
            size: cfg.data.image_size as usize,
            classes: cfg.data.num_classes,
            warmup: 1,
            steps: a.bench_steps,
            device: cfg.device.clone(),
            tf32: cfg.gemm_tf32(),
            cudnn_benchmark: cfg.cudnn_benchmark,
            profile: false,
        };
        let r = crate::bench::train_step_speed(&b, None)?;
        let per_epoch = train_images.map(|n| n as f64 / r.images_per_s);
        let line = match per_epoch {
            Some(s) => format!(
                "about {} per epoch, {} for {} epochs of training (without validation and data loading)",
                duration(s),
                duration(s * cfg.train.epochs as f64),
                cfg.train.epochs
            ),
            None => "no estimate without the train split".to_string(),
        };
        println!(
            "\ntime on {}: {:.2} images/s ({} steps of batch {} at {} px, `wsol bench train`): {line}",
            cfg.device, r.images_per_s, a.bench_steps, cfg.data.batch_size, cfg.data.image_size
        );
    }
    if !failed.is_empty() {
        anyhow::bail!("preflight: {} not ready (see above)", failed.join(" and "));
    }
    Ok(())
}

/// The weights file's state: present and checked, absent where allowed, or what is wrong.
fn weights(cfg: &Config) -> std::result::Result<String, String> {
    let Some(path) = &cfg.model.pretrained else {
        return Ok("none (trained from scratch)".to_string());
    };
    if !path.exists() {
        if cfg.model.pretrained_optional {
            return Ok(format!("{} absent: the run trains from scratch (model.pretrained_optional)", path.display()));
        }
        return Err(format!(
            "{} not found: scripts/get_torchvision_weights.sh (or get_efficientnet_lite0.sh) fetches it on a connected machine",
            path.display()
        ));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let expected = KNOWN_SHA256.iter().find(|(n, _)| *n == name).map(|(_, s)| s.to_string()).or_else(|| {
        // torchvision: `<arch>-<first 8 hex digits of the SHA-256>.pth`.
        let stem = name.strip_suffix(".pth")?;
        let hex = stem.rsplit('-').next()?;
        (hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
    });
    let Some(expected) = expected else {
        return Ok(format!("{} present (no checksum known for this name)", path.display()));
    };
    let got = sha256(path).map_err(|e| format!("{}: {e:#}", path.display()))?;
    if got.starts_with(&expected) {
        Ok(format!("{} present, SHA-256 {}... as expected", path.display(), &got[..16]))
    } else {
        Err(format!("{}: SHA-256 {got} does not start with {expected}: a damaged or different file", path.display()))
    }
}

fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).context("cannot open")?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).context("cannot read")?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// One row per recipe key: this config's value beside wsolevaluation's default (its
/// `config.py` and `main.py`'s optimizer at commit 96f4b88), marked where they differ.
/// The learning rates the paper used per row were tuned on val (the authors' spreadsheet).
fn recipe(cfg: &Config) -> Vec<Vec<String>> {
    let (t, d, m, e) = (&cfg.train, &cfg.data, &cfg.model, &cfg.eval);
    let o = &t.optimizer;
    let schedule = match t.schedule.name.as_str() {
        "step" => format!(
            "step x{} every {} epochs, offset {}",
            t.schedule.gamma, t.schedule.step_epochs, t.schedule.step_offset
        ),
        "multistep" => format!("multistep x{} at epochs {:?} (from 0)", t.schedule.gamma, t.schedule.milestones),
        other => other.to_string(),
    };
    let ious: Vec<String> = e.iou_thresholds.iter().map(|v| v.to_string()).collect();
    let mut rows: Vec<(&str, String, &str, &str)> = vec![
        ("train.epochs", t.epochs.to_string(), "40", "config.py --epochs (README example: 10 on OpenImages)"),
        ("data.batch_size", d.batch_size.to_string(), "64", "config.py --batch_size (README example: 32)"),
        ("train.optimizer.lr", o.lr.to_string(), "0.01", "config.py --lr; the paper's were tuned per row"),
        ("train.optimizer.new_layer_lr_mult", o.new_layer_lr_mult.to_string(), "10", "config.py --lr_classifier_ratio"),
        ("train.optimizer.momentum", o.momentum.to_string(), "0.9", "config.py --momentum"),
        ("train.optimizer.weight_decay", o.weight_decay.to_string(), "0.0001", "config.py (README example: 5e-4)"),
        ("train.optimizer.nesterov", o.nesterov.to_string(), "true", "main.py's SGD"),
        ("train.schedule", schedule, "step x0.1 every 30 epochs, offset 1", "config.py --lr_decay_frequency, main.py"),
        ("data.resize_size", cfg.resize_size().to_string(), "256", "config.py --resize_size"),
        ("data.image_size", d.image_size.to_string(), "224", "config.py --crop_size"),
        ("model.large_feature_map", m.large_feature_map.to_string(), "false", "config.py --large_feature_map"),
        ("eval.cam_curve_interval", e.cam_curve_interval.to_string(), "0.001", "config.py --cam_curve_interval"),
        ("eval.iou_thresholds", ious.join(","), "30,50,70", "config.py --iou_threshold_list"),
        ("eval.multi_contour", e.multi_contour.to_string(), "true", "config.py --multi_contour_eval"),
        ("eval.checkpoint", e.checkpoint.to_string(), "last", "config.py --eval_checkpoint_type"),
    ];
    match m.method {
        Method::Acol => rows.push((
            "model.acol.erase_threshold",
            m.acol.erase_threshold.to_string(),
            "0.7",
            "config.py --acol_threshold",
        )),
        Method::Has => {
            rows.push(("model.has.grid_size", m.has.grid_size.to_string(), "4", "config.py --has_grid_size"));
            rows.push(("model.has.drop_rate", m.has.drop_rate.to_string(), "0.5", "config.py --has_drop_rate"));
        }
        Method::Adl => {
            rows.push(("model.adl.drop_rate", m.adl.drop_rate.to_string(), "0.75", "config.py --adl_drop_rate"));
            rows.push((
                "model.adl.drop_threshold",
                m.adl.drop_threshold.to_string(),
                "0.9",
                "config.py --adl_threshold",
            ));
        }
        Method::CutMix => {
            rows.push(("model.cutmix.beta", m.cutmix.beta.to_string(), "1", "config.py --cutmix_beta"));
            rows.push(("model.cutmix.prob", m.cutmix.prob.to_string(), "1", "config.py --cutmix_prob"));
        }
        Method::Spg => {
            let s = &m.spg;
            let ours = [s.threshold_1h, s.threshold_1l, s.threshold_2h, s.threshold_2l, s.threshold_3h, s.threshold_3l];
            let ours: Vec<String> = ours.iter().map(|v| v.to_string()).collect();
            rows.push(("model.spg.threshold_{1,2,3}{h,l}", ours.join(","), "0.7,0.01,0.5,0.05,0.7,0.1", "config.py"));
        }
        Method::Bas => {
            // The authors' CUB values for the backbone (wpy1999/BAS), not wsolevaluation's.
            let k = crate::methods::bas::Knobs::of(&m.bas, m.backbone);
            let (area, fg) = match m.backbone {
                crate::config::Backbone::Vgg16 => ("0.7", "0"),
                crate::config::Backbone::InceptionV3 => ("1", "0.5"),
                _ => ("1.2", "0.5"),
            };
            rows.push((
                "model.bas.area_weight",
                k.area_weight.to_string(),
                area,
                "wpy1999/BAS CUB Model/*.py bas_loss",
            ));
            rows.push(("model.bas.fg_weight", k.fg_weight.to_string(), fg, "wpy1999/BAS CUB train.py loss_2"));
        }
        Method::Cam | Method::TsCam | Method::Scm => {}
    }
    rows.into_iter()
        .map(|(k, ours, theirs, src)| {
            let same = ours.parse::<f64>().ok().zip(theirs.parse::<f64>().ok()).map_or(ours == theirs, |(a, b)| a == b);
            vec![if same { "" } else { "*" }.to_string(), k.to_string(), ours, theirs.to_string(), src.to_string()]
        })
        .collect()
}

fn duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else if seconds < 5400.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}
