//! `per_image.csv` (one row per image: predictions, the box that counted, its IoU and
//! outcomes) from `wsol eval-cams`, `wsol train` and `wsol eval`, read back by
//! `wsol report`; and the per-IoU accuracies and curve each validation logs to TensorBoard.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use protobuf::Message;
use tensorboard_proto::event::Event;
use wsol_eval::localize::BBox;
use wsol_eval::metrics::{PerImageRow, PerImageTable};
use wsol_eval::scoremaps::{flat_path, nested_path, write, ScoreMap};

fn square_map(size: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> ScoreMap {
    let data = (0..size * size)
        .map(|i| {
            let (x, y) = (i % size, i / size);
            ((x0..=x1).contains(&x) && (y0..=y1).contains(&y)) as u8 as f64
        })
        .collect();
    ScoreMap { width: size, height: size, data }
}

/// `count * 100 / n` as the evaluator computes a percentage.
fn percent(rows: &[PerImageRow], pick: impl Fn(&PerImageRow) -> bool) -> f64 {
    rows.iter().filter(|r| pick(r)).count() as f64 * 100.0 / rows.len() as f64
}

/// Two 40x40 images scored at 20x20, so boxes come back at twice the grid's size: `a`'s
/// map covers its GT box, `b`'s lies beside it.
#[test]
fn eval_cams_writes_one_row_per_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // In 20x20 coordinates: a -> (5,5,14,14); b -> (0,0,9,9).
    two_image_split(dir, "imgs/a.jpg,10,10,28,28\nimgs/b.jpg,0,0,19,19\n");
    write(&nested_path(&dir.join("cams"), "imgs/a.jpg"), &square_map(20, 5, 5, 14, 14)).unwrap();
    write(&flat_path(&dir.join("cams"), "imgs/b.jpg"), &square_map(20, 10, 10, 19, 19)).unwrap();
    let args = ["eval-cams", "--metadata", "meta/test", "--cams", "cams", "--image-size", "20", "--quiet"];
    wsol_ok(&[&args[..], &["--predictions", "pred.txt", "--out", "out"]].concat(), dir);
    let m = read_json(&dir.join("out/metrics.json"));
    let rows = PerImageTable::read(&dir.join("out/per_image.csv")).unwrap().rows;
    assert_eq!(
        rows.iter().map(|r| (r.image_id.as_str(), r.gt_class)).collect::<Vec<_>>(),
        [("imgs/a.jpg", 1), ("imgs/b.jpg", 0)]
    );
    // a: the map's box (5,5,15,15) (x + w, as OpenCV's rectangle) on the grid, IoU 100/121.
    assert_eq!(rows[0].box_original, BBox::new(10, 10, 30, 30));
    assert_eq!(rows[0].iou, Some(100.0 / 121.0));
    assert!(rows[0].gt_known_loc && rows[0].top1_loc == Some(true));
    // b: (10,10,19,19) on the grid, beside the GT box; predicted 1 then 0: top-5 only.
    assert_eq!(rows[1].box_original, BBox::new(20, 20, 38, 38));
    assert_eq!(rows[1].iou, Some(0.0));
    assert_eq!((rows[1].gt_known_loc, rows[1].top1_loc, rows[1].top5_loc), (false, Some(false), Some(false)));
    // --predictions names classes, not scores.
    let classes: Vec<(usize, Option<f32>)> = rows[1].predictions.iter().map(|p| (p.class, p.probability)).collect();
    assert_eq!(classes, [(1, None), (0, None)]);
    assert_eq!(percent(&rows, |r| r.gt_known_loc), m["gt_known_loc"].as_f64().unwrap());
    assert_eq!(percent(&rows, |r| r.top1_loc == Some(true)), m["top1_loc"].as_f64().unwrap());
    assert_eq!(percent(&rows, |r| r.top5_loc == Some(true)), m["top5_loc"].as_f64().unwrap());

    // Without --predictions: no predictions and no top-k columns.
    wsol_ok(&[&args[..], &["--out", "bare"]].concat(), dir);
    let bare = PerImageTable::read(&dir.join("bare/per_image.csv")).unwrap().rows;
    assert!(bare.iter().all(|r| r.predictions.is_empty() && r.top1_loc.is_none() && r.top5_loc.is_none()));
    assert_eq!(bare.iter().map(|r| r.box_original).collect::<Vec<_>>(), [rows[0].box_original, rows[1].box_original]);
}

/// Scalars (tag -> [(step, value)]) and images (tag -> [(step, width, height, PNG)]) of
/// the event files in `tb`.
#[allow(clippy::type_complexity)]
fn read_tensorboard(tb: &Path) -> (BTreeMap<String, Vec<(i64, f32)>>, BTreeMap<String, Vec<(i64, i32, i32, Vec<u8>)>>) {
    let (mut scalars, mut images) = (BTreeMap::<_, Vec<_>>::new(), BTreeMap::<_, Vec<_>>::new());
    for entry in std::fs::read_dir(tb).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        // TFRecords: length (u64), its CRC, the data, the data's CRC.
        let mut p = 0;
        while p < bytes.len() {
            let len = u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap()) as usize;
            let event = Event::parse_from_bytes(&bytes[p + 12..p + 12 + len]).unwrap();
            p += 16 + len;
            for v in event.get_summary().get_value() {
                let tag = v.get_tag().to_string();
                if v.has_image() {
                    let img = v.get_image();
                    let png = img.get_encoded_image_string().to_vec();
                    images.entry(tag).or_default().push((event.get_step(), img.get_width(), img.get_height(), png));
                } else {
                    scalars.entry(tag).or_default().push((event.get_step(), v.get_simple_value()));
                }
            }
        }
    }
    (scalars, images)
}

