//! ResNet-18 through the CLI: trains, scores a Grad-CAM of an inner layer, and starts a
//! new run from the previous run's weights via `model.pretrained` (the head is new, so it
//! is left at its initialization; everything else must load).

use crate::common::*;

#[test]
fn resnet18_trains_scores_and_fine_tunes_from_pretrained() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 32, 0, 8);
    let cfg = write_config(dir, "r18", "");
    let c = cfg.to_str().unwrap();
    let common = ["--set", "model.backbone=resnet18", "--set", "data.image_size=32", "--set", "train.epochs=1"];
    let mut args = vec!["train", "--config", c, "--out", "a", "--quiet"];
    args.extend(common);
    wsol_ok(&args, dir);
    let mut args =
        vec!["eval", "--config", c, "--checkpoint", "a/checkpoints/last.safetensors", "--out", "ev", "--quiet"];
    args.extend(common);
    args.extend(["--set", "eval.cam=gradcam", "--set", "eval.cam_layer=layer3"]);
    wsol_ok(&args, dir);
    assert_eq!(read_json(&dir.join("ev/metrics.json"))["cam"], "gradcam");

    let mut args = vec!["train", "--config", c, "--out", "b", "--quiet"];
    args.extend(common);
    args.extend(["--set", "model.pretrained=a/checkpoints/last.safetensors"]);
    wsol_ok(&args, dir);
    // A tiny checkpoint is not a ResNet-18: every missing tensor is a clear error.
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=1", "--out", "t", "--quiet"], dir);
    let mut args = vec!["train", "--config", c, "--quiet"];
    args.extend(common);
    args.extend(["--set", "model.pretrained=t/checkpoints/last.safetensors"]);
    let err = wsol_err(&args, dir);
    assert!(err.contains("model.pretrained") && err.contains("missing") && err.contains("conv1.weight"), "{err}");
}

#[test]
fn bench_train_prints_one_json_object() {
    let tmp = tempfile::tempdir().unwrap();
    let out = wsol_ok(
        &[
            "bench",
            "train",
            "--backbone",
            "tiny",
            "--batch",
            "4",
            "--size",
            "32",
            "--classes",
            "3",
            "--steps",
            "2",
            "--json",
        ],
        tmp.path(),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["step_ms"].as_array().unwrap().len(), 2);
    // Host time to issue each pass: on the CPU the pass itself, never more than it.
    for (issue, pass) in [("forward_issue_ms", "forward_ms"), ("backward_issue_ms", "backward_ms")] {
        let (i, p) = (v[issue].as_f64().unwrap(), v[pass].as_f64().unwrap());
        assert!(i > 0.0 && i <= p, "{issue} {i} against {pass} {p}");
    }
    assert_eq!(v["cudnn_benchmark"], false);
    assert_eq!(v["cudnn_graph"], false);
    let err = wsol_err(&["bench", "train", "--backbone", "vgg99"], tmp.path());
    assert!(err.contains("vgg99"), "{err}");
    // cuDNN's graph API asked of a build without cuDNN: said so, not ignored.
    #[cfg(not(feature = "cudnn"))]
    {
        let err = wsol_err(&["bench", "train", "--backbone", "tiny", "--cudnn-graph"], tmp.path());
        assert!(err.contains("--cudnn-graph") && err.contains("--features cudnn"), "{err}");
    }
}

/// `wsol bench eval` times evaluation steps (forward, then the maps) for a CAM method and
/// a gradient one, batch norm on its running statistics; an unknown method is named.
#[test]
fn bench_eval_times_forward_and_maps() {
    let tmp = tempfile::tempdir().unwrap();
    for method in ["cam", "gradcam"] {
        let args = ["bench", "eval", "--backbone", "resnet18", "--batch", "2", "--size", "32", "--steps", "2"];
        let out = wsol_ok(&[&args[..], &["--method", method, "--profile", "--json"]].concat(), tmp.path());
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["method"], method);
        assert_eq!(v["step_ms"].as_array().unwrap().len(), 2);
        assert!(v["images_per_s"].as_f64().unwrap() > 0.0 && v["forward_ms"].as_f64().unwrap() > 0.0);
        let ops: Vec<&str> = v["profile"].as_array().unwrap().iter().map(|r| r["op"].as_str().unwrap()).collect();
        assert!(ops.iter().any(|op| op.starts_with("batch norm running stats 64x")), "{ops:?}");
        assert!(!ops.iter().any(|op| op.starts_with("batch norm statistics")), "{ops:?}");
    }
    let err = wsol_err(&["bench", "eval", "--backbone", "tiny", "--method", "cams"], tmp.path());
    assert!(err.contains("cams") && err.contains("gradcam"), "{err}");
}

