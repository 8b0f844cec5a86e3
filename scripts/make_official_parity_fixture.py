#!/usr/bin/env python3
"""Builds tests/fixtures/eval_parity/official: a tiny box split and a tiny mask split,
with score maps, scored by the official clovaai/wsolevaluation code itself.

Usage:
    python3 scripts/make_official_parity_fixture.py WSOLEVAL_DIR OUT_DIR [--seed 7]
        [--debug-dir DIR]

WSOLEVAL_DIR is a checkout of https://github.com/clovaai/wsolevaluation (only its .py
files are needed). Nothing of it is copied here: its modules are imported from that
path. Needs numpy, opencv-python and munch (wsolevaluation's own dependency); torch,
torchvision and PIL are NOT needed: they are replaced in sys.modules by stubs that
raise if anything in them is touched, which proves that the code paths used here
(inference.CAMComputer.compute_and_evaluate_cams -> util.t2n, cv2.resize,
inference.normalize_scoremap, evaluation.BoxEvaluator / MaskEvaluator accumulate and
compute, evaluation.compute_bboxes_from_scoremaps, data_loaders' metadata readers)
never use them.

How the official code is driven: CAMComputer (inference.py) is the official loop that
turns a raw CAM into a scored map (t2n -> float64, bicubic resize to the image size,
min-max normalization, evaluator.accumulate). We give it a stand-in "model" whose
output is the raw map read from the fixture's .npy file and a one-image-per-batch
"loader"; everything after that is wsolevaluation's code. The evaluation size is the
module constant evaluation._RESIZE_LENGTH (224 upstream), set here to --image-size so the
fixture stays small. numpy >= 1.24 dropped the `np.float` alias that util.py and
evaluation.py use; it is restored as the builtin `float`, which is what it always was.

Outputs in OUT_DIR:
    boxes/metadata/test/{image_ids,class_labels,image_sizes,localization}.txt
    boxes/cams/<image_id>.npy, boxes/predictions.txt
    masks/metadata/test/{image_ids,class_labels,localization}.txt
    masks/masks/<mask pngs>, masks/cams/<image_id>.npy
    known_diff/...: a small box split (same layout as boxes/) where a float32 pipeline differs
    expected.json: the official numbers (see its "notes" key)
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import types

import cv2
import numpy as np

IMAGE_SIZE = 64
IOU_THRESHOLDS = [30, 50, 70]
INTERVALS = ["0.01", "0.001"]
SPLIT = "test"


# --------------------------------------------------------------------------- stubs

def _unused_module(name):
    """A module whose every attribute is a class that fails when used."""
    mod = types.ModuleType(name)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        class Unused:
            def __init__(self, *a, **k):
                raise RuntimeError(f"stub {name}.{attr} was used; the fixture generator assumed it is not")

        Unused.__name__ = attr
        return Unused

    mod.__getattr__ = __getattr__
    return mod


def import_wsolevaluation(path):
    path = os.path.abspath(path)
    for name in ["torch", "torch.utils", "torch.utils.data", "torchvision", "torchvision.transforms",
                 "PIL", "PIL.Image"]:
        sys.modules.setdefault(name, _unused_module(name))
    sys.modules["torch"].utils = sys.modules["torch.utils"]
    sys.modules["torch.utils"].data = sys.modules["torch.utils.data"]
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["PIL"].Image = sys.modules["PIL.Image"]
    if not hasattr(np, "float"):
        np.float = float  # the alias numpy removed in 1.24
    sys.path.insert(0, path)
    import data_loaders
    import evaluation
    import inference
    import util
    for m in (evaluation, inference, util, data_loaders):
        assert os.path.dirname(os.path.abspath(m.__file__)) == path, m.__file__
    evaluation._RESIZE_LENGTH = IMAGE_SIZE
    return evaluation, inference


def git_commit(path):
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:
        p = os.path.join(path, "COMMIT")
        return open(p).read().strip() if os.path.exists(p) else "unknown"


# --------------------------------------------------------------------------- maps

def grid(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return (x + 0.5) / w, (y + 0.5) / h  # pixel centres in [0, 1]


def gauss(h, w, cx, cy, sx, sy=None, amp=1.0):
    u, v = grid(h, w)
    sy = sx if sy is None else sy
    return amp * np.exp(-((u - cx) ** 2 / (2 * sx * sx) + (v - cy) ** 2 / (2 * sy * sy)))


def ring(h, w, cx, cy, r, width, amp=1.0):
    u, v = grid(h, w)
    d = np.hypot(u - cx, v - cy)
    return amp * np.exp(-((d - r) ** 2) / (2 * width * width))


def rect(h, w, x0, y0, x1, y1, val=1.0):
    """Fractional corners -> a flat rectangle of value `val`."""
    u, v = grid(h, w)
    return val * ((u >= x0) & (u < x1) & (v >= y0) & (v < y1))


def unit(m):
    """Exact min 0, max 1 (maps stored at the evaluation size are valid input for the
    official evaluate_wsol as well, which does not normalize)."""
    m = m - m.min()
    return m / m.max()


def fbox(x0, y0, x1, y1, wh):
    """Fractional box -> integer box of an image of size wh (inclusive corners)."""
    w, h = wh
    c = lambda f, n: int(min(max(f * n, 0), n - 1))
    return (c(x0, w), c(y0, h), c(x1, w), c(y1, h))


def box_cases(rng):
    """(name, raw map, dtype, original (w, h), [fractional GT boxes])."""
    S = IMAGE_SIZE
    n = lambda *shape: rng.uniform(0, 1, shape)
    cases = []
    add = lambda *c: cases.append(c)
    # Single blob on the GT, coarse 7x7 map (bicubic overshoot below 0).
    add("blob_7", gauss(7, 7, .45, .5, .15), np.float32, (500, 375), [(.25, .3, .7, .75)])
    # Blob away from the GT.
    add("off_7", gauss(7, 7, .7, .3, .12), np.float32, (333, 500), [(.1, .5, .45, .9)])
    # Two blobs, two GTs.
    add("two_14", gauss(14, 14, .25, .3, .08) + gauss(14, 14, .72, .7, .1, amp=.8), np.float32, (640, 480),
        [(.12, .15, .4, .48), (.55, .5, .92, .93)])
    # Strong wrong blob + weak right blob, two GTs around the weak one: largest contour fails.
    add("weak_right_14", gauss(14, 14, .25, .25, .12) + gauss(14, 14, .75, .75, .07, amp=.55), np.float64,
        (480, 640), [(.62, .62, .9, .9), (.6, .55, .85, .95)])
    # Ring around the GT: a hole contour inside.
    add("ring_28x20", ring(20, 28, .5, .5, .28, .07) + .05 * n(20, 28), np.float32, (97, 61),
        [(.15, .1, .85, .9)])
    # Ring with a peak in its hole: outer, hole, island.
    add("ring_peak_28x20", ring(20, 28, .45, .5, .3, .06) + gauss(20, 28, .45, .5, .06, amp=.9), np.float32,
        (61, 97), [(.3, .35, .6, .65)])
    # Blob touching the top-left border.
    add("corner_32", gauss(32, 32, 0, 0, .2) + .1 * gauss(32, 32, .8, .8, .05), np.float32, (1000, 750),
        [(0, 0, .35, .4)])
    # Eval size, float64 plateaus with exact ties, two GTs.
    add("plateau_64", unit(rect(S, S, .1, .1, .45, .5, .5) + rect(S, S, .5, .15, .9, .55, .5)
                           + rect(S, S, .2, .6, .8, .9, .25) + rect(S, S, .6, .3, .75, .45, .5)),
        np.float64, (64, 64), [(.1, .1, .45, .5), (.5, .15, .9, .55)])
    # Constant map at the evaluation size: normalized to zero, no contour at any
    # threshold, so the (0, 0, 0, 0) box. (Constant maps of other sizes: see
    # known_diff_cases.) An all-zero map of another size stays exactly zero when resized.
    add("flat_64", np.full((S, S), .37), np.float32, (200, 200), [(.2, .2, .8, .8)])
    add("zero_14", np.zeros((14, 14)), np.float32, (150, 210), [(0, 0, .1, .1)])
    # Five-level plateau map.
    add("steps_32", np.floor(gauss(32, 32, .55, .45, .2, .12) * 5) / 5, np.float32, (123, 456),
        [(.25, .2, .85, .7)])
    # Noise: many contours.
    add("noise_7", n(7, 7), np.float64, (300, 300), [(.3, .3, .7, .7)])
    # Blob touching the right/bottom border.
    add("edge_28x20", gauss(20, 28, 1.0, .95, .15, .2), np.float32, (255, 257), [(.65, .5, .99, .99)])
    # Eval size: two equal-area rectangles (contour area tie), GT on the second one.
    add("tie_64", unit(rect(S, S, .1, .2, .35, .45) + rect(S, S, .6, .55, .85, .8)), np.float32, (640, 427),
        [(.6, .55, .85, .8), (.58, .5, .9, .85)])
    # Eval size float64: one large square and many small ones, slight noise.
    add("many_64", unit(rect(S, S, .4, .4, .8, .8, .7) + sum(rect(S, S, a, b, a + .06, b + .06, 1.0)
                                                                for a in (.05, .2) for b in (.05, .3, .6))
                        + .02 * n(S, S)), np.float32, (800, 800), [(.4, .4, .8, .8)])
    # Elongated diagonal-ish bar.
    add("bar_20", gauss(20, 20, .5, .5, .3, .06), np.float32, (410, 230), [(.1, .35, .9, .65)])
    # Three blobs, three GTs, non-square map.
    add("three_40x24", gauss(24, 40, .2, .3, .07) + gauss(24, 40, .5, .7, .09, amp=.9)
        + gauss(24, 40, .82, .35, .06, amp=.7), np.float32, (720, 432),
        [(.1, .12, .3, .5), (.38, .45, .62, .95), (.74, .2, .9, .5)])
    # One hot pixel over low noise.
    hot = .1 * n(7, 7)
    hot[3, 4] = 1.0
    add("hot_7", hot, np.float32, (350, 350), [(.5, .35, .75, .6)])
    # Thin GT (zero width after rescaling) beside a blob.
    add("thin_14", gauss(14, 14, .5, .5, .1), np.float32, (800, 600), [(.5, .2, .5015, .8)])
    # Ring partly outside the map.
    add("ring_edge_28x20", ring(20, 28, .9, .2, .35, .08), np.float64, (280, 200), [(.45, 0, .99, .6)])
    # Raw CAM with negative values.
    add("neg_16", gauss(16, 16, .4, .6, .15) * 3 - 1.2, np.float32, (160, 96), [(.15, .35, .65, .85)])
    # Large values.
    add("big_7", gauss(7, 7, .5, .4, .2) * 1000 + 250, np.float32, (97, 133), [(.2, .1, .8, .7)])
    # Flat annulus around a lower flat centre, on a sloped background.
    u, v = grid(48, 48)
    annulus = rect(48, 48, .2, .2, .8, .8, .6) - rect(48, 48, .35, .35, .65, .65, .3) + .2 * u
    add("annulus_48", annulus, np.float32, (512, 384), [(.2, .2, .8, .8)])
    # Eval size: a map saved from 8-bit levels (k / 255).
    q = np.floor(unit(gauss(S, S, .4, .55, .18) + .4 * gauss(S, S, .8, .2, .08)) * 255)
    add("uint8_64", q / 255.0, np.float32, (333, 333), [(.15, .3, .65, .85)])
    # Two blobs that merge at low thresholds.
    add("merge_14", gauss(14, 14, .38, .5, .1) + gauss(14, 14, .64, .5, .1, amp=.85), np.float32, (500, 500),
        [(.2, .3, .55, .7), (.45, .3, .8, .7)])
    return cases


def known_diff_cases(rng):
    """Cases where a float32 pipeline (wsol's before it switched) disagrees with the
    official loop, which converts every CAM to float64 (util.t2n) before cv2.resize and
    normalize_scoremap. (1) const_14: a constant map not at the
    evaluation size stays exactly constant in float64, so normalize_scoremap returns
    zeros and the box is (0, 0, 0, 0) at every threshold; the float32 bicubic resize
    leaves +-1 ulp ripples that min-max normalization stretches to [0, 1], giving
    spurious boxes (here the whole map, IoU 0.39 with the GT: correct at IoU 30 for
    thresholds below 0.5). const_7 (2.5, float64) happens to resize without ripples and
    agrees. (2) peak_7: a pixel that ties for the maximum (1.0, level 255) in float64 is
    0.99999994 (level 254) in float32, so at thresholds >= 0.997 (cut 254, interval
    0.001) the top box loses a row; the GT is that official top box."""
    return [
        ("const_14", np.full((14, 14), .37), np.float32, (200, 200), [(.2, .2, .8, .8)]),
        ("const_7", np.full((7, 7), 2.5), np.float64, (300, 240), [(.1, .1, .9, .9)]),
        ("peak_7", gauss(7, 7, .45, .5, .15), np.float32, (64, 64), [(28.5 / 64, 31.5 / 64, 29.5 / 64, 33.5 / 64)]),
    ]


def write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def save_map(root, image_id, m, dtype):
    p = os.path.join(root, image_id + ".npy")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    np.save(p, np.ascontiguousarray(m, dtype=dtype))


def make_box_split(out, name, cases, rng):
    meta = os.path.join(out, name, "metadata", SPLIT)
    cams = os.path.join(out, name, "cams")
    ids, labels, sizes, locs, preds, info = [], [], [], [], [], []
    num_classes = 10
    for i, (case, m, dtype, wh, boxes) in enumerate(cases):
        image_id = f"{SPLIT}/{i:02d}_{case}.jpg"
        label = int(rng.integers(num_classes))
        ids.append(image_id)
        labels.append(f"{image_id},{label}")
        sizes.append(f"{image_id},{wh[0]},{wh[1]}")
        for b in boxes:
            locs.append(image_id + "," + ",".join(map(str, fbox(*b, wh))))
        save_map(cams, image_id, m, dtype)
        # Predictions: right top-1 (i % 3 == 0), right only in top-5 (1), wrong (2).
        others = [c for c in rng.permutation(num_classes).tolist() if c != label]
        top5 = {0: [label] + others[:4], 1: others[:2] + [label] + others[2:4], 2: others[:5]}[i % 3]
        preds.append(image_id + "," + ",".join(map(str, top5)))
        info.append({"image_id": image_id, "map_shape": list(m.shape), "dtype": np.dtype(dtype).name,
                     "image_size": list(wh), "num_gt_boxes": len(boxes)})
    write_lines(os.path.join(meta, "image_ids.txt"), ids)
    write_lines(os.path.join(meta, "class_labels.txt"), labels)
    write_lines(os.path.join(meta, "image_sizes.txt"), sizes)
    write_lines(os.path.join(meta, "localization.txt"), locs)
    write_lines(os.path.join(out, name, "predictions.txt"), preds)
    return meta, cams, info


def ellipse(h, w, cx, cy, rx, ry):
    u, v = grid(h, w)
    return ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1


def mask_cases(rng):
    """(name, raw map, dtype, mask (w, h), [(instance bool mask, gray level)], ignore bool mask)."""
    S = IMAGE_SIZE
    cases = []
    for i in range(12):
        w, h = [(50, 40), (120, 90), (64, 64), (37, 53), (200, 150), (31, 31),
                (90, 120), (64, 48), (150, 100), (45, 70), (80, 80), (128, 96)][i]
        k = 1 + i % 3  # instances
        inst = []
        m_shape = [(7, 7), (14, 14), (28, 20), (S, S), (20, 28), (10, 16), (14, 14), (24, 40), (7, 7),
                   (16, 16), (28, 28), (12, 9)][i]
        mh, mw = m_shape
        raw = .08 * rng.uniform(0, 1, (mh, mw))
        for j in range(k):
            cx, cy = rng.uniform(.2, .8, 2)
            rx, ry = rng.uniform(.08, .25, 2)
            level = [255, 128, 1][(i + j) % 3]
            inst.append((ellipse(h, w, cx, cy, rx, ry), level))
            # The map sees most instances, shifted a little; one in four is missed.
            if (i + j) % 4 != 3:
                raw += gauss(mh, mw, cx + rng.uniform(-.08, .08), cy + rng.uniform(-.08, .08),
                             rx * rng.uniform(.6, 1.3), ry * rng.uniform(.6, 1.3), amp=rng.uniform(.5, 1))
        # A distractor blob in some maps.
        if i % 2 == 0:
            raw += gauss(mh, mw, rng.uniform(.1, .9), rng.uniform(.1, .9), .1, amp=.6)
        if i == 5:
            raw = np.floor(raw / raw.max() * 4) / 4  # plateaus
        # Ignore region: a box around the first instance (partly overlapping the
        # foreground), none for image 7 (an all-zero ignore mask).
        if i == 7:
            ignore = np.zeros((h, w), bool)
        else:
            ys, xs = np.nonzero(inst[0][0])
            ignore = np.zeros((h, w), bool)
            pad = 3 + i % 4
            ignore[max(ys.min() - pad, 0):ys.max() + pad + 1, max(xs.min() - pad, 0):xs.max() + pad + 1] = True
        dtype = np.float64 if i in (2, 9) else np.float32
        if m_shape == (S, S):
            raw = unit(raw)
        cases.append((f"m{i:02d}", raw, dtype, (w, h), inst, ignore))
    return cases


def make_mask_split(out, rng):
    meta = os.path.join(out, "masks", "metadata", SPLIT)
    mask_root = os.path.join(out, "masks", "masks")
    cams = os.path.join(out, "masks", "cams")
    ids, labels, locs, info = [], [], [], []
    for name, raw, dtype, wh, inst, ignore in mask_cases(rng):
        image_id = f"{SPLIT}/{name}.jpg"
        ids.append(image_id)
        labels.append(f"{image_id},{int(rng.integers(5))}")
        ignore_rel = f"{SPLIT}/{name}_ignore.png"
        for j, (mask, level) in enumerate(inst):
            rel = f"{SPLIT}/{name}_{j}.png"
            os.makedirs(os.path.dirname(os.path.join(mask_root, rel)), exist_ok=True)
            assert cv2.imwrite(os.path.join(mask_root, rel), (mask * level).astype(np.uint8))
            locs.append(f"{image_id},{rel},{ignore_rel if j == 0 else ''}")
        assert cv2.imwrite(os.path.join(mask_root, ignore_rel), ignore.astype(np.uint8) * 255)
        save_map(cams, image_id, raw, dtype)
        info.append({"image_id": image_id, "map_shape": list(raw.shape), "dtype": np.dtype(dtype).name,
                     "mask_size": list(wh), "num_instances": len(inst)})
    write_lines(os.path.join(meta, "image_ids.txt"), ids)
    write_lines(os.path.join(meta, "class_labels.txt"), labels)
    write_lines(os.path.join(meta, "localization.txt"), locs)
    return meta, mask_root, cams, info


# --------------------------------------------------------------------------- official run

class _Output:
    """Stands for the model's output tensor: util.t2n calls .detach().cpu().numpy()."""

    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


class _Images:
    """Stands for an image batch of one: CAMComputer reads .shape[2:] and calls .cuda()."""

    def __init__(self, raw):
        self.raw = raw
        self.shape = (1, 3, IMAGE_SIZE, IMAGE_SIZE)

    def cuda(self):
        return self


class _Model:
    """Returns the stored raw map as the CAM of the (single) image."""

    def eval(self):
        return self

    def __call__(self, images, targets, return_cam=False):
        assert return_cam
        return _Output(images.raw[None])


def run_official(inference, meta, cams, mask_root, dataset_name, interval, multi_contour, save_dir=None):
    ids = [line.rstrip("\n") for line in open(os.path.join(meta, "image_ids.txt"))]
    loader = [(_Images(np.load(os.path.join(cams, i + ".npy"))), None, [i]) for i in ids]
    computer = inference.CAMComputer(
        model=_Model(), loader=loader, metadata_root=meta, mask_root=mask_root,
        iou_threshold_list=IOU_THRESHOLDS, dataset_name=dataset_name,
        split=SPLIT if save_dir else "train", multi_contour_eval=multi_contour,
        cam_curve_interval=float(interval), log_folder=save_dir)
    result = computer.compute_and_evaluate_cams()
    return computer.evaluator, result


def box_numbers(evaluator, result):
    thr = evaluator.cam_threshold_list
    out = {"maxboxacc_by_iou": {}, "best_threshold_by_iou": {}, "num_correct": {}}
    for iou, acc in zip(evaluator.iou_threshold_list, result):
        counts = evaluator.num_correct[iou]
        out["maxboxacc_by_iou"][str(iou)] = float(acc)
        out["best_threshold_by_iou"][str(iou)] = float(thr[int(np.argmax(counts))])
        out["num_correct"][str(iou)] = [int(c) for c in counts]
    out["mean"] = float(np.mean(result))
    return out


def per_image_boxes(evaluation, saved_maps, ids, interval):
    """Diagnostics: the official boxes at every threshold for every image."""
    thr = list(np.arange(0, 1, float(interval)))
    res = {}
    for i in ids:
        m = np.load(os.path.join(saved_maps, i + ".npy"))
        d = {}
        for multi in (False, True):
            boxes, _ = evaluation.compute_bboxes_from_scoremaps(m, thr, multi_contour_eval=multi)
            d["all" if multi else "largest"] = [b.tolist() for b in boxes]
        res[i] = d
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wsolevaluation", help="path of a clovaai/wsolevaluation checkout")
    ap.add_argument("out", help="fixture directory to (re)write")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--debug-dir", help="also write the official normalized maps and per-image boxes here")
    args = ap.parse_args()

    evaluation, inference = import_wsolevaluation(args.wsolevaluation)
    rng = np.random.default_rng(args.seed)
    for sub in ("boxes", "masks", "known_diff"):
        shutil.rmtree(os.path.join(args.out, sub), ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    rel = lambda p: os.path.relpath(p, args.out)

    with tempfile.TemporaryDirectory() as tmp:
        save_dir = args.debug_dir or tmp

        def box_set(name, cases, intervals):
            meta, cams, info = make_box_split(args.out, name, cases, rng)
            d = {"metadata": rel(meta), "cams": rel(cams), "predictions": f"{name}/predictions.txt",
                 "num_images": len(info), "images": info, "runs": {}}
            for interval in intervals:
                run = {}
                for multi in (False, True):
                    keep = os.path.join(save_dir, name) if interval == "0.01" else None
                    ev, res = run_official(inference, meta, cams, None, "CUB", interval, multi, save_dir=keep)
                    assert ev.cnt == len(info)
                    run["all" if multi else "largest"] = box_numbers(ev, res)
                run["maxboxacc"] = run["largest"]["maxboxacc_by_iou"]["50"]
                run["best_threshold"] = run["largest"]["best_threshold_by_iou"]["50"]
                run["maxboxacc_v2"] = run["all"]["mean"]
                d["runs"][interval] = run
            if args.debug_dir:
                ids = [x["image_id"] for x in info]
                with open(os.path.join(args.debug_dir, f"official_boxes_{name}_0.01.json"), "w") as f:
                    json.dump(per_image_boxes(evaluation, os.path.join(save_dir, name, "scoremaps"), ids, "0.01"), f)
            return d

        boxes = box_set("boxes", box_cases(rng), INTERVALS)
        mask_meta, mask_root, mask_cams, mask_info = make_mask_split(args.out, rng)
        masks = {"metadata": rel(mask_meta), "masks": rel(mask_root), "cams": rel(mask_cams),
                 "num_images": len(mask_info), "images": mask_info, "pxap": {}}
        for interval in INTERVALS:
            keep = os.path.join(save_dir, "masks") if interval == "0.01" else None
            _, auc = run_official(inference, mask_meta, mask_cams, mask_root, "OpenImages", interval, False,
                                  save_dir=keep)
            masks["pxap"][interval] = float(auc)
        known_diff = box_set("known_diff", known_diff_cases(rng), INTERVALS)
        known_diff["note"] = " ".join(known_diff_cases.__doc__.split())

    expected = {
        "notes": [
            "Numbers from the official clovaai/wsolevaluation code (inference.CAMComputer loop, "
            "evaluation.BoxEvaluator / MaskEvaluator), produced by scripts/make_official_parity_fixture.py.",
            "Each raw map goes through the official loop: float64 (util.t2n), cv2.resize bicubic to "
            "image_size, inference.normalize_scoremap, evaluator.accumulate; evaluation._RESIZE_LENGTH = image_size.",
            "runs[interval].largest = BoxEvaluator(multi_contour_eval=False), .all = (multi_contour_eval=True). "
            "num_correct[iou][t] is the evaluator's own count at cam_threshold_list[t] = t * interval; the "
            "curve in percent is num_correct * 100 / num_images. maxboxacc_by_iou is compute()'s output; "
            "best_threshold_by_iou is the threshold of np.argmax(num_correct[iou]).",
            "maxboxacc = largest IoU 50; maxboxacc_v2 = mean of the all-contour values over IoU 30/50/70. "
            "Top-1/top-5 loc are not computed by the official evaluator and are not recorded.",
            "masks.pxap[interval] = MaskEvaluator.compute() (PxAP, percent).",
            "known_diff: a separate box split on which a float32 pipeline disagrees (see its note).",
        ],
        "wsolevaluation": {"repository": "https://github.com/clovaai/wsolevaluation",
                           "commit": git_commit(args.wsolevaluation)},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__},
        "seed": args.seed,
        "image_size": IMAGE_SIZE,
        "iou_thresholds": IOU_THRESHOLDS,
        "boxes": boxes,
        "masks": masks,
        "known_diff": known_diff,
    }
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    for name, d in (("boxes", boxes), ("known_diff", known_diff)):
        for interval, r in d["runs"].items():
            print(f"{name} {interval}: MaxBoxAcc {r['maxboxacc']:.4f} (thr {r['best_threshold']}), "
                  f"MaxBoxAccV2 {r['maxboxacc_v2']:.4f}, largest {r['largest']['maxboxacc_by_iou']}, "
                  f"all {r['all']['maxboxacc_by_iou']}")
    print("PxAP", masks["pxap"])

if __name__ == "__main__":
    main()
