//! `wsol cam` on images from outside the dataset, as photos are: not square, not the
//! model's size, one file or a folder of them; boxes in the image's own pixels, classes by
//! name when the dataset names them.

use crate::common::*;

const NAMES: [&str; 4] = ["disk", "square", "triangle", "plus"];

/// Each printed panel line's class part and box, e.g. `class 2 (triangle)`, (x0, y0, x1, y1).
fn panels(stdout: &str) -> Vec<(String, [i32; 4])> {
    stdout
        .lines()
        .filter_map(|l| {
            let class = l.trim_start().split_once(" class ")?.1.split("  p=").next()?.to_string();
            let inside = l.split_once("box (")?.1.split_once(')')?.0;
            let b: Vec<i32> = inside.split(", ").map(|v| v.parse().unwrap()).collect();
            Some((class, [b[0], b[1], b[2], b[3]]))
        })
        .collect()
}

fn within(b: [i32; 4], (w, h): (i32, i32)) -> bool {
    0 <= b[0] && b[0] <= b[2] && b[2] < w && 0 <= b[1] && b[1] <= b[3] && b[3] < h
}

/// `base` then `extra`, as one argument list.
fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [base, extra].concat()
}

fn gradient(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90]))
}

/// A tiny model (width 4) trained one epoch on `train` synthetic images into `dir/run`;
/// returns its config.
fn trained_run(dir: &std::path::Path, name: &str, train: usize) -> std::path::PathBuf {
    synth(dir, train, 0, 4);
    let cfg = write_config(dir, name, "");
    let c = cfg.to_str().unwrap();
    let train = ["train", "--config", c, "--set", "train.epochs=1", "--set", "model.width=4"];
    wsol_ok(&with(&train, &["--out", "run", "--quiet"]), dir);
    cfg
}

/// `wsol cam` on the model of [`trained_run`].
fn cam_args(c: &str) -> Vec<&str> {
    vec!["cam", "--config", c, "--checkpoint", "run/checkpoints/last.safetensors", "--set", "model.width=4"]
}

#[test]
fn cam_draws_on_the_original_image_one_file_or_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = trained_run(dir, "photos", 32);
    let c = cfg.to_str().unwrap();
    let base = cam_args(c);

    // One 80x50 photo: top-2 rows of the classifier's map, shown 3x (240x150) each.
    gradient(80, 50).save(dir.join("photo.png")).unwrap();
    let out = wsol(&with(&base, &["--image", "photo.png", "--top", "2", "--out", "one.png", "--quiet"]), dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "--quiet: nothing on stderr, got {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("photo.png (80x50)\n"), "{stdout}");
    let found = panels(&stdout);
    assert_eq!(found.len(), 2, "{stdout}");
    for (class, b) in &found {
        assert!(within(*b, (80, 50)), "box {b:?} outside the 80x50 image: {stdout}");
        assert!(NAMES.iter().any(|n| class.ends_with(&format!(" ({n})"))), "no class name in `{class}`");
    }
    let png = image::open(dir.join("one.png")).unwrap();
    assert_eq!((png.width(), png.height()), (240, 2 * (150 + 36) + 4), "aspect ratio kept, 3x");

    // A folder: its images in name order (other files skipped), one PNG each, same stem.
    std::fs::create_dir(dir.join("photos")).unwrap();
    gradient(80, 50).save(dir.join("photos/b.png")).unwrap();
    gradient(30, 60).save(dir.join("photos/a.jpg")).unwrap();
    std::fs::write(dir.join("photos/notes.txt"), "not an image").unwrap();
    let stdout = wsol_ok(&with(&base, &["--image", "photos", "--method", "cam,gradcam", "--out", "figs"]), dir);
    let sections: Vec<&str> = stdout.split("wrote ").collect();
    assert_eq!(sections.len(), 3, "{stdout}");
    assert!(
        sections[0].starts_with("photos/a.jpg (30x60)") && sections[1].contains("photos/b.png (80x50)"),
        "{stdout}"
    );
    for (section, size) in sections[..2].iter().zip([(30, 60), (80, 50)]) {
        let found = panels(section);
        assert_eq!(found.len(), 2, "{section}");
        assert!(found.iter().all(|(_, b)| within(*b, size)), "{size:?}: {section}");
    }
    // 30x60 shown 4x (120x240) in a cell 224 wide (room for the caption); 2 methods.
    let a = image::open(dir.join("figs/a.png")).unwrap();
    assert_eq!((a.width(), a.height()), (2 * 224 + 4, 240 + 36));
    let b = image::open(dir.join("figs/b.png")).unwrap();
    assert_eq!((b.width(), b.height()), (2 * 240 + 4, 150 + 36));

    // One image into an existing folder: `<stem>.png` there, as `cp` would.
    let stdout = wsol_ok(&with(&base, &["--image", "photo.png", "--out", "figs", "--quiet"]), dir);
    assert!(stdout.ends_with("wrote figs/photo.png\n") && dir.join("figs/photo.png").is_file(), "{stdout}");

    // Without class_names.txt, classes are shown by index as before.
    std::fs::remove_file(dir.join("synth/metadata/class_names.txt")).unwrap();
    let stdout = wsol_ok(&with(&base, &["--image", "photo.png", "--out", "one.png"]), dir);
    let found = panels(&stdout);
    assert!(found.len() == 1 && !found[0].0.contains('('), "{stdout}");
}

