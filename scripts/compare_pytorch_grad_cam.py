#!/usr/bin/env python3
"""Compares wsol's CAM methods with pytorch-grad-cam (jacobgil/pytorch-grad-cam) on the
same weights and images: a `resnet18` run of wsol is rebuilt in PyTorch (torchvision's
ResNet-18, layer4 at stride 1, our checkpoint's tensors under the same names), each
method of pytorch-grad-cam reads layer4 for the GT class, and its map goes through the
official evaluation pipeline (float64 bicubic resize to the image size, min-max
normalization). The result is compared with the maps `wsol eval --save-cams` scored.

    pip install torch torchvision grad-cam safetensors pyyaml pillow
    for m in gradcam gradcam++ xgradcam layercam scorecam eigencam; do
      wsol eval --config RUN/config.yaml --checkpoint RUN/checkpoints/last.safetensors \
        --set eval.cam=$m --save-cams CAMS/$m --out CAMS/$m-metrics --quiet
    done
    python3 scripts/compare_pytorch_grad_cam.py --config RUN/config.yaml \
        --checkpoint RUN/checkpoints/last.safetensors --cams CAMS

Images must already be at data.image_size (as `wsol data synth` writes them), so both
sides see the same pixels. Prints, per method, the largest and mean absolute difference
over all pixels of all images (maps in [0, 1]).
"""
import argparse
import os

import cv2
import numpy as np
import torch
import torch.nn as nn
import torchvision
import yaml
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import load_file

METHODS = {
    "gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
    "layercam": LayerCAM, "scorecam": ScoreCAM, "eigencam": EigenCAM,
}


def resnet18(num_classes, checkpoint):
    m = torchvision.models.resnet18(weights=None)
    m.layer4[0].conv1.stride = (1, 1)
    m.layer4[0].downsample[0].stride = (1, 1)
    m.fc = nn.Linear(512, num_classes)
    missing, unexpected = m.load_state_dict(load_file(checkpoint), strict=False)
    assert all(k.endswith("num_batches_tracked") for k in missing) and not unexpected, (missing, unexpected)
    return m.eval()


def official_map(cam, size):
    """wsolevaluation: float64 bicubic resize, then min-max (constant -> zeros)."""
    m = cv2.resize(cam.astype(np.float64), (size, size), interpolation=cv2.INTER_CUBIC)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--cams", required=True, help="one folder per method, from wsol eval --save-cams")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--max-images", type=int, default=50)
    a = p.parse_args()
    cfg = yaml.safe_load(open(a.config))
    d = cfg["data"]
    assert cfg["model"]["backbone"] == "resnet18", "only resnet18 runs are rebuilt in PyTorch"
    size = d["image_size"]
    split = os.path.join(d["metadata_root"], cfg["eval"].get("split", "test"))
    ids = [l.strip() for l in open(os.path.join(split, "image_ids.txt")) if l.strip()][: a.max_images]
    labels = dict(l.strip().split(",") for l in open(os.path.join(split, "class_labels.txt")) if l.strip())
    mean, std = np.array(d.get("mean", [0.485, 0.456, 0.406]), np.float32), np.array(d.get("std", [0.229, 0.224, 0.225]), np.float32)
    model = resnet18(d["num_classes"], a.checkpoint)
    images = []
    for i in ids:
        img = Image.open(os.path.join(d["image_root"], i)).convert("RGB")
        assert img.size == (size, size), f"{i} is {img.size}, not {size}x{size}"
        x = (np.asarray(img, np.float32) / 255.0 - mean) / std
        images.append(torch.from_numpy(x.transpose(2, 0, 1).copy()))
    x = torch.stack(images)
    with torch.no_grad():
        fh, fw = model.layer4(model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x[:1])))))))).shape[2:]
    print(f"{len(ids)} images at {size}x{size}, layer4 maps {fh}x{fw}")
    for name in a.methods.split(","):
        cam = METHODS[name](model=model, target_layers=[model.layer4])
        # Keep pytorch-grad-cam's map at the layer's own size (its min-max scaling, no
        # resize); the official pipeline above does the resize.
        cam.get_target_width_height = lambda _x: (fw, fh)
        diffs = []
        for k, i in enumerate(ids):
            theirs = cam(input_tensor=x[k : k + 1], targets=[ClassifierOutputTarget(int(labels[i]))])[0]
            ours = np.load(os.path.join(a.cams, name, i + ".npy"))
            diffs.append(np.abs(official_map(theirs, size) - ours))
        diffs = np.stack(diffs)
        per_image = diffs.reshape(len(ids), -1).max(1)
        print(f"{name:10s} max |diff| {diffs.max():.2e}  mean {diffs.mean():.2e}  images with max < 1e-3: {(per_image < 1e-3).sum()}/{len(ids)}")


if __name__ == "__main__":
    main()
