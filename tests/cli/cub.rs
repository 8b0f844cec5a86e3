//! CUB-200-2011's native layout (`tests/fixtures/cub_tiny`: 2 classes, 4 train and 2 test
//! images, made by the project): converted to wsolevaluation metadata, read directly with
//! `data.format: cub`, and broken files reported by file and line.

use std::path::Path;

use crate::common::*;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cub_tiny")
}

#[test]
fn convert_writes_wsolevaluation_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fixture();
    let out = wsol_ok(
        &["data", "convert", "cub", "--root", root.to_str().unwrap(), "--out", "meta", "--num-classes", "2"],
        tmp.path(),
    );
    assert!(out.contains("train: 4 images") && out.contains("test: 2 images"), "{out}");
    let read = |f: &str| std::fs::read_to_string(tmp.path().join("meta/test").join(f)).unwrap();
    assert_eq!(read("image_ids.txt"), "001.Red_Square/red_square_2.jpg\n002.Blue_Disc/blue_disc_2.jpg\n");
    assert_eq!(read("class_labels.txt"), "001.Red_Square/red_square_2.jpg,0\n002.Blue_Disc/blue_disc_2.jpg,1\n");
    assert_eq!(read("image_sizes.txt"), "001.Red_Square/red_square_2.jpg,50,32\n002.Blue_Disc/blue_disc_2.jpg,50,32\n");
    // x, y, w, h -> x, y, x + w, y + h.
    assert_eq!(
        read("localization.txt"),
        "001.Red_Square/red_square_2.jpg,8,5,28,21\n002.Blue_Disc/blue_disc_2.jpg,8,5,28,21\n"
    );
}

#[test]
fn trains_on_the_native_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fixture();
    let extra = format!(
        "data: {{format: cub, metadata_root: {0}, image_root: {0}/images, num_classes: 2, image_size: 32, batch_size: 2, workers: 1}}\n",
        root.display()
    );
    // The helper's config lists `data` first; a later `data` key would be a duplicate.
    let cfg = write_config(tmp.path(), "cub", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let start = text.find("data:").unwrap();
    let end = text.find("model:").unwrap();
    std::fs::write(&cfg, format!("{}{}{}", &text[..start], extra, &text[end..])).unwrap();
    let c = cfg.to_str().unwrap();
    let report = wsol_ok(&["data", "check", "--config", c], tmp.path());
    assert!(report.contains("4 images") && report.contains("2 images"), "{report}");
    wsol_ok(&["train", "--config", c, "--set", "train.epochs=1", "--out", "run", "--quiet"], tmp.path());
    let m = read_json(&tmp.path().join("run/metrics.json"));
    assert_eq!(m["num_images"], 2);
    let err = wsol_err(
        &["eval", "--config", c, "--checkpoint", "run/checkpoints/last.safetensors", "--split", "val"],
        tmp.path(),
    );
    assert!(err.contains("CUBV2"), "{err}");
}

#[test]
fn broken_native_files_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cub");
    let copy = |rel: &str| {
        let (src, dst) = (fixture().join(rel), root.join(rel));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    };
    for f in ["images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt"] {
        copy(f);
    }
    for line in std::fs::read_to_string(fixture().join("images.txt")).unwrap().lines() {
        copy(&format!("images/{}", line.split(' ').nth(1).unwrap()));
    }
    let convert = |dir: &Path| {
        wsol_err(&["data", "convert", "cub", "--root", root.to_str().unwrap(), "--out", "m", "--num-classes", "2"], dir)
    };
    let boxes = root.join("bounding_boxes.txt");
    let good = std::fs::read_to_string(&boxes).unwrap();
    std::fs::write(&boxes, good.replace("2 6.0 4.0 17.0 14.0", "2 6.0 4.0 17.0")).unwrap();
    let err = convert(tmp.path());
    assert!(err.contains("bounding_boxes.txt:2"), "{err}");
    std::fs::write(&boxes, good.replace("3 8.0 5.0 20.0 16.0", "3 8.0 5.0 60.0 16.0")).unwrap();
    let err = convert(tmp.path());
    assert!(err.contains("bounding_boxes.txt:3") && err.contains("outside"), "{err}");
    std::fs::write(&boxes, &good).unwrap();
    std::fs::write(root.join("image_class_labels.txt"), "1 1\n2 1\n3 1\n4 2\n5 2\n6 3\n").unwrap();
    let err = convert(tmp.path());
    assert!(err.contains("image_class_labels.txt") && err.contains("image id 6"), "{err}");
}

/// ILSVRC XML annotations (`tests/fixtures/imagenet_xml`: a 3-synset mapping, two val
/// images, one with two boxes) to metadata; broken XML is named by file.
#[test]
fn imagenet_xml_converts_to_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imagenet_xml");
    let (xml, synsets) = (fx.join("val"), fx.join("LOC_synset_mapping.txt"));
    let s = synsets.to_str().unwrap();
    wsol_ok(
        &["data", "convert", "imagenet-xml", "--root", xml.to_str().unwrap(), "--synsets", s, "--out", "meta"],
        tmp.path(),
    );
    let read = |f: &str| std::fs::read_to_string(tmp.path().join("meta/val").join(f)).unwrap();
    assert_eq!(read("class_labels.txt"), "val/ILSVRC2012_val_00000001.JPEG,2\nval/ILSVRC2012_val_00000002.JPEG,0\n");
    assert_eq!(
        read("localization.txt"),
        "val/ILSVRC2012_val_00000001.JPEG,111,108,304,356\nval/ILSVRC2012_val_00000002.JPEG,10,20,200,300\nval/ILSVRC2012_val_00000002.JPEG,150,250,332,499\n"
    );
    assert_eq!(
        read("image_sizes.txt"),
        "val/ILSVRC2012_val_00000001.JPEG,500,375\nval/ILSVRC2012_val_00000002.JPEG,333,500\n"
    );

    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let text = std::fs::read_to_string(xml.join("ILSVRC2012_val_00000001.xml")).unwrap();
    std::fs::write(broken.join("a.xml"), text.replace("n01484850", "n99999999")).unwrap();
    let err =
        wsol_err(&["data", "convert", "imagenet-xml", "--root", "broken", "--synsets", s, "--out", "m"], tmp.path());
    assert!(err.contains("a.xml") && err.contains("n99999999"), "{err}");
    std::fs::write(broken.join("a.xml"), "<annotation><filename>x</filename>").unwrap();
    let err =
        wsol_err(&["data", "convert", "imagenet-xml", "--root", "broken", "--synsets", s, "--out", "m"], tmp.path());
    assert!(err.contains("a.xml") && err.contains("not valid XML"), "{err}");
}
