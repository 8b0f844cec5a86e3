//! What a run tells TensorBoard's HParams dashboard: its resolved config values as
//! hyperparameters, the final validation and test scores as metrics (the scalars
//! `best_val/<train.select_by>` of the epoch `best` was chosen at, `val/<key>` of the
//! last validation and `test/<key>` of the final evaluation).

use std::collections::BTreeMap;

use crate::config::{Config, DataFormat};
use crate::report::hparams::{Domain, Experiment, HParamInfo, HValue, MetricInfo};

/// metrics.json keys that score localization on boxes, then classification, then masks.
const BOX_METRICS: &[&str] = &["maxboxacc_v2", "maxboxacc", "gt_known_loc", "top1_loc", "top5_loc"];
const CLASSIFICATION_METRICS: &[&str] = &["top1_cls", "top5_cls"];
const MASK_METRICS: &[&str] = &["pxap"];

/// The resolved config as dotted keys (`train.optimizer.lr`): numbers, strings and bools
/// as themselves, lists as their YAML text (`[30, 50, 70]`, which the dashboard shows
/// as a string); unset (null) keys are left out.
pub fn config_hparams(cfg: &Config) -> BTreeMap<String, HValue> {
    fn walk(prefix: &str, v: &serde_yaml::Value, out: &mut BTreeMap<String, HValue>) {
        use serde_yaml::Value as Y;
        let value = match v {
            Y::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                    let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
                return;
            }
            Y::Null => return,
            Y::Bool(b) => HValue::Bool(*b),
            Y::Number(n) => HValue::Number(n.as_f64().unwrap_or(f64::NAN)),
            Y::String(s) => HValue::Text(s.clone()),
            Y::Sequence(_) | Y::Tagged(_) => HValue::Text(flow_text(v)),
        };
        out.insert(prefix.to_string(), value);
    }
    let mut out = BTreeMap::new();
    walk("", &serde_yaml::to_value(cfg).expect("config serializes"), &mut out);
    out
}

/// One line of YAML for a list: `[30, 50, 70]`; an f32 as its own shortest digits
/// (`0.485`, not the `0.48500001430511475` of its f64).
fn flow_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::Sequence(items) => {
            format!("[{}]", items.iter().map(flow_text).collect::<Vec<_>>().join(", "))
        }
        serde_yaml::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if (x as f32) as f64 == x {
                format!("{}", x as f32)
            } else {
                format!("{x}")
            }
        }
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// The metrics.json keys that mean something for the configured data: no boxes in a
/// folder-of-classes set, PxAP instead of boxes on a mask split (OpenImages).
pub fn metric_keys(cfg: &Config) -> Vec<&'static str> {
    let masks = cfg.data.format == DataFormat::Wsol
        && wsol_eval::masks::is_mask_split(&cfg.data.metadata_root, &cfg.data.val_split).unwrap_or(false);
    let loc = match cfg.data.format {
        DataFormat::Folder => &[][..],
        _ if masks => MASK_METRICS,
        _ => BOX_METRICS,
    };
    loc.iter().chain(CLASSIFICATION_METRICS).copied().collect()
}

/// `best_val/<train.select_by>`, then `<prefix>/<key>` for each prefix and key; the
/// `val` ones are the validation set's.
pub fn metric_infos(cfg: &Config, prefixes: &[&str], keys: &[&str]) -> Vec<MetricInfo> {
    let validation = |tag: String| MetricInfo { tag, group: String::new(), dataset_type: 2 };
    let mut out = vec![validation(format!("best_val/{}", cfg.train.select_by))];
    for p in prefixes {
        for k in keys {
            let tag = format!("{p}/{k}");
            out.push(if *p == "val" { validation(tag) } else { MetricInfo { dataset_type: 0, ..validation(tag) } });
        }
    }
    out
}

/// A plain run's own experiment: each of its hyperparameters with its type (one run has
/// no range to show), its final val and test metrics.
pub fn run_experiment(cfg: &Config, hparams: &BTreeMap<String, HValue>, time_created_secs: f64) -> Experiment {
    let infos = hparams
        .iter()
        .map(|(name, v)| HParamInfo {
            name: name.clone(),
            kind: Some(v.clone()),
            domain: Domain::Unset,
            differs: false,
        })
        .collect();
    Experiment {
        description: format!("wsol train {}", cfg.name),
        time_created_secs,
        hparams: infos,
        metrics: metric_infos(cfg, &["val", "test"], &metric_keys(cfg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_flattens_to_typed_dotted_keys() {
        let mut cfg = Config::default();
        cfg.model.pretrained = None;
        let h = config_hparams(&cfg);
        assert_eq!(h["train.optimizer.lr"], HValue::Number(cfg.train.optimizer.lr));
        assert_eq!(h["log.tensorboard"], HValue::Bool(true));
        assert_eq!(h["eval.iou_thresholds"], HValue::Text("[30, 50, 70]".into()));
        assert!(matches!(h["model.backbone"], HValue::Text(_)));
        assert!(!h.contains_key("model.pretrained"), "unset keys are left out");
        assert!(!h.keys().any(|k| k.is_empty() || k.ends_with('.')));
    }

    #[test]
    fn metrics_follow_the_annotations() {
        let mut cfg = Config::default();
        cfg.data.format = DataFormat::Folder;
        assert_eq!(metric_keys(&cfg), ["top1_cls", "top5_cls"]);
        cfg.data.format = DataFormat::Wsol;
        cfg.data.metadata_root = "/nonexistent".into();
        assert_eq!(metric_keys(&cfg)[0], "maxboxacc_v2");
        cfg.train.select_by = crate::config::SelectBy::GtKnownLoc;
        let infos = metric_infos(&cfg, &["val", "test"], &["top1_cls"]);
        let tags: Vec<&str> = infos.iter().map(|m| m.tag.as_str()).collect();
        assert_eq!(tags, ["best_val/gt_known_loc", "val/top1_cls", "test/top1_cls"]);
        assert_eq!(infos.iter().map(|m| m.dataset_type).collect::<Vec<_>>(), [2, 2, 0]);
    }
}
