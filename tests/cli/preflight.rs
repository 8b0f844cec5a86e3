//! `wsol preflight`: a run's data, weights, recipe and time, checked before it starts.

use crate::common::*;

#[test]
fn preflight_checks_data_weights_and_recipe_and_estimates_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 16, 4, 4);
    let cfg = write_config(dir, "pre", "");
    let c = cfg.to_str().unwrap();

    // Everything there: the data table, no weights, the recipe beside wsolevaluation's, a time.
    let out = wsol_ok(&["preflight", "--config", c, "--bench-steps", "1", "--quiet"], dir);
    assert!(out.contains("16 images") && out.contains("weights: none (trained from scratch)"), "{out}");
    let row =
        |key: &str| out.lines().find(|l| l.contains(key)).unwrap_or_else(|| panic!("no {key}:\n{out}")).to_string();
    // The test config's lr 0.2 differs from wsolevaluation's 0.01; momentum 0.9 is theirs.
    assert!(row("train.optimizer.lr ").starts_with('*') && row("train.optimizer.lr ").contains("0.01"), "{out}");
    assert!(row("train.optimizer.momentum").starts_with(' '), "{out}");
    assert!(row("time on cpu").contains("images/s") && row("time on cpu").contains("for 8 epochs"), "{out}");

    // Weights: a torchvision-named file whose bytes do not match the SHA-256 in its name,
    // and a missing one; both make the preflight fail, naming the file.
    std::fs::create_dir(dir.join("w")).unwrap();
    std::fs::write(dir.join("w/resnet18-f37072fd.pth"), b"not the weights").unwrap();
    let bad = ["preflight", "--config", c, "--bench-steps", "0", "--set", "model.pretrained=w/resnet18-f37072fd.pth"];
    let out = wsol(&bad, dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("does not start with f37072fd"), "{stdout}");
    let out = wsol(&["preflight", "--config", c, "--bench-steps", "0", "--set", "model.pretrained=w/nope.pth"], dir);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout).contains("w/nope.pth not found"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("weights not ready"));

    // Data: a missing image is a data failure, with data check's message.
    let first = std::fs::read_to_string(dir.join("synth/metadata/train/image_ids.txt")).unwrap();
    std::fs::remove_file(dir.join("synth").join(first.lines().next().unwrap())).unwrap();
    let out = wsol(&["preflight", "--config", c, "--bench-steps", "0"], dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL: data check found 1 problem"), "{out:?}");
}
