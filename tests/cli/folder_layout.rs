//! `data.format: folder` (`<root>/<split>/<class>/*.png`): trains and classifies; box
//! metrics are reported as unavailable, never as zero.

use crate::common::*;

#[test]
fn folder_per_class_trains_without_boxes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 32, 0, 8);
    // Re-file the synthetic images by class name.
    for split in ["train", "test"] {
        let labels = std::fs::read_to_string(dir.join(format!("synth/metadata/{split}/class_labels.txt"))).unwrap();
        for line in labels.lines() {
            let (id, label) = line.split_once(',').unwrap();
            let to = dir.join(format!("folder/{split}/class_{label}"));
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(dir.join("synth").join(id), to.join(id.rsplit('/').next().unwrap())).unwrap();
        }
    }
    let cfg = write_config(dir, "folder", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("format: wsol", "format: folder").replace("image_root: synth", "image_root: folder");
    std::fs::write(&cfg, text).unwrap();
    let c = cfg.to_str().unwrap();
    let out = wsol_ok(&["train", "--config", c, "--set", "train.epochs=1", "--out", "run"], dir);
    let m = read_json(&dir.join("run/metrics.json"));
    assert_eq!(m["num_images"], 8);
    assert!(m["top1_cls"].is_number());
    assert!(m.get("gt_known_loc").is_none() && m.get("maxboxacc").is_none(), "{m}");
    let log = std::fs::read_to_string(dir.join("run/train.log")).unwrap();
    assert!(log.contains("unavailable (split has no boxes)"), "{out}\n{log}");

    let err = wsol_err(&["train", "--config", c, "--set", "data.num_classes=5"], dir);
    assert!(err.contains("data.num_classes is 5") && err.contains("4 class folders"), "{err}");
}
