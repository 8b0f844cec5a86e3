//! Helpers for the CLI integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn wsol(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsol")).args(args).current_dir(cwd).output().expect("run wsol")
}

/// Runs and asserts success, returning stdout.
pub fn wsol_ok(args: &[&str], cwd: &Path) -> String {
    let out = wsol(args, cwd);
    assert!(
        out.status.success(),
        "wsol {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and asserts a clean failure: non-zero exit, an `error:` line, no panic.
pub fn wsol_err(args: &[&str], cwd: &Path) -> String {
    let out = wsol(args, cwd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "wsol {args:?} should fail; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "wsol {args:?} panicked:\n{stderr}");
    assert!(stderr.starts_with("error: "), "wsol {args:?}: expected one `error:` message, got:\n{stderr}");
    stderr
}

/// A small config for the synthetic set written by `synth` into `dir/synth`.
pub fn write_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!(
        "name: {name}\nseed: 0\ndata:\n  format: wsol\n  metadata_root: synth/metadata\n  image_root: synth\n  num_classes: 4\n  image_size: 48\n  batch_size: 32\n  workers: 2\nmodel: {{backbone: tiny, head: cam, width: 16}}\ntrain:\n  epochs: 8\n  optimizer: {{name: sgd, lr: 0.2, momentum: 0.9, weight_decay: 1.0e-4}}\n  schedule: {{name: cosine, warmup_epochs: 1}}\neval: {{cam_curve_interval: 0.01}}\nlog: {{dir: runs, every_steps: 5}}\n{extra}"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub fn synth(dir: &Path, train: usize, val: usize, test: usize) {
    synth_with(dir, train, val, test, &[]);
}

/// `wsol data synth` into `dir/synth` (4 classes, 48 px, seed 3) with extra arguments.
pub fn synth_with(dir: &Path, train: usize, val: usize, test: usize, extra: &[&str]) {
    let (train, val, test) = (train.to_string(), val.to_string(), test.to_string());
    let mut args = vec!["data", "synth", "--out", "synth", "--num-classes", "4", "--train", &train, "--val", &val];
    args.extend(["--test", &test, "--size", "48", "--seed", "3", "--quiet"]);
    args.extend(extra);
    wsol_ok(&args, dir);
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A two-image split in `dir/meta/test` (`imgs/a.jpg` class 1, `imgs/b.jpg` class 0,
/// both 40x40) with the given `localization.txt`, plus `dir/pred.txt` predicting class 1
/// then 0 for both images.
pub fn two_image_split(dir: &Path, localization: &str) {
    let split = dir.join("meta/test");
    std::fs::create_dir_all(&split).unwrap();
    std::fs::write(split.join("image_ids.txt"), "imgs/a.jpg\nimgs/b.jpg\n").unwrap();
    std::fs::write(split.join("class_labels.txt"), "imgs/a.jpg,1\nimgs/b.jpg,0\n").unwrap();
    std::fs::write(split.join("image_sizes.txt"), "imgs/a.jpg,40,40\nimgs/b.jpg,40,40\n").unwrap();
    std::fs::write(split.join("localization.txt"), localization).unwrap();
    std::fs::write(dir.join("pred.txt"), "imgs/a.jpg,1,0\nimgs/b.jpg,1,0\n").unwrap();
}
