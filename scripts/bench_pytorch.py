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
    a = p.parse_args()
    torch.set_num_threads(a.threads)
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
    print(json.dumps({
        "backbone": a.backbone, "batch": a.batch, "size": a.size, "threads": a.threads, "steps": a.steps,
        "device": a.device, "torch": torch.__version__,
        "images_per_s": a.batch / (median / 1e3), "step_ms": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
    }))


if __name__ == "__main__":
    main()
