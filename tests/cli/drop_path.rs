//! `model.drop_path_rate` through the CLI: TS-CAM on deit_tiny with drop path trains the
//! same on every run and on `--resume` (its masks are keyed by seed and step), and
//! differently from no drop path; a CNN or a rate outside [0, 1) is refused by key. The
//! maths and the parity with timm's `Block` are src/models/deit.rs's unit tests.

use crate::common::*;

#[test]
fn drop_path_trains_reproducibly_and_is_refused_on_a_cnn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 8, 4, 6);
    let cfg = write_config(dir, "dp", "");
    let c = cfg.to_str().unwrap();
    let train = |out: &str, epochs: &str, rate: &str, resume: bool| {
        let mut args = vec!["train", "--config", c];
        let epochs = format!("train.epochs={epochs}");
        let rate = format!("model.drop_path_rate={rate}");
        for s in [
            "model.backbone=deit_tiny",
            "model.method=tscam",
            "data.batch_size=4",
            "data.workers=1",
            "train.optimizer.lr=0.01",
            "log.cam_images=0",
            &epochs,
            &rate,
        ] {
            args.extend(["--set", s]);
        }
        args.extend(if resume { ["--resume", out] } else { ["--out", out] });
        args.push("--quiet");
        wsol_ok(&args, dir);
    };
    let metrics = |run: &str| {
        let mut v = read_json(&dir.join(run).join("metrics.json"));
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    let weights = |run: &str| std::fs::read(dir.join(run).join("checkpoints/last.safetensors")).unwrap();
    train("a", "2", "0.1", false);
    train("b", "2", "0.1", false);
    assert_eq!(metrics("a"), metrics("b"), "same seed, same drop-path masks, same metrics");
    assert!(weights("a") == weights("b"), "same seed gave different weights");
    // One epoch, then resume to two: the second epoch draws the masks the uninterrupted run drew.
    train("r", "1", "0.1", false);
    train("r", "2", "0.1", true);
    assert_eq!(metrics("a"), metrics("r"), "resumed run differs from the uninterrupted one");
    assert!(weights("a") == weights("r"), "resumed run's weights differ from the uninterrupted run's");
    train("z", "2", "0", false);
    assert!(weights("a") != weights("z"), "drop path 0.1 trained as no drop path");

    let err = wsol_err(&["train", "--config", c, "--set", "model.drop_path_rate=0.1"], dir);
    assert!(err.contains("model.drop_path_rate") && err.contains("`tiny`") && err.contains("deit_tiny"), "{err}");
    let err = wsol_err(
        &["train", "--config", c, "--set", "model.backbone=deit_tiny", "--set", "model.drop_path_rate=1"],
        dir,
    );
    assert!(err.contains("model.drop_path_rate: expected in [0, 1), got 1"), "{err}");
}
