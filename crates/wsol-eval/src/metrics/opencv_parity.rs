//! Parity with OpenCV itself: `tests/fixtures/eval_parity/opencv_boxes.json` holds what
//! cv2 (version recorded in the file; 4.8.1, 4.12 and 5.0 gave identical boxes) returns
//! for random maps: boxes per threshold, bicubic resizes of float64 maps (what `t2n`
//! hands OpenCV), and the official-style accuracies. The generator script is a throwaway, not part of the repo.

use serde_json::Value;

use super::{BoxAccumulator, BoxEvalConfig};
use crate::localize::{
    boxes_at_thresholds, boxes_at_thresholds_reference, cam_thresholds, normalize_minmax, quantize, resize_bicubic,
    BBox,
};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/eval_parity/opencv_boxes.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("parity fixture")).unwrap()
}

fn bbox(v: &Value) -> BBox {
    let c: Vec<i32> = v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect();
    BBox::new(c[0], c[1], c[2], c[3])
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The fixture stores each map quantized; a value in the middle of its bin quantizes back.
fn case_map(case: &Value) -> (Vec<f64>, usize, usize) {
    let q = case["q"].as_array().unwrap().iter().map(|x| (x.as_u64().unwrap() as f64 + 0.5) / 255.0).collect();
    (q, case["w"].as_u64().unwrap() as usize, case["h"].as_u64().unwrap() as usize)
}

#[test]
fn boxes_match_opencv() {
    let f = fixture();
    let thresholds = cam_thresholds(f["interval"].as_f64().unwrap()).unwrap();
    for (i, case) in f["cases"].as_array().unwrap().iter().enumerate() {
        let (map, w, h) = case_map(case);
        let ours = boxes_at_thresholds(&map, w, h, &thresholds);
        assert_eq!(ours, boxes_at_thresholds_reference(&map, w, h, &thresholds));
        let theirs = case["boxes"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (t, (o, e)) in ours.iter().zip(theirs).enumerate() {
            let all: Vec<BBox> = e["all"].as_array().unwrap().iter().map(bbox).collect();
            assert_eq!(o.all, all, "case {i} threshold {t}: contour boxes or their order");
            assert_eq!(o.largest, bbox(&e["largest"]), "case {i} threshold {t}: largest contour");
        }
    }
}

#[test]
fn resize_matches_opencv() {
    let f = fixture();
    for r in f["resize"].as_array().unwrap() {
        let g = |k: &str| r[k].as_u64().unwrap() as usize;
        let out = resize_bicubic(&floats(&r["src"]), g("w"), g("h"), g("out_w"), g("out_h"));
        let want = floats(&r["out"]);
        let worst = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f64, f64::max);
        // float64 samples as the official loop has them (`t2n`): same arithmetic as
        // OpenCV's double path, so equal to the last bit or nearly.
        assert!(worst < 1e-12, "resize {}x{} -> {}x{}: max diff {worst}", g("w"), g("h"), g("out_w"), g("out_h"));
        let mut norm = out.clone();
        normalize_minmax(&mut norm);
        let q_want: Vec<u8> = r["quantized"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect();
        assert_eq!(quantize(&norm), q_want);
    }
}

#[test]
fn accuracies_match_official_arithmetic() {
    let f = fixture();
    let ious: Vec<u32> = f["iou_thresholds"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let cfg = BoxEvalConfig {
        thresholds: cam_thresholds(f["interval"].as_f64().unwrap()).unwrap(),
        iou_thresholds: ious.clone(),
        multi_contour: true,
        fixed_threshold: 0.5,
    };
    let mut acc = BoxAccumulator::new(&cfg).unwrap();
    for case in f["cases"].as_array().unwrap() {
        let (map, w, h) = case_map(case);
        let gt: Vec<BBox> = case["gt"].as_array().unwrap().iter().map(bbox).collect();
        acc.add(&map, w, h, &gt, None);
    }
    let m = acc.finish();
    let a = &f["accuracy"];
    for (k, d) in ious.iter().enumerate() {
        let key = |mode: &str| format!("{mode}_{d}");
        let curve = |mode: &str| {
            a[key(mode)]["curve"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(m.curves.largest[k], curve("largest"), "largest contour, IoU {d}");
        assert_eq!(m.curves.all[k], curve("all"), "all contours, IoU {d}");
        assert_eq!(m.maxboxacc_v2_by_iou[&d.to_string()], a[key("all")]["max"].as_f64().unwrap());
        assert_eq!(m.maxboxacc_v1_by_iou[&d.to_string()], a[key("largest")]["max"].as_f64().unwrap());
    }
    assert_eq!(m.maxboxacc, a["largest_50"]["max"].as_f64().unwrap());
    assert_eq!(m.best_threshold_v1, m.curves.thresholds[a["largest_50"]["argmax"].as_u64().unwrap() as usize]);
    assert_eq!(m.maxboxacc_v2, a["maxboxacc_v2"].as_f64().unwrap());
}
