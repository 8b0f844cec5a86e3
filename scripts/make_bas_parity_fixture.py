#!/usr/bin/env python3
"""Writes tests/fixtures/bas_parity/{resnet50,vgg16,inception_v3}.json: the outputs of BAS's
own model code (Wu et al., CVPR 2022; github.com/wpy1999/BAS, CUB/Model/{resnet,vgg,
inception}.py) on weights
from a formula that tests/cli/bas_parity.rs computes the same way, so no weights are
committed and nothing of their code is copied here.

    git clone https://github.com/wpy1999/BAS /tmp/BAS      # any checkout of their repo
    python3 scripts/make_bas_parity_fixture.py /tmp/BAS tests/fixtures/bas_parity

(tested with torch 2.5.1 on a CPU). Their modules are imported as they are; what this
script changes around them, and why:
* `.cuda()` returns the tensor itself (their forward moves buffers to the GPU);
* `skimage` is stubbed when missing (imported by their vgg.py, used only by inference);
* their forward writes the foreground map into `torch.zeros(batch, 1, 28, 28)` (28: the
  map at a 224 input); the `torch` their modules see is wrapped so that buffer takes the
  size of this input's map (112 px: 14x14), which is what it holds at 224;
* VGG16's `avg_pool` is `AvgPool2d(14)`, the global average at 224; it is replaced by the
  global average at any size.

Weights, by our name (theirs mapped: ResNet-50's are the same; VGG16's `convA_B` are
torchvision's `features.N`; Inception-v3's `classifier.N` is our `classifier_cls.N`): element i of the tensor named `name` gets
u_i = ((i * 7919 + t * 104729) mod 2001) / 1000 - 1 with t = FNV-1a 32-bit of the name's
bytes mod 100003 (float64, then float32), scaled by kind: conv weights sqrt(6 / fan_in) u,
biases 0.1 u, batch-norm weights 1 + 0.2 u, running means 0.1 u, running variances
1 + 0.25 (u + 1).

Recorded, in eval mode and in train mode (batch statistics; their deep copies for the
erased pass), for 2 images of 112 px (the input: the weight formula's u for the name "input", float32)
and labels = each image's top-scored class (so the
GT-class score is positive and the background ratio is not masked to 0): logits (score_1),
foreground scores (score_2), the GT class's foreground map, the GT-class scores of the
whole and of the erased features, the loss terms (CE of each score, background ratio,
area) and the total as their train.py forms it; in eval mode also the inference map
(the mean of the top-k classes' maps, k as their BAS_inference.py: 200 on ResNet-50, 80 on
VGG16). `noise_*`: the largest difference between this float32 run and the same in float64,
the rounding the Rust test's tolerance must allow.
"""
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = 200  # hard-coded in their classifiers
SIZE = 112
VGG_CONVS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
             "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
VGG_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
TOP_K = {"resnet50": 200, "vgg16": 80, "inception_v3": 200}  # their BAS_inference.py
AREA = {"resnet50": 1.2, "vgg16": 0.7, "inception_v3": 1.0}
FG = {"resnet50": 0.5, "vgg16": 0.0, "inception_v3": 0.5}


def fnv1a(name):
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def hashed(name, n):
    t = fnv1a(name) % 100003
    i = np.arange(n, dtype=np.int64)
    return ((i * 7919 + t * 104729) % 2001).astype(np.float64) / 1000.0 - 1.0


