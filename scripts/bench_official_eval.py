#!/usr/bin/env python3
"""The official side of `cargo bench --bench eval`: the same maps scored by
clovaai/wsolevaluation's own code, per map `inference.normalize_scoremap` then
`evaluation.BoxEvaluator.accumulate` (the part of its loop after the resize), with 100
and 1000 thresholds, largest and all contours. Prints ms per map, one core.

    WSOL_BENCH_DUMP=/tmp/evalmaps WSOL_BENCH_MAPS=1 cargo bench --bench eval
    taskset -c 0 python3 scripts/bench_official_eval.py WSOLEVAL_DIR /tmp/evalmaps
    WSOL_BENCH_OFFICIAL_MS=<ms at 100>,<ms at 1000> cargo bench --bench eval

WSOLEVAL_DIR is a checkout of https://github.com/clovaai/wsolevaluation; its modules are
imported from there as `scripts/make_official_parity_fixture.py` does (torch, torchvision
and PIL not needed). Needs numpy and opencv-python. Not part of CI.
"""
import argparse
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_official_parity_fixture import import_wsolevaluation  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wsoleval_dir")
    ap.add_argument("maps_dir", help="WSOL_BENCH_DUMP directory: maps.npy, boxes.npy")
    ap.add_argument("--maps", type=int, default=256, help="maps timed at 100 thresholds (a fifth at 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting; the median is printed")
    args = ap.parse_args()

    evaluation, inference = import_wsolevaluation(args.wsoleval_dir)
    cv2.setNumThreads(1)
    maps = np.load(os.path.join(args.maps_dir, "maps.npy"))
    boxes = np.load(os.path.join(args.maps_dir, "boxes.npy"))
    print(f"{len(maps)} maps {maps.shape[1]}x{maps.shape[2]}, numpy {np.__version__}, OpenCV {cv2.__version__}")
    print(f"{'thresh':<8} {'contours':<9} {'ms/map':>9}   runs")
    for interval in (0.01, 0.001):
        n = args.maps if interval == 0.01 else max(args.maps // 5, 10)
        for multi in (False, True):
            runs = []
            for _ in range(args.repeats):
                # The evaluator without its metadata readers: the fields accumulate() uses.
                ev = object.__new__(evaluation.BoxEvaluator)
                ev.cam_threshold_list = list(np.arange(0, 1, interval))
                ev.iou_threshold_list = [30, 50, 70]
                ev.multi_contour_eval = multi
                ev.cnt = 0
                ev.num_correct = {t: np.zeros(len(ev.cam_threshold_list)) for t in ev.iou_threshold_list}
                ev.gt_bboxes = {i: [boxes[i % len(boxes)].tolist()] for i in range(n)}
                t0 = time.perf_counter()
                for i in range(n):
                    cam = maps[i % len(maps)].astype(np.float64)
                    ev.accumulate(inference.normalize_scoremap(cam), i)
                runs.append((time.perf_counter() - t0) * 1e3 / n)
            line = ", ".join(f"{r:.3f}" for r in runs)
            print(f"{len(ev.cam_threshold_list):<8} {'all' if multi else 'largest':<9} {np.median(runs):>9.3f}   {line}")


if __name__ == "__main__":
    main()
