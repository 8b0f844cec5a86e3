#!/usr/bin/env python3
"""The PyTorch side of `wsol bench train`: the same model and training step (forward,
cross-entropy, backward, SGD with momentum 0.9 / weight decay 1e-4) on random input,
median step time after 2 warm-up steps, and peak RSS. Run both on one machine with the
same threads, e.g.

    python3 scripts/bench_pytorch.py --backbone resnet18 --batch 8 --size 224 --threads 2
    wsol bench train --backbone resnet18 --batch 8 --size 224 --threads 2

`resnet18` is torchvision's with layer4 at stride 1 and a GAP + linear CAM head, as
wsol builds it. Needs torch and torchvision; not part of CI.
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torchvision


def resnet18_cam(classes):
    m = torchvision.models.resnet18(weights=None)
    m.layer4[0].conv1.stride = (1, 1)
    m.layer4[0].downsample[0].stride = (1, 1)
    m.fc = nn.Linear(512, classes)
    return m


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet18", choices=["resnet18"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = resnet18_cam(a.classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, a.size, a.size)
    y = torch.arange(a.batch) % a.classes
    times = []
    for k in range(2 + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
        if k >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    median = sorted(times)[len(times) // 2]
    print(json.dumps({
        "backbone": a.backbone, "batch": a.batch, "size": a.size, "threads": a.threads, "steps": a.steps,
        "images_per_s": a.batch / (median / 1e3), "step_ms": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
