#!/usr/bin/env python3
"""wsol_eval (the Python package) against clovaai/wsolevaluation's own evaluator in one
process, on maps neither has seen before (generated here from --seed), every number
compared for exact equality; with --bench, CPU seconds of both on the same maps.

    python3 scripts/compare_python_eval.py WSOLEVAL_DIR [--seed 1] [--maps 300]
    python3 scripts/compare_python_eval.py WSOLEVAL_DIR --bench [--bench-maps 2000]

Needs numpy, opencv-python and munch (wsolevaluation's), and the wsol_eval wheel
installed (scripts/test_python.sh builds one under target/python/wheels). Their modules
are imported from WSOLEVAL_DIR as scripts/make_official_parity_fixture.py does (torch,
torchvision, PIL stubbed out: the evaluator never touches them).

Compared, at 100 and 1000 CAM thresholds, largest contour (MaxBoxAcc) and all contours
(MaxBoxAccV2), IoU 30/50/70: `num_correct` per threshold, `cnt` and `compute()` of
BoxEvaluator for (a) float64 maps in [0, 1] at 224 x 224, (b) the same maps as float32
(the official side gets them widened to float64, since it refuses float32), (c) maps of
other sizes, (d) raw CAMs of several sizes prepared by the official inference.py steps
(cv2 bicubic resize on float64, normalize_scoremap) against `accumulate_batch(...,
normalize=True)`, one map at a time and batched; `compute_bboxes_from_scoremaps` box for
box; and MaskEvaluator's histograms and PxAP on generated masks.

--bench: 2,000 raw float32 224 x 224 CAMs of two kinds (smooth blobs as `cargo bench
--bench eval` uses; rough 28 x 28 CAMs upsampled), in memory and as .npy files; official:
per map (`np.load`,) float64, `normalize_scoremap`, `accumulate`, then `compute()`; ours:
`accumulate_batch(maps, ids, normalize=True)` or `accumulate_files(paths, ids,
normalize=True)`, then `compute()`. CPU seconds of the process (all threads) from
time.process_time(), one run each, at 100 and 1000 thresholds, all contours.
"""
import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_official_parity_fixture import import_wsolevaluation  # noqa: E402

import wsol_eval  # noqa: E402

IOUS = [30, 50, 70]


