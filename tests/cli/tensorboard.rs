//! What a run leaves for TensorBoard, read back from its event files: the HParams
//! records of a sweep and of a plain run (decoded with tensorboard-proto's generated
//! classes, not with the encoder that wrote them), and weight/gradient histograms.

use std::collections::BTreeMap;
use std::path::Path;

use protobuf::Message;
use tensorboard_proto::api::Status;
use tensorboard_proto::event::Event;
use tensorboard_proto::plugin_hparams::HParamsPluginData;
use tensorboard_proto::summary::Summary_Value;

use crate::common::*;

/// Every event of the event files in `tb` (in file-name order, as TensorBoard reads them).
fn events(tb: &Path) -> Vec<Event> {
    let mut files: Vec<_> = std::fs::read_dir(tb)
        .unwrap_or_else(|e| panic!("{}: {e}", tb.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("tfevents"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let mut p = 0;
        while p < bytes.len() {
            // u64 length, u32 CRC of it, the record, u32 CRC of the record.
            let len = u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap()) as usize;
            out.push(Event::parse_from_bytes(&bytes[p + 12..p + 12 + len]).unwrap());
            p += len + 16;
        }
    }
    out
}

/// The summary values of `events` with their steps.
fn values(events: &[Event]) -> Vec<(i64, &Summary_Value)> {
    events.iter().flat_map(|e| e.get_summary().get_value().iter().map(move |v| (e.get_step(), v))).collect()
}

/// The HParams plugin records of a run, by tag.
fn hparams_records(events: &[Event]) -> BTreeMap<String, Vec<HParamsPluginData>> {
    let mut out: BTreeMap<String, Vec<HParamsPluginData>> = BTreeMap::new();
    for (_, v) in values(events) {
        let data = v.get_metadata().get_plugin_data();
        if data.get_plugin_name() == "hparams" {
            assert!(v.get_tag().starts_with("_hparams_/"), "{}", v.get_tag());
            let record = HParamsPluginData::parse_from_bytes(data.get_content()).unwrap();
            assert_eq!(record.get_version(), 0);
            out.entry(v.get_tag().to_string()).or_default().push(record);
        }
    }
    out
}

/// The last value of each scalar tag (what the HParams dashboard shows as a metric).
fn last_scalars(events: &[Event]) -> BTreeMap<String, f32> {
    values(events)
        .into_iter()
        .filter(|(_, v)| v.has_simple_value())
        .map(|(_, v)| (v.get_tag().to_string(), v.get_simple_value()))
        .collect()
}

/// `wsol sweep` with 3 trials: the sweep's own `tb/` lists the searched keys (a range as
/// an interval, a choice as its values) and the val metrics; every trial's run records
/// its sampled values, the val metrics as scalars, and a successful end.
#[test]
fn sweep_trials_line_up_in_the_hparams_dashboard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 64, 16, 16);
    let cfg = write_config(dir, "hp", "");
    std::fs::write(
        dir.join("search.yaml"),
        "train.optimizer.lr: {log_uniform: [1.0e-3, 0.3]}\nmodel.head: {choice: [cam, has]}\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let sweep = ["sweep", "--config", c, "--set", "train.epochs=1", "--trials", "3", "--search", "search.yaml"];
    wsol_ok(&[&sweep[..], &["--out", "s", "--quiet"]].concat(), dir);

    let root = hparams_records(&events(&dir.join("s/tb")));
    assert_eq!(root.keys().collect::<Vec<_>>(), ["_hparams_/experiment"]);
    let experiment = root["_hparams_/experiment"][0].get_experiment();
    let infos: BTreeMap<&str, _> = experiment.get_hparam_infos().iter().map(|h| (h.get_name(), h)).collect();
    assert_eq!(infos.keys().copied().collect::<Vec<_>>(), ["model.method", "train.optimizer.lr"]);
    let lr = infos["train.optimizer.lr"].get_domain_interval();
    assert_eq!((lr.get_min_value(), lr.get_max_value()), (1.0e-3, 0.3));
    let methods: Vec<&str> =
        infos["model.method"].get_domain_discrete().get_values().iter().map(|v| v.get_string_value()).collect();
    assert_eq!(methods, ["cam", "has"]);
    let metrics: Vec<&str> = experiment.get_metric_infos().iter().map(|m| m.get_name().get_tag()).collect();
    assert_eq!(metrics[0], "best_val/gt_known_loc", "the sweep's own ranking first");
    for m in ["val/maxboxacc_v2", "val/gt_known_loc", "val/top1_loc", "val/top1_cls"] {
        assert!(metrics.contains(&m), "{m} not in {metrics:?}");
    }
    assert!(!metrics.iter().any(|m| m.starts_with("test/")), "trials never score test: {metrics:?}");

    let s = read_json(&dir.join("s/sweep.json"));
    let select_by = s["select_by"].as_str().unwrap().to_string();
    for trial in s["trials"].as_array().unwrap() {
        let run = dir.join(trial["run_dir"].as_str().unwrap());
        let evs = events(&run.join("tb"));
        let records = hparams_records(&evs);
        assert!(!records.contains_key("_hparams_/experiment"), "a trial leaves the columns to the sweep");
        assert_eq!(records["_hparams_/session_start_info"].len(), 1);
        let start = records["_hparams_/session_start_info"][0].get_session_start_info();
        let hparams = start.get_hparams();
        // Sampled values as the trial's config holds them, typed.
        for o in trial["overrides"].as_array().unwrap() {
            let (key, value) = o.as_str().unwrap().split_once('=').unwrap();
            match key {
                "train.optimizer.lr" => {
                    assert_eq!(hparams[key].get_number_value(), value.parse::<f64>().unwrap(), "{o}")
                }
                "model.head" => assert_eq!(hparams["model.method"].get_string_value(), value, "{o}"),
                _ => panic!("unexpected override {o}"),
            }
        }
        assert_eq!(hparams["train.epochs"].get_number_value(), 1.0);
        assert!(hparams["log.tensorboard"].get_bool_value() && hparams["log.tensorboard"].has_bool_value());
        assert!(start.get_start_time_secs() > 1.0e9);
        let end = records["_hparams_/session_end_info"][0].get_session_end_info();
        assert_eq!(end.get_status(), Status::STATUS_SUCCESS);
        // The metrics are the run's own scalars; its selection score is the last val one.
        let scalars = last_scalars(&evs);
        for m in &metrics {
            assert!(scalars.contains_key(*m), "{}: no scalar {m}", run.display());
        }
        let best = scalars[&format!("best_val/{select_by}")];
        assert_eq!(best, trial["val_score"].as_f64().unwrap() as f32, "{trial}");
    }

    // A resumed sweep (here: one more trial) writes no second experiment record.
    wsol_ok(&[&sweep[..], &["--out", "s", "--quiet"]].concat(), dir);
    assert_eq!(hparams_records(&events(&dir.join("s/tb")))["_hparams_/experiment"].len(), 1);
}

