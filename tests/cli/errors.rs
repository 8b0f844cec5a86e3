//! Bad input gets one clear message and a non-zero exit, never a panic.

use crate::common::*;

#[test]
fn config_typo_names_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "typo", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("momentum", "momentun");
    std::fs::write(&cfg, text).unwrap();
    let err = wsol_err(&["train", "--config", cfg.to_str().unwrap(), "--quiet"], tmp.path());
    assert!(err.contains("typo.yaml") && err.contains("momentun") && err.contains("line"), "{err}");
}

#[test]
fn unknown_set_key_and_bad_value() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "c", "");
    let c = cfg.to_str().unwrap();
    let err = wsol_err(&["train", "--config", c, "--set", "train.epocs=3"], tmp.path());
    assert!(err.contains("train.epocs"), "{err}");
    let err = wsol_err(&["train", "--config", c, "--set", "data.batch_size=0"], tmp.path());
    assert!(err.contains("data.batch_size"), "{err}");
    let err = wsol_err(&["train", "--config", c, "--set", "model.head=nope"], tmp.path());
    assert!(err.contains("model.head") && err.contains("nope"), "{err}");
}

#[test]
fn missing_config_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let err = wsol_err(&["train", "--config", "nowhere.yaml"], tmp.path());
    assert!(err.contains("nowhere.yaml"), "{err}");
    let cfg = write_config(tmp.path(), "c", "");
    let err = wsol_err(&["train", "--config", cfg.to_str().unwrap(), "--quiet"], tmp.path());
    assert!(err.contains("synth/metadata"), "{err}");
}

#[test]
fn malformed_metadata_line_and_corrupt_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 40, 8, 8);
    let cfg = write_config(dir, "c", "");
    let c = cfg.to_str().unwrap();
    let labels = dir.join("synth/metadata/train/class_labels.txt");
    let good = std::fs::read_to_string(&labels).unwrap();
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    lines[2] = lines[2].split(',').next().unwrap().to_string() + ",x";
    std::fs::write(&labels, lines.join("\n")).unwrap();
    let err = wsol_err(&["train", "--config", c, "--quiet"], dir);
    assert!(err.contains("class_labels.txt") && err.contains(":3"), "{err}");
    std::fs::write(&labels, good).unwrap();

    let first = std::fs::read_to_string(dir.join("synth/metadata/train/image_ids.txt"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(dir.join("synth").join(&first), b"not a png").unwrap();
    let err = wsol_err(&["train", "--config", c, "--out", "failed", "--quiet"], dir);
    assert!(err.contains(&first), "{err}");
    // The run directory it leaves says why it stopped, as its last line.
    let log = std::fs::read_to_string(dir.join("failed/train.log")).unwrap();
    assert_eq!(log.lines().last(), err.lines().next(), "{log}");

    // Opted in: the bad image is left out and counted (in the epochs whose batches hold it;
    // drop_last leaves 8 of the 40 out each epoch).
    let args =
        ["train", "--config", c, "--set", "data.skip_bad_images=true", "--set", "train.epochs=2", "--out", "skip"];
    wsol_ok(&[&args[..], &["--quiet"]].concat(), dir);
    let log = std::fs::read_to_string(dir.join("skip/train.log")).unwrap();
    assert!(log.contains("skipped 1 bad images"), "{log}");
    assert!(log.contains(&first), "{log}");
}

#[test]
fn checkpoint_of_another_model_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 40, 8, 8);
    let cfg = write_config(dir, "c", "");
    let c = cfg.to_str().unwrap();
    let err = wsol_err(&["eval", "--config", c, "--checkpoint", "missing.safetensors"], dir);
    assert!(err.contains("missing.safetensors"), "{err}");
    std::fs::write(dir.join("junk.safetensors"), b"junk").unwrap();
    let err = wsol_err(&["eval", "--config", c, "--checkpoint", "junk.safetensors"], dir);
    assert!(err.contains("junk.safetensors"), "{err}");
}

#[test]
fn cam_rejects_empty_method_and_class_lists_and_top_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 32, 8, 8);
    let cfg = write_config(dir, "c", "");
    let c = cfg.to_str().unwrap();
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=1", "--out", "run", "--quiet"], dir);
    let base = ["cam", "--config", c, "--checkpoint", "run/checkpoints/last.safetensors"];
    let base = [&base[..], &["--image", "synth/test/00000.png", "--out", "x.png"]].concat();
    for (flag, value, want) in [
        ("--method", ",", "--method: expected a comma-separated list of CAM methods (cam, gradcam,"),
        ("--method", "", "--method: expected a comma-separated list of CAM methods"),
        ("--method", " , ", "got \" , \""),
        ("--method", "gradcam,nope", "--method: unknown CAM method `nope` (available: cam, gradcam,"),
        ("--class", ",", "--class: expected a comma-separated list of class indices from 0 to 3, got \",\""),
        ("--class", "", "--class: expected a comma-separated list of class indices"),
        ("--class", "1,x", "--class: `x` is not a class index"),
        ("--class", "4", "--class 4: the model has 4 classes"),
        ("--top", "0", "--top: expected at least 1"),
    ] {
        let err = wsol_err(&[&base[..], &[flag, value]].concat(), dir);
        assert!(err.contains(want), "{flag} {value:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flag} {value:?}: {err}");
    }
    assert!(!dir.join("x.png").exists());
}