def cam_like(rng, h, w, box=None):
    """A raw CAM: one to four Gaussian blobs of random size and strength, a weak
    background gradient and noise; sometimes negative values, as from Grad-CAM. With
    `box` (x0, y0, x1, y1 as fractions of the image), a strong blob covers it, so that
    box accuracy lands in a realistic range rather than near zero."""
    y, x = np.mgrid[0:h, 0:w]
    m = 0.05 * rng.standard_normal((h, w)) + 0.1 * x / w
    if box is not None:
        (x0, y0, x1, y1), j = box, rng.uniform(0.7, 1.3, 4)
        cx, cy, sx, sy = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h, (x1 - x0) / 3 * w * j[2], (y1 - y0) / 3 * h * j[3]
        m += 2.0 * np.exp(-((x - cx * j[0]) ** 2 / (2 * sx**2 + 1) + (y - cy * j[1]) ** 2 / (2 * sy**2 + 1)))
    for _ in range(rng.integers(1, 5)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sx, sy = rng.uniform(0.03, 0.3) * w, rng.uniform(0.03, 0.3) * h
        m += rng.uniform(0.3, 2.0) * np.exp(-((x - cx) ** 2 / (2 * sx**2) + (y - cy) ** 2 / (2 * sy**2)))
    return (m - rng.uniform(0, 0.3)).astype(np.float32)


def write_box_split(root, rng, n):
    """A metadata split of n images with random sizes and one to three boxes each."""
    split = os.path.join(root, "CUB", "test")
    os.makedirs(split)
    ids = [f"test/{i:05d}.jpg" for i in range(n)]
    with open(os.path.join(split, "image_ids.txt"), "w") as f:
        f.writelines(i + "\n" for i in ids)
    with open(os.path.join(split, "class_labels.txt"), "w") as f:
        f.writelines(f"{i},{rng.integers(0, 200)}\n" for i in ids)
    sizes, lines, first = [], [], []
    for i in ids:
        w, h = int(rng.integers(120, 520)), int(rng.integers(120, 520))
        sizes.append(f"{i},{w},{h}\n")
        for k in range(rng.integers(1, 4)):
            x0, x1 = sorted(rng.integers(0, w, 2))
            y0, y1 = sorted(rng.integers(0, h, 2))
            lines.append(f"{i},{x0},{y0},{x1},{y1}\n")
            if k == 0:
                first.append((x0 / w, y0 / h, x1 / w, y1 / h))
    with open(os.path.join(split, "image_sizes.txt"), "w") as f:
        f.writelines(sizes)
    with open(os.path.join(split, "localization.txt"), "w") as f:
        f.writelines(lines)
    return split, ids, first


def evaluators(official_eval, split, interval, multi):
    kw = dict(dataset_name="CUB", split="test", cam_threshold_list=list(np.arange(0, 1, interval)),
              iou_threshold_list=IOUS, mask_root=None, multi_contour_eval=multi)
    off = official_eval.BoxEvaluator(metadata=official_data_loaders().configure_metadata(split), **kw)
    ours = wsol_eval.BoxEvaluator(metadata=wsol_eval.configure_metadata(split), **kw)
    return off, ours


def official_data_loaders():
    return sys.modules["data_loaders"]


def same(off, ours, label, failures):
    ok = off.cnt == ours.cnt and all(np.array_equal(off.num_correct[t], ours.num_correct[t]) for t in IOUS)
    ok = ok and list(off.compute()) == list(ours.compute())
    print(f"  {'same' if ok else 'DIFFERENT':9s} {label}: compute() {[round(float(v), 4) for v in ours.compute()]}")
    if not ok:
        failures.append(label)


def official_prepare(inference, cam, size=224):
    """inference.py's steps for one raw CAM: float64, bicubic resize, normalize."""
    resized = cv2.resize(cam.astype(np.float64), (size, size), interpolation=cv2.INTER_CUBIC)
    return inference.normalize_scoremap(resized)


def compare(evaluation, inference, seed, n):
    rng = np.random.default_rng(seed)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        split, ids, boxes = write_box_split(tmp, rng, n)
        raw_shapes = [(7, 7), (14, 14), (28, 28), (224, 224), (10, 13)]
        raws = [cam_like(rng, *raw_shapes[k % len(raw_shapes)], boxes[k]) for k in range(n)]
        maps224 = [official_prepare(inference, r) for r in raws]
        other = [inference.normalize_scoremap(cam_like(rng, 150, 200, boxes[k]).astype(np.float64)) for k in range(n)]
        for interval in (0.01, 0.001):
            m = n if interval == 0.01 else max(n // 3, 20)
            for multi in (False, True):
                tag = f"{len(np.arange(0, 1, interval))} thr, {'all contours' if multi else 'largest'}"
                off, ours, ours_b = *evaluators(evaluation, split, interval, multi), None
                for i in range(m):
                    off.accumulate(maps224[i], ids[i])
                    ours.accumulate(maps224[i], ids[i])
                same(off, ours, f"float64 224x224, {tag}", failures)
                _, ours_b = evaluators(evaluation, split, interval, multi)
                ours_b.accumulate_batch(np.stack([x.astype(np.float32) for x in maps224[:m]]), ids[:m])
                off32, _ = evaluators(evaluation, split, interval, multi)
                for i in range(m):
                    off32.accumulate(maps224[i].astype(np.float32).astype(np.float64), ids[i])
                same(off32, ours_b, f"float32 224x224 batch, {tag}", failures)
                off_o, ours_o = evaluators(evaluation, split, interval, multi)
                for i in range(m):
                    off_o.accumulate(other[i], ids[i])
                ours_o.accumulate_batch(other[:m], ids[:m])
                same(off_o, ours_o, f"float64 150x200 batch, {tag}", failures)
                _, ours_r = evaluators(evaluation, split, interval, multi)
                ours_r.accumulate_batch(raws[:m], ids[:m], normalize=True)
                same(off, ours_r, f"raw CAMs {sorted(set(raw_shapes))} normalize=True, {tag}", failures)
        bad = 0
        for i in range(min(n, 60)):
            thr = list(np.arange(0, 1, 0.01))
            for multi in (False, True):
                a, ca = evaluation.compute_bboxes_from_scoremaps(maps224[i], thr, multi)
                b, cb = wsol_eval.compute_bboxes_from_scoremaps(maps224[i], thr, multi)
                bad += ca != cb or any(x.tolist() != y.tolist() for x, y in zip(a, b))
        print(f"  {'same' if bad == 0 else 'DIFFERENT':9s} compute_bboxes_from_scoremaps: {min(n, 60)} maps x 100 thresholds x 2 modes")
        if bad:
            failures.append("compute_bboxes_from_scoremaps")
        compare_masks(evaluation, inference, rng, tmp, failures)
    return failures


def compare_masks(evaluation, inference, rng, tmp, failures):
    """Generated instance and ignore masks of several sizes, OpenImages layout."""
    root = os.path.join(tmp, "masks")
    split = os.path.join(tmp, "meta", "OpenImages", "test")
    os.makedirs(split)
    ids, loc = [], []
    for k in range(24):
        image_id = f"test/{k:03d}.jpg"
        ids.append(image_id)
        h, w = int(rng.integers(60, 300)), int(rng.integers(60, 300))
        y, x = np.mgrid[0:h, 0:w]
        names = []
        for j in range(rng.integers(1, 3)):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 80)
            mask = (((x - cx) ** 2 + (y - cy) ** 2) < r * r).astype(np.uint8) * 255
            names.append(f"test/{k:03d}_{j}.png")
            os.makedirs(os.path.join(root, "test"), exist_ok=True)
            cv2.imwrite(os.path.join(root, names[-1]), mask)
        ignore = np.zeros((h, w), np.uint8)
        ignore[: h // 3, : w // 2] = 255
        cv2.imwrite(os.path.join(root, f"test/{k:03d}_ignore.png"), ignore)
        loc.append(f"{image_id},{names[0]},test/{k:03d}_ignore.png\n")
        loc.extend(f"{image_id},{n},\n" for n in names[1:])
    with open(os.path.join(split, "image_ids.txt"), "w") as f:
        f.writelines(i + "\n" for i in ids)
    with open(os.path.join(split, "class_labels.txt"), "w") as f:
        f.writelines(f"{i},0\n" for i in ids)
    open(os.path.join(split, "image_sizes.txt"), "w").close()
    with open(os.path.join(split, "localization.txt"), "w") as f:
        f.writelines(loc)
    for interval in (0.01, 0.001):
        kw = dict(dataset_name="OpenImages", split="test", cam_threshold_list=list(np.arange(0, 1, interval)),
                  iou_threshold_list=IOUS, mask_root=root, multi_contour_eval=False)
        off = evaluation.MaskEvaluator(metadata=official_data_loaders().configure_metadata(split), **kw)
        ours = wsol_eval.MaskEvaluator(metadata=wsol_eval.configure_metadata(split), **kw)
        for i in ids:
            m = official_prepare(inference, cam_like(rng, 14, 14))
            off.accumulate(m, i)
            ours.accumulate(m, i)
        a, b = off.compute(), ours.compute()
        ok = a == b and np.array_equal(off.gt_true_score_hist, ours.gt_true_score_hist) and np.array_equal(
            off.gt_false_score_hist, ours.gt_false_score_hist)
        print(f"  {'same' if ok else 'DIFFERENT':9s} PxAP, {len(kw['cam_threshold_list'])} thr: {b}")
        if not ok:
            failures.append(f"PxAP {interval}")


def smooth_cam(rng, size, box):
    """One to four Gaussian blobs at full size, one of them on the first GT box: the maps
    of `cargo bench --bench eval` (smooth, as a CAM bicubic-upsampled from a few cells)."""
    y, x = np.mgrid[0:size, 0:size]
    (x0, y0, x1, y1) = box
    m = np.exp(-(((x - (x0 + x1) / 2 * size) / max((x1 - x0) * size / 3, 3)) ** 2
                 + ((y - (y0 + y1) / 2 * size) / max((y1 - y0) * size / 3, 3)) ** 2) / 2)
    for _ in range(rng.integers(0, 4)):
        cx, cy, sx, sy = rng.uniform(0, size, 2).tolist() + rng.uniform(6, 50, 2).tolist()
        m += rng.uniform(0.3, 1.0) * np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2) / 2)
    return m.astype(np.float32)