/// A tiny run with a val split: every validation logs v1 and v2 accuracy per IoU and the
/// curve; the final evaluation writes `per_image.csv` whose rows count exactly what
/// metrics.json says; `wsol eval` writes the same rows; `wsol report` ranks by them.
#[test]
fn train_writes_per_image_rows_and_tensorboard_curves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth(dir, 48, 16, 16);
    let cfg = write_config(dir, "rows", "");
    let c = cfg.to_str().unwrap();
    // 48 px images scored at 32: boxes are scaled back by 1.5.
    let sets = ["--set", "train.epochs=2", "--set", "data.image_size=32", "--set", "log.cam_images=0"];
    wsol_ok(&[&["train", "--config", c, "--out", "run", "--quiet"][..], &sets].concat(), dir);

    let m = read_json(&dir.join("run/metrics.json"));
    let rows = PerImageTable::read(&dir.join("run/per_image.csv")).unwrap().rows;
    assert_eq!(rows.len() as u64, m["num_images"].as_u64().unwrap());
    let meta = wsol::data::read_split(&dir.join("synth/metadata"), "test", 4).unwrap();
    for (row, sample) in rows.iter().zip(&meta.samples) {
        assert_eq!((row.image_id.as_str(), row.gt_class), (sample.image_id.as_str(), sample.label));
        let b = row.box_original;
        assert!(0 <= b.x0 && b.x0 <= b.x1 && b.x1 < 48 && 0 <= b.y0 && b.y0 <= b.y1 && b.y1 < 48, "{row:?}");
        // Four classes: four predictions, most likely first, probabilities of a softmax.
        let probs: Vec<f32> = row.predictions.iter().map(|p| p.probability.unwrap()).collect();
        assert_eq!(probs.len(), 4, "{row:?}");
        assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{row:?}");
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{row:?}");
        assert_eq!(row.gt_known_loc, row.iou.unwrap() >= 0.5);
    }
    let num = |key: &str| m[key].as_f64().unwrap_or_else(|| panic!("no {key} in {m}"));
    assert_eq!(percent(&rows, |r| r.gt_known_loc), num("gt_known_loc"));
    assert_eq!(percent(&rows, |r| r.top1_loc == Some(true)), num("top1_loc"));
    assert_eq!(percent(&rows, |r| r.top5_loc == Some(true)), num("top5_loc"));
    assert_eq!(percent(&rows, |r| r.predictions[0].class == r.gt_class), num("top1_cls"));

    // Each validation (one per epoch): v1 and v2 per configured IoU, and the curve.
    let (scalars, images) = read_tensorboard(&dir.join("run/tb"));
    for version in ["v1", "v2"] {
        for iou in [30, 50, 70] {
            let tag = format!("val/maxboxacc_{version}_iou{iou}");
            let points = scalars.get(&tag).unwrap_or_else(|| panic!("no {tag} in {:?}", scalars.keys()));
            assert_eq!(points.len(), 2, "{tag}: {points:?}");
            assert!(points.iter().all(|&(_, v)| (0.0..=100.0).contains(&v)), "{tag}: {points:?}");
        }
    }
    // MaxBoxAcc is v1 at IoU 50; MaxBoxAccV2 the mean of v2 over the IoUs.
    assert_eq!(scalars["val/maxboxacc_v1_iou50"], scalars["val/maxboxacc"]);
    for (k, &(step, v2)) in scalars["val/maxboxacc_v2"].iter().enumerate() {
        let mean = [30, 50, 70].iter().map(|d| scalars[&format!("val/maxboxacc_v2_iou{d}")][k].1).sum::<f32>() / 3.0;
        assert!((mean - v2).abs() < 1e-3, "step {step}: v2 {v2}, mean over IoUs {mean}");
    }
    let curves = &images["val_curve"];
    assert_eq!(curves.len(), 2);
    let png = image::load_from_memory(&curves[1].3).unwrap();
    assert_eq!((png.width() as i32, png.height() as i32), (curves[1].1, curves[1].2));

    // `wsol eval` of the same checkpoint (with the run's own config) writes the same rows.
    wsol_ok(&["eval", "--checkpoint", "run/checkpoints/last.safetensors", "--out", "eval", "--quiet"], dir);
    let eval_csv = std::fs::read_to_string(dir.join("eval/per_image.csv")).unwrap();
    assert_eq!(eval_csv, std::fs::read_to_string(dir.join("run/per_image.csv")).unwrap());

    // The report ranks images by the file's IoUs: make the last image the only good one.
    let last = &rows[rows.len() - 1].image_id;
    let tampered = PerImageTable {
        rows: rows.iter().map(|r| PerImageRow { iou: Some((&r.image_id == last) as u8 as f64), ..r.clone() }).collect(),
    };
    std::fs::write(dir.join("run/per_image.csv"), tampered.to_csv()).unwrap();
    wsol_ok(&["report", "run", "--samples", "1"], dir);
    let html = std::fs::read_to_string(dir.join("run/report.html")).unwrap();
    let best = html.split("Best localized").nth(1).unwrap().split("Worst localized").next().unwrap();
    let caption = best.split("<figcaption>").nth(1).unwrap_or_default();
    assert!(caption.starts_with(&format!("{last}<br>")) && caption.contains("IoU 1.000</figcaption>"), "{best}");
    // A damaged file is an error naming it; without the file (older runs) IoUs are recomputed.
    std::fs::write(dir.join("run/per_image.csv"), "image_id,iou\n").unwrap();
    let err = wsol_err(&["report", "run", "--samples", "1"], dir);
    assert!(err.contains("per_image.csv") && err.contains("not a per_image.csv"), "{err}");
    std::fs::remove_file(dir.join("run/per_image.csv")).unwrap();
    wsol_ok(&["report", "run", "--samples", "1"], dir);
}