/// `--profile` times our ops per shape: the stem convolution's row carries its flops
/// (batch 4, 16x16 outputs, 27 taps), and the text table ends with the rest of the step.
#[test]
fn bench_train_profile_lists_ops_with_their_flops() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args =
        vec!["bench", "train", "--backbone", "tiny", "--batch", "4", "--size", "32", "--classes", "3", "--steps", "2"];
    args.push("--profile");
    let text = wsol_ok(&args, tmp.path());
    for op in ["conv forward", "conv grad input", "conv grad weight", "batch norm grad input", "max pool grad"] {
        assert!(text.contains(op), "{op}: {text}");
    }
    assert!(text.contains("everything else (candle's ops)"), "{text}");
    args.push("--json");
    let v: serde_json::Value = serde_json::from_str(wsol_ok(&args, tmp.path()).trim()).unwrap();
    let rows = v["profile"].as_array().unwrap();
    let stem = rows.iter().find(|r| r["op"].as_str().unwrap().starts_with("conv forward 3x32x32 -> ")).unwrap();
    let c_out: f64 =
        stem["op"].as_str().unwrap().split(" -> ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert_eq!(stem["flops"].as_f64().unwrap(), 2.0 * 4.0 * c_out * 256.0 * 27.0, "{stem}");
    assert_eq!(stem["calls"].as_u64().unwrap(), 1);
    assert!(rows.iter().all(|r| r["ms"].as_f64().unwrap() >= 0.0));
}

/// The backward pass reuses a gradient it solely owns (the vendored candle's
/// `is_sole_owner`): a residual sum's ReLU masks its gradient in place, which kept VGG16's
/// peak memory at batch 32 under PyTorch's. A candle without the change would silently
/// allocate again.
#[test]
fn backward_masks_sole_gradients_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["bench", "train", "--backbone", "resnet18", "--batch", "1", "--size", "32", "--classes", "3"];
    let out = wsol_ok(&[&args[..], &["--steps", "1", "--profile", "--json"]].concat(), tmp.path());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ops: Vec<&str> = v["profile"].as_array().unwrap().iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert!(ops.iter().any(|op| op.starts_with("relu grad in place")), "{ops:?}");
}

/// `bench train` reports the model's trainable values, the number `scripts/bench_pytorch.py`
/// prints for its copy: ResNet-18 with 1000 classes has torchvision's published 11,689,512;
/// ACoL swaps the fc (513,000) for two branches of 3x3 512->1024, 3x3 1024->1024 and
/// 1x1 1024->1000 convs with biases (2 x 15,182,824).
#[test]
fn bench_train_counts_the_parameters_of_torchvision_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    for (head, want) in [("cam", 11_689_512u64), ("acol", 11_689_512 - 513_000 + 2 * 15_182_824)] {
        let args = ["bench", "train", "--backbone", "resnet18", "--head", head, "--batch", "1", "--size", "32"];
        let out = wsol_ok(&[&args[..], &["--classes", "1000", "--steps", "1", "--json"]].concat(), tmp.path());
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["parameters"].as_u64(), Some(want), "{head}");
    }
}

/// Output into a pipe whose reader has quit ends the process without a panic message.
#[cfg(unix)]
#[test]
fn closed_stdout_pipe_is_no_panic() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsol"))
        .args(["bench", "train", "--backbone", "tiny", "--batch", "2", "--size", "16", "--steps", "1", "--profile"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader quits before the first line
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {err}", out.status);
}

/// `wsol bench data` writes its JPEGs when the folder is empty and times the training
/// loader over them; `wsol bench train --data` feeds the steps from that loader and
/// reports each step's wait for its batch.
#[test]
fn bench_data_and_train_with_data_report_speed_and_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "data",
        "--dir",
        "jpgs",
        "--images",
        "8",
        "--width",
        "64",
        "--height",
        "48",
        "--batch",
        "4",
        "--size",
        "32",
        "--resize",
        "36",
        "--epochs",
        "2",
        "--workers",
        "2",
        "--json",
    ];
    let out = wsol_ok(&args, tmp.path());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["epoch_s"].as_array().unwrap().len(), 2);
    assert_eq!(std::fs::read_dir(tmp.path().join("jpgs")).unwrap().count(), 8);
    let args = [
        "bench",
        "train",
        "--backbone",
        "tiny",
        "--batch",
        "4",
        "--size",
        "32",
        "--classes",
        "3",
        "--steps",
        "3",
        "--data",
        "jpgs",
        "--json",
    ];
    let out = wsol_ok(&args, tmp.path());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["data_wait_ms"].as_array().unwrap().len(), 3, "{v}");
    assert!(v["median_data_wait_ms"].as_f64().unwrap() >= 0.0);
}
