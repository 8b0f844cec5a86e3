//! Ctrl-C mid-epoch: the run writes a checkpoint of the unfinished epoch, exits with 130,
//! and `--resume` ends with the same metrics.json as a run never interrupted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

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

#[test]
fn damaged_checkpoint_is_named_and_the_previous_one_resumes_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 96, 16, 24);
    let cfg = write_config(dir, "dmg", "");
    let c = cfg.to_str().unwrap();
    let epochs = "train.epochs=3";
    wsol_ok(&["train", "--config", c, "--set", epochs, "--out", "whole", "--quiet"], dir);
    wsol_ok(&["train", "--config", c, "--set", epochs, "--out", "cut", "--quiet"], dir);

    // The last checkpoint's model file is cut short after it was written.
    let ckpt = dir.join("cut/checkpoints");
    let state = read_json(&ckpt.join("last.json"));
    let model = ckpt.join(state["model_file"].as_str().unwrap());
    let bytes = std::fs::read(&model).unwrap();
    std::fs::remove_file(ckpt.join("last.safetensors")).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();

    let err = wsol_err(&["train", "--config", c, "--set", epochs, "--resume", "cut", "--quiet"], dir);
    assert!(err.contains(&model.file_name().unwrap().to_string_lossy().to_string()), "{err}");
    assert!(err.contains("--use-previous-checkpoint") && err.lines().count() == 1, "{err}");

    // Resuming from epoch 2's checkpoint retrains epoch 3 and ends where the whole run did.
    wsol_ok(&["train", "--config", c, "--set", epochs, "--resume", "cut", "--use-previous-checkpoint", "--quiet"], dir);
    let log = std::fs::read_to_string(dir.join("cut/train.log")).unwrap();
    assert!(log.contains("resuming from the previous checkpoint"), "{log}");
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    assert_eq!(strip(read_json(&dir.join("whole/metrics.json"))), strip(read_json(&dir.join("cut/metrics.json"))));
}

/// A checkpoint that does not fit (here: over `ulimit -f`, which fails writes with EFBIG
/// like a full disk fails them with ENOSPC) is a one-line error naming the file, and no
/// partial file is left under a checkpoint's name.
#[test]
fn checkpoint_write_that_does_not_fit_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 64, 16, 24);
    let cfg = write_config(dir, "full", "");
    // Checkpoints of this model are ~245 KB; logs and events stay under the 200 KB limit.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -f 200 && exec {} train --config {} --set train.epochs=1 --out r --quiet",
            env!("CARGO_BIN_EXE_wsol"),
            cfg.display()
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: cannot write checkpoint") && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    let left: Vec<String> = std::fs::read_dir(dir.join("r/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.ends_with(".tmp") && !n.ends_with(".json")), "{left:?}");
}

/// `kill -9` at several moments (mid-step, mid-checkpoint-write included by chance), then
/// `--resume` (or a fresh start when no checkpoint was complete yet): the final metrics
/// are those of a run never killed.
#[test]
fn sigkill_at_any_moment_then_resume_matches_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 320, 16, 24);
    let cfg = write_config(dir, "kill", "");
    let c = cfg.to_str().unwrap();
    let epochs = "train.epochs=3";
    wsol_ok(&["train", "--config", c, "--set", epochs, "--out", "whole", "--quiet"], dir);
    let whole = read_json(&dir.join("whole/metrics.json"));
    for (k, delay_ms) in [150u64, 900, 1700, 2600].into_iter().enumerate() {
        let out = format!("cut{k}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsol"))
            .args(["train", "--config", c, "--set", epochs, "--out", &out, "--quiet"])
            .current_dir(dir)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let resumable = dir.join(&out).join("checkpoints/last.json").exists();
        let mut args = vec!["train", "--config", c, "--set", epochs, "--quiet"];
        if resumable {
            args.extend(["--resume", &out]);
        } else {
            args.extend(["--out", &out]);
        }
        wsol_ok(&args, dir);
        let mut cut = read_json(&dir.join(&out).join("metrics.json"));
        cut["checkpoint"] = whole["checkpoint"].clone();
        assert_eq!(whole, cut, "killed after {delay_ms} ms (resumed: {resumable})");
    }
}