#[test]
fn cam_names_bad_images_folders_outputs_and_class_name_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = trained_run(dir, "bad", 16);
    let c = cfg.to_str().unwrap();
    let base = cam_args(c);
    let base = with(&base, &["--quiet"]);
    let one_line = |err: &str| assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    std::fs::create_dir(dir.join("empty")).unwrap();
    std::fs::write(dir.join("empty/readme.txt"), "no pictures here").unwrap();
    let err = wsol_err(&with(&base, &["--image", "empty", "--out", "figs"]), dir);
    assert!(err.contains("--image empty: no .jpg, .jpeg or .png files"), "{err}");
    one_line(&err);

    std::fs::create_dir(dir.join("photos")).unwrap();
    gradient(40, 30).save(dir.join("photos/a.png")).unwrap();
    std::fs::write(dir.join("taken.png"), "a file").unwrap();
    let err = wsol_err(&with(&base, &["--image", "photos", "--out", "taken.png"]), dir);
    assert!(err.contains("--out taken.png: is a file") && err.contains("folder"), "{err}");
    one_line(&err);

    std::fs::write(dir.join("photos/broken.jpg"), b"\xff\xd8\xff\xe0 not a jpeg").unwrap();
    let err = wsol_err(&with(&base, &["--image", "photos", "--out", "figs"]), dir);
    assert!(err.contains("photos/broken.jpg"), "{err}");
    one_line(&err);
    std::fs::remove_file(dir.join("photos/broken.jpg")).unwrap();

    gradient(20, 20).save(dir.join("photos/a.jpg")).unwrap();
    let err = wsol_err(&with(&base, &["--image", "photos", "--out", "figs"]), dir);
    assert!(err.contains("photos/a.jpg") && err.contains("photos/a.png") && err.contains("figs/a.png"), "{err}");

    // A class names file that does not fit the dataset: its path, line and what was expected.
    let names = dir.join("synth/metadata/class_names.txt");
    std::fs::write(&names, "disk\nsquare\ntriangle\n").unwrap();
    let err = wsol_err(&with(&base, &["--image", "photos/a.png", "--out", "x.png"]), dir);
    assert!(err.contains("class_names.txt: 3 names, but data.num_classes is 4"), "{err}");
    std::fs::write(&names, "disk\n\ntriangle\nplus\n").unwrap();
    let err = wsol_err(&with(&base, &["--image", "photos/a.png", "--out", "x.png"]), dir);
    assert!(err.contains("class_names.txt:2: empty line; expected one class name per line"), "{err}");
    let err = wsol_err(
        &with(&base, &["--image", "photos/a.png", "--out", "x.png", "--set", "data.class_names=nowhere.txt"]),
        dir,
    );
    assert!(err.contains("nowhere.txt"), "{err}");
    // Named by the config key instead of the default place.
    std::fs::write(dir.join("mine.txt"), "o\nsq\ntri\npl\n").unwrap();
    let out = wsol_ok(
        &with(&base, &["--image", "photos/a.png", "--out", "x.png", "--set", "data.class_names=mine.txt"]),
        dir,
    );
    assert!(["(o)", "(sq)", "(tri)", "(pl)"].iter().any(|n| out.contains(n)), "{out}");
}
