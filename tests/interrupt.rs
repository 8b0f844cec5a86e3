//! Ctrl-C mid-epoch: the run writes a checkpoint of the unfinished epoch, exits with 130,
//! and `--resume` ends with the same metrics.json as a run never interrupted.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigint_checkpoints_mid_epoch_and_resume_matches_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 320, 16, 24);
    let cfg = write_config(dir, "int", "");
    let c = cfg.to_str().unwrap();
    let epochs = "train.epochs=2";
    wsol_ok(&["train", "--config", c, "--set", epochs, "--out", "whole", "--quiet"], dir);

    let child = Command::new(env!("CARGO_BIN_EXE_wsol"))
        .args(["train", "--config", c, "--set", epochs, "--out", "cut", "--quiet"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The handler is installed before the run directory is announced in train.log.
    let log = dir.join("cut/train.log");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("run directory") {
        assert!(t0.elapsed() < Duration::from_secs(60), "run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(800));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let finished = out.status.success();
    if !finished {
        assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
        assert!(stderr.contains("interrupted") && stderr.contains("--resume"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        wsol_ok(&["train", "--config", c, "--set", epochs, "--resume", "cut", "--quiet"], dir);
    }
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    assert_eq!(
        strip(read_json(&dir.join("whole/metrics.json"))),
        strip(read_json(&dir.join("cut/metrics.json"))),
        "interrupted + resumed run differs (finished before the signal: {finished})"
    );
}