/// `wsol train` records its own experiment and session (config values typed, val and
/// test metrics); histograms every `log.histograms_every` steps change no number; a
/// resumed run keeps its one start record.
#[test]
fn train_records_hparams_and_histograms_without_changing_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 64, 16, 16);
    let cfg = write_config(dir, "hist", "");
    let c = cfg.to_str().unwrap();
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec!["train", "--config", c, "--set", "train.epochs=2", "--out", out, "--quiet"];
        args.extend(extra);
        wsol_ok(&args, dir);
    };
    train("plain", &[]);
    train("hist", &["--set", "log.histograms_every=2"]);
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("checkpoint");
        v.as_object_mut().unwrap().remove("provenance");
        v
    };
    let plain = strip(read_json(&dir.join("plain/metrics.json")));
    assert_eq!(plain, strip(read_json(&dir.join("hist/metrics.json"))), "histograms changed the run");

    let evs = events(&dir.join("hist/tb"));
    let hists: Vec<(i64, &str, f64, f64)> = values(&evs)
        .into_iter()
        .filter(|(_, v)| v.has_histo())
        .map(|(s, v)| (s, v.get_tag(), v.get_histo().get_num(), v.get_histo().get_bucket().iter().sum()))
        .collect();
    // 64 images in batches of 32: 2 steps an epoch, so histograms after steps 2 and 4.
    let steps: std::collections::BTreeSet<i64> = hists.iter().map(|h| h.0).collect();
    assert_eq!(steps.into_iter().collect::<Vec<_>>(), [2, 4]);
    let tags: std::collections::BTreeSet<&str> = hists.iter().map(|h| h.1).collect();
    assert!(tags.iter().any(|t| t.starts_with("weights/")) && tags.iter().any(|t| t.starts_with("grads/")));
    for t in tags.iter().filter(|t| t.starts_with("grads/")) {
        assert!(tags.contains(format!("weights/{}", &t["grads/".len()..]).as_str()), "{t} without its weights");
    }
    for (_, tag, num, counted) in &hists {
        assert!(*num >= 1.0 && num == counted, "{tag}: {num} values, {counted} in buckets");
    }
    assert!(!values(&events(&dir.join("plain/tb"))).iter().any(|(_, v)| v.has_histo()), "off by default");

    let records = hparams_records(&evs);
    let experiment = records["_hparams_/experiment"][0].get_experiment();
    let names: Vec<&str> = experiment.get_hparam_infos().iter().map(|h| h.get_name()).collect();
    assert!(names.contains(&"train.optimizer.lr") && names.contains(&"log.histograms_every"), "{names:?}");
    let metrics: Vec<&str> = experiment.get_metric_infos().iter().map(|m| m.get_name().get_tag()).collect();
    assert!(metrics.contains(&"val/maxboxacc_v2") && metrics.contains(&"test/maxboxacc_v2"), "{metrics:?}");
    let start = records["_hparams_/session_start_info"][0].get_session_start_info();
    let h = start.get_hparams();
    assert_eq!(h["train.optimizer.lr"].get_number_value(), 0.2);
    assert_eq!(h["model.backbone"].get_string_value(), "tiny");
    assert!(h["data.hflip"].has_bool_value());
    let scalars = last_scalars(&evs);
    assert_eq!(scalars["test/maxboxacc_v2"] as f64, plain["maxboxacc_v2"].as_f64().unwrap() as f32 as f64);

    // One epoch, then resumed to two: one start record, one experiment, among both files.
    train("r", &["--set", "train.epochs=1"]);
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=2", "--resume", "r", "--quiet"], dir);
    let records = hparams_records(&events(&dir.join("r/tb")));
    assert_eq!(records["_hparams_/experiment"].len(), 1);
    assert_eq!(records["_hparams_/session_start_info"].len(), 1);
    assert!(std::fs::read_dir(dir.join("r/tb")).unwrap().count() >= 2, "a resumed run writes a second file");
}

#[test]
fn histograms_need_tensorboard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = write_config(dir, "h", "");
    let c = cfg.to_str().unwrap();
    let err = wsol_err(
        &["train", "--config", c, "--set", "log.tensorboard=false", "--set", "log.histograms_every=5", "--quiet"],
        dir,
    );
    assert!(err.contains("log.histograms_every"), "{err}");
    let err = wsol_err(&["train", "--config", c, "--set", "log.histograms_every=-1", "--quiet"], dir);
    assert!(err.contains("log.histograms_every"), "{err}");
}
