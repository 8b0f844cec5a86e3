//! `wsol data digits` on tiny MNIST idx files the test writes (gzipped and plain): the set,
//! `wsol data check` on it, a short training run; bad files name themselves. Built
//! without the `digits` feature, the command says how to get it.

use std::io::Write;
use std::path::Path;

use crate::common::*;

/// Idx files of `n` 28x28 "digits" (class k: a bar k + 4 pixels wide) under `dir`, the
/// train part gzipped as MNIST's mirrors serve it, t10k plain.
fn write_mnist(dir: &Path, n_train: usize, n_test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let part = |n: usize| {
        let mut images = [2051u32, n as u32, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>();
        let mut labels = [2049u32, n as u32].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>();
        for i in 0..n {
            let w = i % 10 + 4;
            images.extend((0..784).map(|p| if p % 28 < w && (6..22).contains(&(p / 28)) { 255u8 } else { 0 }));
            labels.push((i % 10) as u8);
        }
        (images, labels)
    };
    let gz = |name: &str, bytes: &[u8]| {
        let file = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    };
    let (images, labels) = part(n_train);
    gz("train-images-idx3-ubyte", &images);
    gz("train-labels-idx1-ubyte", &labels);
    let (images, labels) = part(n_test);
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels).unwrap();
}

const ARGS: [&str; 14] = [
    "data", "digits", "--mnist", "mnist", "--out", "digits", "--size", "48", "--train", "40", "--val", "10", "--test",
    "20",
];

#[cfg(feature = "digits")]
#[test]
fn digits_set_is_written_checked_and_trains() {
    let tmp = tempfile::tempdir().unwrap();
    write_mnist(&tmp.path().join("mnist"), 120, 40);
    let mut args = ARGS.to_vec();
    args.extend(["--distractors", "1", "--seed", "2", "--quiet"]);
    wsol_ok(&args, tmp.path());
    let labels = std::fs::read_to_string(tmp.path().join("digits/metadata/train/class_labels.txt")).unwrap();
    assert_eq!(labels.lines().count(), 40);
    assert!(!tmp.path().join("digits/.mnist-staging").exists(), "the staging folder is removed");
    let config = "name: digits\nseed: 0\ndata:\n  format: wsol\n  metadata_root: digits/metadata\n  image_root: digits\n  \
                  num_classes: 10\n  image_size: 48\n  batch_size: 16\n  workers: 1\nmodel: {backbone: tiny, head: cam, width: 8}\n\
                  train:\n  epochs: 1\n  optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}\n\
                  eval: {cam_curve_interval: 0.05}\nlog: {dir: runs, every_steps: 5}\n";
    std::fs::write(tmp.path().join("digits.yaml"), config).unwrap();
    wsol_ok(&["data", "check", "--config", "digits.yaml", "--quiet"], tmp.path());
    wsol_ok(&["train", "--config", "digits.yaml", "--out", "runs/d", "--quiet"], tmp.path());
    assert!(tmp.path().join("runs/d/metrics.json").is_file());
    // Same seed, same bytes.
    let first = std::fs::read(tmp.path().join("digits/train/00007.png")).unwrap();
    wsol_ok(&args, tmp.path());
    assert_eq!(std::fs::read(tmp.path().join("digits/train/00007.png")).unwrap(), first);
}

#[cfg(not(feature = "digits"))]
#[test]
fn without_the_feature_the_command_says_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_mnist(&tmp.path().join("mnist"), 30, 10);
    let err = wsol_err(&ARGS, tmp.path());
    assert!(err.contains("--features digits"), "{err}");
}

#[test]
fn bad_mnist_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    let err = wsol_err(&ARGS, tmp.path());
    assert!(err.contains("mnist") && err.contains("no such directory"), "{err}");
    write_mnist(&dir, 30, 10);
    // Truncated: the t10k images lose their last bytes.
    let path = dir.join("t10k-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = wsol_err(&ARGS, tmp.path());
    assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("truncated"), "{err}");
    // Wrong magic: a label file where the images should be.
    std::fs::copy(dir.join("t10k-labels-idx1-ubyte"), &path).unwrap();
    let err = wsol_err(&ARGS, tmp.path());
    assert!(err.contains("t10k-images-idx3-ubyte") && err.contains("magic number 2049"), "{err}");
    // Missing: neither the file nor its .gz.
    std::fs::remove_file(dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    let err = wsol_err(&ARGS, tmp.path());
    assert!(err.contains("train-labels-idx1-ubyte") && err.contains("not found"), "{err}");
    // Not gzip behind a .gz name.
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), b"plain text").unwrap();
    let err = wsol_err(&ARGS, tmp.path());
    assert!(err.contains("train-labels-idx1-ubyte.gz") && err.contains("gzip"), "{err}");
}