def bench(evaluation, inference, n):
    """CPU seconds of the official loop and of wsol_eval on the same maps, in memory and
    from .npy files, for smooth maps and for rough ones (28 x 28 CAMs with cell noise,
    upsampled), whose many small regions cost wsol's sweep more (the official loop's
    cost is per threshold and barely moves)."""
    print(f"bench: {n} raw float32 224x224 CAMs per kind, all contours, IoU 30/50/70; "
          "CPU s of this process (all threads) from time.process_time(), one run each")
    for kind in ("smooth", "rough"):
        rng = np.random.default_rng(12345)
        with tempfile.TemporaryDirectory() as tmp:
            split, ids, boxes = write_box_split(tmp, rng, n)
            if kind == "smooth":
                maps = [smooth_cam(rng, 224, b) for b in boxes]
            else:
                maps = [cv2.resize(cam_like(rng, 28, 28, b), (224, 224), interpolation=cv2.INTER_CUBIC) for b in boxes]
            paths = [os.path.join(tmp, "cams", i + ".npy") for i in ids]
            for p, m in zip(paths, maps):
                os.makedirs(os.path.dirname(p), exist_ok=True)
                np.save(p, m.astype(np.float32))
            for interval in (0.01, 0.001):
                row = []
                for source in ("memory", "files"):
                    off, ours = evaluators(evaluation, split, interval, True)
                    t0 = time.process_time()
                    for i, p, m in zip(ids, paths, maps):
                        cam = np.load(p) if source == "files" else m
                        off.accumulate(inference.normalize_scoremap(cam.astype(np.float64)), i)
                    r_off = off.compute()
                    t_off = time.process_time() - t0
                    t0 = time.process_time()
                    if source == "files":
                        ours.accumulate_files(paths, ids, normalize=True)
                    else:
                        ours.accumulate_batch(maps, ids, normalize=True)
                    r_ours = ours.compute()
                    t_ours = time.process_time() - t0
                    assert list(r_off) == list(r_ours), (r_off, r_ours)
                    row.append(f"{source}: official {t_off / n * 1e3:.2f} ms/map, wsol_eval {t_ours / n * 1e3:.3f} "
                               f"ms/map, {t_off / t_ours:.1f}x")
                print(f"  {kind:6s} {len(off.cam_threshold_list):4d} thr | " + " | ".join(row)
                      + f" | same numbers {[round(float(v), 2) for v in r_ours]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wsoleval_dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--maps", type=int, default=300)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-maps", type=int, default=2000)
    args = ap.parse_args()
    evaluation, inference = import_wsolevaluation(args.wsoleval_dir)
    evaluation._RESIZE_LENGTH = 224
    print(f"numpy {np.__version__}, OpenCV {cv2.__version__}, wsol_eval {wsol_eval.__version__}")
    if args.bench:
        bench(evaluation, inference, args.bench_maps)
        return 0
    failures = compare(evaluation, inference, args.seed, args.maps)
    print("all equal" if not failures else f"DIFFERENT: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
