#!/usr/bin/env python3
"""The PyTorch side of `wsol bench train`: the same model and training step (forward,
cross-entropy, backward, SGD with momentum 0.9 / weight decay 1e-4) on random input,
median step time after 2 warm-up steps, and peak RSS. Run both on one machine with the
same threads, e.g.

    python3 scripts/bench_pytorch.py --backbone resnet18 --batch 8 --size 224 --threads 2
    wsol bench train --backbone resnet18 --batch 8 --size 224 --threads 2

`resnet18`/`resnet50` are torchvision's with layer4 at stride 1 and a GAP + linear CAM
head, `vgg16` is wsolevaluation's CAM VGG (no pool5, conv6 512->1024), as wsol builds
them. `--device cuda` times the step on the GPU (synchronized) and also reports the peak
GPU memory. Needs torch and torchvision; not part of CI.
"""
import argparse
import sys
import json
import resource
import time

import torch
import torch.nn as nn
import torchvision


def resnet_cam(depth, classes):
    m = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    block = m.layer4[0]
    (block.conv2 if depth == 50 else block.conv1).stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    m.fc = nn.Linear(m.fc.in_features, classes)
    return m


class VggCam(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.features = torchvision.models.vgg16(weights=None).features[:30]
        self.conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=1)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv6(self.features(x))).mean((2, 3)))


def build(backbone, classes):
    if backbone == "vgg16":
        return VggCam(classes)
    return resnet_cam(int(backbone.removeprefix("resnet")), classes)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50", "vgg16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True (wsol's --cudnn-benchmark)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, run 2 steps under torch.profiler and print the GPU kernels' time to stderr")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    dev = torch.device(a.device)
    model = build(a.backbone, a.classes).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = torch.arange(a.batch, device=dev) % a.classes
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
    if a.profile:
        profile_steps(model, opt, x, y, a.batch)
    print(json.dumps({
        "backbone": a.backbone, "batch": a.batch, "size": a.size, "threads": a.threads, "steps": a.steps,
        "device": a.device, "torch": torch.__version__, "cudnn_benchmark": a.cudnn_benchmark,
        "images_per_s": a.batch / (median / 1e3), "step_ms": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
    }))


def profile_steps(model, opt, x, y, batch, steps=2):
    """Kernel time per step by kernel, from torch.profiler (to compare with ncu on wsol)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name = {}
    for e in kernels:
        n, us = by_name.get(e.name, (0, 0.0))
        by_name[e.name] = (n + 1, us + e.device_time)
    total = sum(us for _, us in by_name.values())
    if x.is_cuda and not kernels:  # an older layout of the profiler's events
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30), file=sys.stderr)
    print(f"torch kernels: {len(kernels) / steps:.0f} launches, {total / steps / 1e3:.2f} ms per step", file=sys.stderr)
    for name, (n, us) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:30]:
        print(f"{us / steps / 1e3:9.3f} ms {n // steps:5d}x  {name[:110]}", file=sys.stderr)


if __name__ == "__main__":
    main()