def formula(name, shape):
    n = int(np.prod(shape))
    u = hashed(name, n)
    if name.endswith("running_mean"):
        w = 0.1 * u
    elif name.endswith("running_var"):
        w = 1.0 + 0.25 * (u + 1.0)
    elif name.endswith(".bias"):
        w = 0.1 * u
    elif len(shape) == 1:
        w = 1.0 + 0.2 * u
    else:
        w = np.sqrt(6.0 / (n // shape[0])) * u
    return w.astype(np.float32).reshape(shape)


def ours(arch, name):
    if arch == "vgg16" and name.split(".")[0] in VGG_CONVS:
        k = VGG_CONVS.index(name.split(".")[0])
        return f"features.{VGG_INDEX[k]}.{name.split('.', 1)[1]}"
    if arch == "inception_v3" and name.startswith("classifier."):
        return "classifier_cls." + name.split(".", 1)[1]
    return name


def set_weights(model, arch):
    with torch.no_grad():
        for name, v in model.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.from_numpy(formula(ours(arch, name), tuple(v.shape))))


class TorchView(types.ModuleType):
    """`torch` as their modules see it: `zeros(b, 1, 28, 28)` sized to this input's map."""

    def __init__(self, side):
        super().__init__("torch")
        self.side = side

    def __getattr__(self, name):
        return getattr(torch, name)

    def zeros(self, *shape, **kw):
        if shape[1:] == (1, 28, 28):
            shape = (shape[0], 1, self.side, self.side)
        return torch.zeros(*shape, **kw)


def load(bas_root):
    cub = os.path.join(bas_root, "CUB")
    sys.path.insert(0, cub)
    try:
        import skimage  # noqa: F401
    except ImportError:
        stub = types.ModuleType("skimage")
        stub.measure = types.ModuleType("skimage.measure")
        sys.modules["skimage"], sys.modules["skimage.measure"] = stub, stub.measure
    torch.Tensor.cuda = lambda self, *a, **k: self
    import Model.resnet as resnet
    import Model.vgg as vgg
    import Model.inception as inception
    side = SIZE // 8  # the tap: layer3 (stride 8) on ResNet-50, conv4_3 on VGG16, Mixed_6e
    resnet.torch = vgg.torch = inception.torch = TorchView(side)
    args = types.SimpleNamespace(num_classes=CLASSES)
    r = resnet.model(args, pretrained=False)
    v = vgg.model(args, pretrained=False)
    v.avg_pool = nn.AdaptiveAvgPool2d(1)
    i = inception.model(args, pretrained=False)
    return {"resnet50": r, "vgg16": v, "inception_v3": i}


def run(m, arch, x, train):
    """One forward as train.py (labels, N=1) and, in eval mode, as BAS_inference.py."""
    m.train(train)
    with torch.no_grad():
        m.eval()
        labels = m(x, torch.zeros(len(x), dtype=torch.long))[0].argmax(1)
    m.train(train)
    with torch.no_grad():
        score_1, score_2 = m(x, labels, 1)
        loss_1 = F.cross_entropy(score_1, labels)
        loss_2 = F.cross_entropy(score_2, labels)
        loss_3 = m.bas_loss()
        total = loss_1 + loss_2 * FG[arch] + loss_3  # their train.py: 0.0 x loss_2 on VGG
        x_sum, x_res = m.x_sum.clone(), m.x_erase_sum.clone()
        res = x_res / (x_sum + 1e-8)
        res[x_res >= x_sum] = 0
        area = m.x_saliency.flatten(1).mean(1)
        out = {
            "labels": labels.tolist(),
            "logits": score_1, "fg_logits": score_2, "fg_map": m.x_saliency[:, 0].clone(),
            "score": x_sum, "erased_score": x_res,
            "cls_loss": loss_1, "fg_loss": loss_2, "bg_loss": res.mean(), "area_loss": area.mean(),
            "bas_loss": loss_3, "total_loss": total,
        }
        if not train:
            m(x, labels, TOP_K[arch])
            out["inference_map"] = m.x_saliency[:, 0].clone()
    return out


def main(bas_root, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    x = torch.from_numpy(hashed("input", 2 * 3 * SIZE * SIZE).astype(np.float32).reshape(2, 3, SIZE, SIZE))
    for arch, m in load(bas_root).items():
        set_weights(m, arch)
        record = {"size": SIZE, "classes": CLASSES, "top_k": TOP_K[arch],
                  "area_weight": AREA[arch], "fg_weight": FG[arch]}
        for mode, train in [("eval", False), ("train", True)]:
            set_weights(m, arch)  # train mode moves the running statistics
            m.float()
            o32 = run(m, arch, x, train)
            set_weights(m, arch)
            m.double()
            torch.set_default_dtype(torch.float64)  # their buffers (torch.zeros) too
            o64 = run(m, arch, x.double(), train)
            torch.set_default_dtype(torch.float32)
            m.float()
            assert o32["labels"] == o64["labels"], "float32 and float64 pick the same labels"
            for k, v in o32.items():
                if k == "labels":
                    record[f"{mode}_labels"] = v
                    continue
                record[f"{mode}_{k}"] = v.flatten().tolist()
                record[f"noise_{mode}_{k}"] = (v.double() - o64[k]).abs().max().item()
            print(arch, mode, {k: float(v.flatten()[0]) for k, v in o32.items() if k.endswith("loss")})
        with open(os.path.join(out_dir, f"{arch}.json"), "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/bas_parity")
