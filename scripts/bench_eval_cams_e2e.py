#!/usr/bin/env python3
"""End-to-end CPU cost of `wsol eval-cams` against the official wsolevaluation evaluator
on the same maps (issue #35, item 3).

Writes N float32 224x224 `.npy` maps shaped like real CAMs (smooth blobs of varying size
and number, a low-frequency background and mild pixel noise; seeded) in wsolevaluation's
scoremap layout (`<cams>/<image_id>.npy`), with a matching metadata split, then measures

* official: CPU seconds (user+sys of this process, imports and map writing excluded) of
  `BoxEvaluator(...)` (its metadata readers), then per map `np.load` ->
  `.astype(np.float64)` (wsol's float64 contract, as `scripts/bench_official_eval.py`) ->
  `inference.normalize_scoremap` -> `accumulate`, then `compute()`; one run per setting;
* wsol: CPU seconds (user+sys of the child, from `os.wait4`) of the whole
  `wsol eval-cams --metadata SPLIT --cams DIR --out DIR --quiet` process, writing all its
  outputs (metrics.json, curve.csv, curve.png, per_image.csv);

at cam_curve_interval 0.01 and 0.001, all contours (the MaxBoxAccV2 setting: wsol's
default, `--multi_contour_eval` of the official), and prints the ratios (wsol computes
both contour rules in its one run). The official MaxBoxAccV2 must equal wsol's; with
`--check-v1` the official largest-contour run (MaxBoxAcc = GT-known Loc) is timed too and
must equal wsol's `gt_known_loc`. With `--perf` a `perf record -e cpu-clock` profile of
one wsol run per setting (with call stacks) is bucketed into where the CPU time goes.

    cargo build --release --bin wsol
    python3 scripts/bench_eval_cams_e2e.py /tmp/wsolevaluation [--maps 2000] [--check-v1] [--perf]

WSOLEVAL_DIR is a checkout of https://github.com/clovaai/wsolevaluation, imported as
`scripts/make_official_parity_fixture.py` does (torch, torchvision, PIL not needed).
Needs numpy and opencv-python. Not part of CI.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_official_parity_fixture import import_wsolevaluation  # noqa: E402

SIZE = 224


def make_cam(rng, noise, background):
    """A CAM-like map: 1-4 anisotropic Gaussian blobs over a low-frequency background of
    amplitude `background` (a 7x7 random grid resized bicubically, as a backbone's map
    is) plus mild pixel noise of standard deviation `noise` (peaks are about 1)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    cam = np.zeros((SIZE, SIZE))
    blobs = []
    for k in range(rng.integers(1, 5)):
        cx, cy = rng.uniform(30, SIZE - 30, size=2)
        sx, sy = rng.uniform(8, 60, size=2)
        amp = 1.0 if k == 0 else rng.uniform(0.2, 0.9)
        cam += amp * np.exp(-((x - cx) ** 2 / (2 * sx * sx) + (y - cy) ** 2 / (2 * sy * sy)))
        blobs.append((cx, cy, sx, sy))
    low = cv2.resize(rng.uniform(0, 1, size=(7, 7)), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    cam += background * low + rng.normal(0, noise, size=(SIZE, SIZE))
    cam = np.maximum(cam, 0)  # ReLU, as CAMs are
    return cam.astype(np.float32), blobs[0]


def write_data(root, n, seed, noise, background):
    rng = np.random.default_rng(seed)
    split = os.path.join(root, "metadata", "test")
    cams = os.path.join(root, "cams")
    os.makedirs(split)
    ids, labels, sizes, locs = [], [], [], []
    for i in range(n):
        image_id = f"c{i % 20:03d}/img_{i:05d}.jpg"
        w, h = int(rng.integers(300, 501)), int(rng.integers(300, 501))
        cam, (cx, cy, sx, sy) = make_cam(rng, noise, background)
        # GT: the main blob's +-1.5 sigma (jittered) in the original image's pixels.
        j = rng.uniform(0.8, 1.25, size=4)
        box = [max(cx - 1.5 * sx * j[0], 0), max(cy - 1.5 * sy * j[1], 0),
               min(cx + 1.5 * sx * j[2], SIZE - 1), min(cy + 1.5 * sy * j[3], SIZE - 1)]
        box = [int(box[0] * w / SIZE), int(box[1] * h / SIZE), int(box[2] * w / SIZE), int(box[3] * h / SIZE)]
        path = os.path.join(cams, image_id + ".npy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, cam)
        ids.append(image_id)
        labels.append(f"{image_id},{i % 20}")
        sizes.append(f"{image_id},{w},{h}")
        locs.append(f"{image_id},{box[0]},{box[1]},{box[2]},{box[3]}")
    for name, lines in [("image_ids.txt", ids), ("class_labels.txt", labels),
                        ("image_sizes.txt", sizes), ("localization.txt", locs)]:
        with open(os.path.join(split, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return split, cams


def run_official(evaluation, inference, split, cams, interval, multi):
    from data_loaders import configure_metadata
    t0 = time.process_time()
    metadata = configure_metadata(split)
    ev = evaluation.BoxEvaluator(metadata=metadata, dataset_name="CUB", split="test",
                                 cam_threshold_list=list(np.arange(0, 1, interval)),
                                 iou_threshold_list=[30, 50, 70], mask_root=None,
                                 multi_contour_eval=multi)
    for image_id in ev.image_ids:
        cam = np.load(os.path.join(cams, image_id + ".npy")).astype(np.float64)
        ev.accumulate(inference.normalize_scoremap(cam), image_id)
    accs = ev.compute()
    return time.process_time() - t0, accs


def run_wsol(wsol, split, cams, interval, out, perf_data=None):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [wsol, "eval-cams", "--metadata", split, "--cams", cams, "--out", out, "--quiet",
           "--cam-curve-interval", str(interval)]
    if perf_data:
        cmd = ["perf", "record", "-q", "--call-graph", "dwarf,16384", "-e", "cpu-clock", "-F", "2000",
               "-o", perf_data, "--"] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"wsol eval-cams failed ({status}): {' '.join(cmd)}")
    with open(os.path.join(out, "metrics.json")) as f:
        return ru.ru_utime + ru.ru_stime, json.load(f)


# Where the time goes: the share of samples whose call stack holds one of these frames
# (perf's "children" column; the outermost matching frame of a bucket, as they nest).
FRAMES = [
    ("sweep (level sets, contours, boxes, IoU)", r"sweep_quantized_with$|sweep_levels$|BoxAccumulator::score$|LevelSets::sweep$"),
    ("read .npy (open, read, parse, check)", r"scoremaps::MapReader::read$|scoremaps::read$"),
    ("prepare/quantize (min-max, levels)", r"prepare_quantized"),
    ("count hits (BoxAccumulator::add_scored)", r"BoxAccumulator::add_scored$"),
    ("per_image bookkeeping (record)", r"PerImageRecorder::record$"),
    ("write outputs (metrics.json, curve.csv/png, per_image.csv)", r"EvalResult::write$"),
    ("metadata", r"metadata::read_split$"),
    ("map paths (find each .npy)", r"eval_cams::maps_and_outcomes$"),
]


def perf_breakdown(perf_data):
    rep = subprocess.run(["perf", "report", "-i", perf_data, "--stdio", "--children", "--sort", "sym",
                          "-g", "none", "--percent-limit", "0"], capture_output=True, text=True).stdout
    totals = {name: 0.0 for name, _ in FRAMES}
    top = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*)$", line)
        if not m:
            continue
        children, self_pct, sym = float(m.group(1)), float(m.group(2)), m.group(3).strip()
        top.append((self_pct, sym))
        for name, pat in FRAMES:
            if re.search(pat, sym):
                totals[name] = max(totals[name], children)
    totals["rest (process start, threads, allocation, ...)"] = max(0.0, 100 - sum(totals.values()))
    return totals, sorted(top, reverse=True)[:12]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wsoleval_dir")
    ap.add_argument("--maps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--background", type=float, default=0.15,
                    help="amplitude of the maps' low-frequency background (0: blobs only)")
    ap.add_argument("--noise", type=float, default=3e-4, help="pixel noise of the maps (peak about 1)")
    ap.add_argument("--wsol", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "target", "release", "wsol"))
    ap.add_argument("--data", help="folder for the maps and metadata (default: a temporary one, removed)")
    ap.add_argument("--wsol-repeats", type=int, default=3, help="wsol runs per setting (each printed)")
    ap.add_argument("--intervals", default="0.01,0.001")
    ap.add_argument("--check-v1", action="store_true", help="also time the official largest-contour run")
    ap.add_argument("--perf", action="store_true", help="perf profile of one wsol run per setting")
    args = ap.parse_args()

    evaluation, inference = import_wsolevaluation(args.wsoleval_dir)
    evaluation._RESIZE_LENGTH = SIZE  # the fixture importer sets its own small grid
    cv2.setNumThreads(1)
    root = args.data or tempfile.mkdtemp(prefix="wsol-e2e-")
    try:
        if not os.path.exists(os.path.join(root, "metadata", "test", "localization.txt")):
            t0 = time.perf_counter()
            write_data(root, args.maps, args.seed, args.noise, args.background)
            print(f"wrote {args.maps} maps to {root} in {time.perf_counter() - t0:.1f} s")
        split, cams = os.path.join(root, "metadata", "test"), os.path.join(root, "cams")
        n = sum(1 for _ in open(os.path.join(split, "image_ids.txt")))
        wsol = os.path.abspath(args.wsol)
        commit = subprocess.run(["git", "-C", os.path.dirname(wsol), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        print(f"{n} float32 maps {SIZE}x{SIZE}; numpy {np.__version__}, OpenCV {cv2.__version__}; "
              f"wsol {wsol} (HEAD {commit})")
        summary = []
        for interval in [float(v) for v in args.intervals.split(",")]:
            nthr = len(np.arange(0, 1, interval))
            out = os.path.join(root, f"out-{interval}")
            runs = [run_wsol(wsol, split, cams, interval, out) for _ in range(args.wsol_repeats)]
            w_cpu = [r[0] for r in runs]
            m = runs[-1][1]
            o_cpu, accs = run_official(evaluation, inference, split, cams, interval, True)
            o_v2 = float(np.mean(accs))
            print(f"\n== {nthr} thresholds (cam_curve_interval {interval}), all contours ==")
            print(f"official: {o_cpu:.2f} CPU s ({o_cpu / n * 1e3:.3f} ms/map); MaxBoxAccV2 {o_v2!r} "
                  f"(by IoU {[float(a) for a in accs]})")
            print(f"wsol:     {', '.join(f'{c:.3f}' for c in w_cpu)} CPU s "
                  f"(median {np.median(w_cpu) / n * 1e3:.4f} ms/map); MaxBoxAccV2 {m['maxboxacc_v2']!r}")
            assert m["maxboxacc_v2"] == o_v2, (m["maxboxacc_v2"], o_v2)
            for k, a in zip(["30", "50", "70"], accs):
                assert m["maxboxacc_v2_by_iou"][k] == float(a), (k, m["maxboxacc_v2_by_iou"][k], a)
            ratios = [o_cpu / c for c in w_cpu]
            print(f"ratio official/wsol: {', '.join(f'{r:.1f}x' for r in ratios)} (median {np.median(ratios):.1f}x)")
            if args.check_v1:
                v1_cpu, v1 = run_official(evaluation, inference, split, cams, interval, False)
                print(f"official largest contour: {v1_cpu:.2f} CPU s; MaxBoxAcc (GT-known) {float(v1[1])!r}; "
                      f"wsol gt_known_loc {m['gt_known_loc']!r}")
                assert m["gt_known_loc"] == float(v1[1]) and m["maxboxacc"] == float(v1[1])
            summary.append((nthr, o_cpu, np.median(w_cpu), np.median(ratios)))
            if args.perf:
                data = os.path.join(root, f"perf-{interval}.data")
                run_wsol(wsol, split, cams, interval, out, perf_data=data)
                totals, top = perf_breakdown(data)
                w_med = np.median(w_cpu)
                print(f"wsol breakdown (perf cpu-clock samples with call stacks, % of the process; "
                      f"ms/map at the median {w_med:.3f} CPU s):")
                for name, pct in totals.items():
                    print(f"  {pct:5.1f}%  {pct / 100 * w_med / n * 1e3:7.4f} ms/map  {name}")
                sweep = totals[FRAMES[0][0]]
                print(f"  outside the sweep: {(100 - sweep) / 100 * w_med / n * 1e3:.4f} ms/map")
                print("  top symbols (self):")
                for pct, sym in top:
                    print(f"    {pct:5.1f}%  {sym[:110]}")
        print("\nthresholds  official CPU s  wsol CPU s (median)  ratio (median)")
        for nthr, o, w, r in summary:
            print(f"{nthr:<11} {o:<14.2f} {w:<20.3f} {r:.1f}x")
    finally:
        if not args.data:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
