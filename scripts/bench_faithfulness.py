#!/usr/bin/env python3
"""Faithfulness metrics per image: pytorch-grad-cam's and torch-cam's own code against
`wsol bench faithfulness`, the same network (wsol's ResNet-18 layout, 200 classes), image
size, batch, smooth maps and thread count, in one run.

    python3 scripts/bench_faithfulness.py TORCHCAM_DIR GRADCAM_DIR [--threads 2] [--size 224] [--batch 4]

TORCHCAM_DIR / GRADCAM_DIR as for scripts/make_faithfulness_fixture.py. Timed: torch-cam's
ClassificationMetric (Average Drop / Increase) and DeletionInsertionMetric (20 steps,
zero baseline; deletion and insertion come from one call, so its time is given for
both), pytorch-grad-cam's ROADMostRelevantFirstAverage + ROADLeastRelevantFirstAverage
(percentiles 10..90, the noisy linear imputer); wall ms per image of each call, one run
after one warm-up; the model's forward is part of every metric, on both sides.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_backbone_parity_fixture import resnet  # noqa: E402
from make_faithfulness_fixture import FixedCams  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("torchcam_dir")
    ap.add_argument("gradcam_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--wsol", default=os.path.join(HERE, "..", "target", "release", "wsol"))
    args = ap.parse_args()
    sys.path[:0] = [args.torchcam_dir, args.gradcam_dir]
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

    torch.set_num_threads(args.threads)
    import torchvision.models as tvm  # noqa: F401
    import make_backbone_parity_fixture as mb
    mb.CLASSES = 200
    model, _ = resnet(18)
    model.eval()
    n, s = args.batch, args.size
    x = torch.randn(n, 3, s, s)
    yy, xx = np.mgrid[0:s, 0:s]
    maps = np.stack([np.exp(-((xx - s * (0.3 + 0.1 * (k % 4))) ** 2 + (yy - s * (0.3 + 0.1 * (k % 4))) ** 2)
                            / (0.05 * s * s)) for k in range(n)]).astype(np.float32)
    cams = torch.from_numpy(maps)
    classes = [k % 200 for k in range(n)]
    softmax = partial(torch.softmax, dim=-1)

    def timed(fn):
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3 / n

    ref = {}
    ref["avg_drop"] = timed(lambda: ClassificationMetric(FixedCams(model, cams), softmax).update(x, class_idx=classes))
    ref["deletion+insertion"] = timed(
        lambda: DeletionInsertionMetric(FixedCams(model, cams), softmax, steps=20, batch_size=n).update(x, class_idx=classes))
    targets = [ClassifierOutputSoftmaxTarget(c) for c in classes]
    ref["road"] = timed(lambda: (ROADMostRelevantFirstAverage()(x, maps, targets, model),
                                 ROADLeastRelevantFirstAverage()(x, maps, targets, model)))
    out = subprocess.run([args.wsol, "bench", "faithfulness", "--backbone", "resnet18", "--size", str(s), "--batch", str(n),
                          "--classes", "200", "--steps", "1", "--threads", str(args.threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    ours = json.loads(out)["faithfulness"]
    ours["deletion+insertion"] = {"ms_per_image": ours["deletion"]["ms_per_image"] + ours["insertion"]["ms_per_image"]}
    print(f"ResNet-18 (wsol layout, 200 classes), {s}x{s}, batch {n}, {args.threads} threads; torch {torch.__version__}")
    print(f"{'metric':<20} {'reference ms/img':>17} {'wsol ms/img':>12} {'ratio':>7}")
    for k, r in ref.items():
        w = ours[k]["ms_per_image"]
        print(f"{k:<20} {r:>17.1f} {w:>12.1f} {r / w:>6.2f}x")


if __name__ == "__main__":
    main()
