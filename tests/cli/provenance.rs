//! What a run records about itself, and which checkpoint (and config) `wsol eval` and
//! `wsol report` score: paths that hold no weights, a run's own config, another checkpoint.

use crate::common::*;

/// One tiny epoch: `train.log` opens with the run's provenance, `metrics.json` carries it
/// (version, commit, threads, device, kernels), and `wsol eval` records it too. The older
/// spelling `model.head` still loads (the config and `--set`).
#[test]
fn runs_record_version_commit_threads_device_and_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth(d, 32, 8, 8);
    let cfg = write_config(d, "prov", "");
    let cfg = cfg.to_str().unwrap();
    // `tf32: true` on the CPU: a warning, and the run is (and says it is) fp32.
    let args = ["train", "--config", cfg, "--set", "train.epochs=1", "--set", "model.head=cam", "--set", "tf32=true"];
    wsol_ok(&[&args[..], &["--out", "run", "--quiet"]].concat(), d);
    let log = std::fs::read_to_string(d.join("run/train.log")).unwrap();
    let first = log.lines().next().unwrap();
    assert!(first.starts_with("run: wsol ") && first.contains("threads") && first.contains("conv "), "{first}");
    assert!(first.contains("device cpu, fp32,"), "{first}");
    assert!(log.contains("warning: train.precision: tf32 (or tf32: true) changes only a GPU's"), "{log}");
    let m = read_json(&d.join("run/metrics.json"));
    let p = &m["provenance"];
    assert_eq!(p["wsol_version"], env!("CARGO_PKG_VERSION"), "{m}");
    assert!(p["git_commit"].is_string() && p["threads"].as_u64().unwrap() >= 1, "{p}");
    assert_eq!(p["device"], "cpu");
    assert_eq!(p["precision"], "fp32");
    assert!(p["kernels"]["conv"].is_string() && p["kernels"]["cpu_features"].is_array(), "{p}");
    let resolved = std::fs::read_to_string(d.join("run/config.yaml")).unwrap();
    assert!(resolved.contains("method: cam") && resolved.contains("precision: tf32"), "{resolved}");
    assert!(resolved.contains("tf32: false"), "the older spelling is folded in: {resolved}");

    wsol_ok(
        &["eval", "--config", cfg, "--checkpoint", "run/checkpoints/last.safetensors", "--out", "ev", "--quiet"],
        d,
    );
    assert!(read_json(&d.join("ev/metrics.json"))["provenance"]["kernels"].is_object());
}

/// A run directory, a checkpoint's `.json` index or its optimizer state given as
/// `--checkpoint`: the message says what the file is and which one to pass.
#[test]
fn eval_names_the_weights_file_for_other_checkpoint_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth(d, 32, 0, 8);
    let cfg = write_config(d, "paths", "");
    let cfg = cfg.to_str().unwrap();
    wsol_ok(&["train", "--config", cfg, "--set", "train.epochs=1", "--out", "run", "--quiet"], d);
    let eval = |ckpt: &str| wsol_err(&["eval", "--config", cfg, "--checkpoint", ckpt, "--quiet"], d);
    let e = eval("run/checkpoints/last.optim.safetensors");
    assert!(e.contains("optimizer-state file") && e.contains("run/checkpoints/last.safetensors"), "{e}");
    let e = eval("run");
    assert!(e.contains("is a directory") && e.contains("run/checkpoints/last.safetensors"), "{e}");
    let e = eval("run/checkpoints/last.json");
    assert!(e.contains("index") && e.contains("run/checkpoints/last.safetensors"), "{e}");
}

/// `wsol eval --checkpoint RUN/checkpoints/last.safetensors` without `--config` reads the
/// run's own `config.yaml` and gives the numbers of the end of training.
#[test]
fn eval_without_config_uses_the_runs_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth(d, 32, 0, 8);
    let cfg = write_config(d, "own", "");
    let args = ["train", "--config", cfg.to_str().unwrap(), "--set", "train.epochs=1", "--set", "model.width=8"];
    let mut args = args.to_vec();
    args.extend(["--out", "run", "--quiet"]);
    wsol_ok(&args, d);
    std::fs::remove_file(&cfg).unwrap();
    wsol_ok(&["eval", "--checkpoint", "run/checkpoints/last.safetensors", "--quiet"], d);
    let (mut trained, mut again) =
        (read_json(&d.join("run/metrics.json")), read_json(&d.join("run/eval-test/metrics.json")));
    for m in [&mut trained, &mut again] {
        m.as_object_mut().unwrap().remove("checkpoint");
    }
    assert_eq!(trained, again);
}

/// `wsol report RUN --checkpoint X` with another checkpoint than the one `RUN/metrics.json`
/// scores evaluates X first: the page's numbers are X's (written to `RUN/eval-<name>/`),
/// not the run's.
#[test]
fn report_scores_the_checkpoint_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synth(d, 32, 8, 8);
    let cfg = write_config(d, "rep", "");
    let c = cfg.to_str().unwrap();
    for (epochs, out) in [("train.epochs=1", "short"), ("train.epochs=3", "long")] {
        wsol_ok(&["train", "--config", c, "--set", epochs, "--out", out, "--quiet"], d);
    }
    let other = d.join("long/checkpoints/last.safetensors");
    wsol_ok(&["report", "short", "--checkpoint", other.to_str().unwrap(), "--samples", "1"], d);
    let mut scored = read_json(&d.join("short/eval-last/metrics.json"));
    let mut long = read_json(&d.join("long/metrics.json"));
    for m in [&mut scored, &mut long] {
        m.as_object_mut().unwrap().remove("checkpoint");
        m.as_object_mut().unwrap().remove("provenance");
    }
    assert_eq!(scored, long, "the named checkpoint's own numbers");
    let html = std::fs::read_to_string(d.join("short/report.html")).unwrap();
    assert!(html.contains("long/checkpoints/last.safetensors"), "the page names the checkpoint it scored");
}
