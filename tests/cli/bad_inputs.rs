//! The bad-input corpus in `tests/bad_inputs/`: every broken config, metadata split,
//! image, score map and weights file must give one clear `error:` line naming the file,
//! line or key, a non-zero exit and no panic; the `ok_*` entries (CRLF + BOM metadata,
//! gray / RGBA / 16-bit images, float32 / float64 maps) must be accepted.

use std::path::{Path, PathBuf};

use crate::common::*;

fn corpus(sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs").join(sub);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    entries
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Asserts one error line containing `expect`.
fn check(err: &str, expect: &str, case: &str) {
    assert!(err.contains(expect), "{case}: expected the error to mention `{expect}`, got:\n{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{case}: expected one line, got:\n{err}");
}

#[test]
fn configs() {
    let tmp = tempfile::tempdir().unwrap();
    for path in corpus("configs") {
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("first line: # expect: ...");
        let err =
            wsol_err(&["eval", "--config", path.to_str().unwrap(), "--checkpoint", "none.safetensors"], tmp.path());
        check(&err, expect, &name(&path));
    }
}

#[test]
fn metadata_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("no-cams");
    std::fs::create_dir_all(&empty).unwrap();
    for case in corpus("metadata") {
        let expect = std::fs::read_to_string(case.join("expect.txt")).unwrap().trim().to_string();
        let cams = if case.join("cams").is_dir() { case.join("cams") } else { empty.clone() };
        let args = ["eval-cams", "--metadata", case.to_str().unwrap(), "--cams", cams.to_str().unwrap()];
        let args: Vec<&str> = args.into_iter().chain(["--image-size", "16", "--out", "out", "--quiet"]).collect();
        if expect == "OK" {
            wsol_ok(&args, tmp.path());
        } else {
            check(&wsol_err(&args, tmp.path()), &expect, &name(&case));
        }
    }
}

#[test]
fn score_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let split = dir.join("meta");
    std::fs::create_dir_all(&split).unwrap();
    std::fs::write(split.join("image_ids.txt"), "x.png\n").unwrap();
    std::fs::write(split.join("class_labels.txt"), "x.png,0\n").unwrap();
    std::fs::write(split.join("image_sizes.txt"), "x.png,10,10\n").unwrap();
    std::fs::write(split.join("localization.txt"), "x.png,1,1,6,6\n").unwrap();
    for map in corpus("npy") {
        let cams = dir.join("cams");
        let _ = std::fs::remove_dir_all(&cams);
        std::fs::create_dir_all(&cams).unwrap();
        std::fs::copy(&map, cams.join("x.png.npy")).unwrap();
        let args = ["eval-cams", "--metadata", "meta", "--cams", "cams", "--image-size", "16", "--out", "o", "--quiet"];
        if name(&map).starts_with("ok_") {
            wsol_ok(&args, dir);
        } else {
            check(&wsol_err(&args, dir), "x.png.npy", &name(&map));
        }
    }
}

/// Images and weights through `wsol cam`, with a checkpoint of a briefly trained model.
#[test]
fn images_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 32, 0, 8);
    let cfg = write_config(dir, "bad", "");
    let c = cfg.to_str().unwrap();
    wsol_ok(
        &["train", "--config", c, "--set", "train.epochs=1", "--set", "model.width=4", "--out", "run", "--quiet"],
        dir,
    );
    let ckpt = "run/checkpoints/last.safetensors";
    let cam = |image: &str, weights: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["cam", "--config", c, "--checkpoint", weights, "--image", image, "--out", "o.png"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--set".to_string(), "model.width=4".to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run_ok = |a: Vec<String>| wsol_ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), dir);
    let run_err = |a: Vec<String>| wsol_err(&a.iter().map(String::as_str).collect::<Vec<_>>(), dir);
    for image in corpus("images") {
        let img = image.to_str().unwrap();
        if name(&image).starts_with("ok_") {
            run_ok(cam(img, ckpt, &[]));
        } else {
            check(&run_err(cam(img, ckpt, &[])), &name(&image), &name(&image));
        }
    }
    let image = "synth/test/00000.png";
    for weights in corpus("weights") {
        let w = weights.to_str().unwrap();
        check(&run_err(cam(image, w, &[])), &name(&weights), &name(&weights));
    }
    // Right names, wrong shapes: the checkpoint of another width.
    let err = run_err(cam(image, ckpt, &["--set", "model.width=8"]));
    check(&err, "has shape", "wrong shapes");
}
