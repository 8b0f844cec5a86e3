#!/usr/bin/env python3
"""Writes tests/fixtures/bagcams_parity/resnet18.json: the maps of BagCAMs' own code (Zhu et
al., ECCV 2022; github.com/zh460045050/BagCAMs, libs/cams/bagcams.py and the base class in
libs/cams/basic.py, imported as they are) on wsol's ResNet-18 CAM model with weights from
the formula of scripts/make_bas_parity_fixture.py (FNV-1a of each tensor's name), which
tests/cli/bagcams.rs computes the same way: no weights are committed.

    git clone https://github.com/zh460045050/BagCAMs /tmp/BagCAMs   # any checkout
    python3 scripts/make_bagcams_parity_fixture.py /tmp/BagCAMs tests/fixtures/bagcams_parity

(tested with torch 2.5.1 / torchvision 0.20.1 on a CPU). What this script puts around
their code, and why:
* `collections.Sequence` is aliased to `collections.abc.Sequence` (their modules import
  it; Python 3.10 removed the alias; they never use it);
* `.cuda()` returns the tensor itself (their `backward` moves a buffer to the GPU);
* the model is split as their wrapper wants it: `extractor` = torchvision's ResNet-18 up
  to layer4 (layer4 at stride 1, as wsolevaluation's and wsol's ResNet CAM), `classifier` =
  a 1x1 convolution holding wsol's `fc` (what their CAMClassifier is: a 1x1 conv applied
  to the global average).

Recorded, for 2 images of SIZE px (the formula's u for the name "input") at their
`target_layer` = layer4 (wsol's last layer) and layer3: the logits; the classes the maps
are for (image 0: its top class, image 1: its lowest, so one target logit is negative:
their gradient is of log(logit), i.e. d logit / logit, which flips sign there); per layer
their maps (`generate`: bilinear to the input size, min-max normalized) and `noise`, the
largest difference between this float32 run and the same in float64.

Printed: how far their maps are from the same formula on plain gradients. Their wrapper
hooks every module, and the hook of each nn.ReLU returns relu(grad_in): gradients
crossing a ReLU module on the way back are clamped at zero (guided backpropagation).
Between layer4's output and the logits there is no ReLU, so at the last layer their
gradients are plain; at layer3 they cross layer4's ReLUs, which is why the layer3 maps are
recorded (wsol's `bagcams` runs its backward guided).
"""
import collections
import collections.abc
import importlib.util
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_bas_parity_fixture import formula, hashed  # noqa: E402  (BAS's fixture's weights)

CLASSES = 10
SIZE = 64


class Extractor(nn.Module):
    """torchvision's ResNet-18 trunk under its own names, so `target_layer` is `layer4`."""

    def __init__(self, m):
        super().__init__()
        for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]:
            setattr(self, name, getattr(m, name))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build():
    m = torchvision.models.resnet18(weights=None, num_classes=CLASSES)
    m.layer4[0].conv1.stride = (1, 1)
    m.layer4[0].downsample[0].stride = (1, 1)
    with torch.no_grad():
        for name, v in m.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.from_numpy(formula(name, tuple(v.shape))))
    classifier = nn.Conv2d(512, CLASSES, 1)
    with torch.no_grad():
        classifier.weight.copy_(m.fc.weight.view(CLASSES, 512, 1, 1))
        classifier.bias.copy_(m.fc.bias)
    extractor = Extractor(m)
    extractor.eval()
    classifier.eval()
    return extractor, classifier


def load_theirs(root):
    collections.Sequence = collections.abc.Sequence
    torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path.insert(0, root)
    from libs.cams.bagcams import BagCAMs
    return BagCAMs


def their_maps(BagCAMs, x, targets, layer):
    extractor, classifier = build()
    if x.dtype == torch.float64:
        extractor.double()
        classifier.double()
    cams = BagCAMs(extractor=extractor, classifier=classifier)
    logits, _ = cams.forward(x)
    cams.backward(ids=targets)
    maps = cams.generate(target_layer=layer).squeeze(1).detach()
    feats, grads = cams.fmap_pool[layer], cams.grad_pool[layer]
    cams.remove_hook()
    return logits.detach(), maps, feats, grads


def plain_formula_map(x, targets, layer):
    """The same map on plain gradients of log(logit) (no hooks): what guided ReLUs change."""
    extractor, classifier = build()
    seen = {}
    getattr(extractor, layer).register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    f = extractor(x)
    logits = classifier(F.adaptive_avg_pool2d(f, 1)).flatten(1)
    a = seen["a"]
    score = logits.gather(1, targets[:, None]).log().sum()
    (g,) = torch.autograd.grad(score, a)
    t = g * a
    m = torch.relu((t.mean((2, 3), keepdim=True) + 1) * t).sum(1, keepdim=True)
    m = F.interpolate(m, x.shape[2:], mode="bilinear", align_corners=False).flatten(1)
    m = m - m.min(1, keepdim=True)[0]
    return (m / m.max(1, keepdim=True)[0]).view(x.shape[0], *x.shape[2:]).detach()


def main(root, out_dir):
    BagCAMs = load_theirs(root)
    x = torch.from_numpy(hashed("input", 2 * 3 * SIZE * SIZE).astype("float32")).view(2, 3, SIZE, SIZE)
    extractor, classifier = build()
    with torch.no_grad():
        logits = classifier(F.adaptive_avg_pool2d(extractor(x), 1)).flatten(1)
    targets = torch.tensor([int(logits[0].argmax()), int(logits[1].argmin())])
    layers = []
    for layer in ["layer4", "layer3"]:
        logits32, maps32, _, _ = their_maps(BagCAMs, x, targets, layer)
        torch.set_default_dtype(torch.float64)
        _, maps64, _, _ = their_maps(BagCAMs, x.double(), targets, layer)
        torch.set_default_dtype(torch.float32)
        noise = (maps32.double() - maps64).abs().max().item()
        assert all(float(m.max()) == 1.0 for m in maps32), "no constant map"
        plain = plain_formula_map(x, targets, layer)
        print(f"{layer}: their map vs plain-gradient formula {(maps32 - plain).abs().max().item():.2e}; "
              f"float32 vs float64 {noise:.2e}")
        layers.append({"layer": layer, "maps": [round(v, 8) for v in maps32.flatten().tolist()], "noise": noise})
    target_logits = logits32.gather(1, targets[:, None]).flatten().tolist()
    assert target_logits[0] > 0 > target_logits[1], target_logits
    print(f"target logits {target_logits}")

    os.makedirs(out_dir, exist_ok=True)
    record = {
        "size": SIZE,
        "classes": CLASSES,
        "targets": targets.tolist(),
        "logits": logits32.flatten().tolist(),
        "layers": layers,
    }
    with open(os.path.join(out_dir, "resnet18.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/bagcams_parity")
