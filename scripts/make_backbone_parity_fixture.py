#!/usr/bin/env python3
"""Writes tests/fixtures/backbone_parity/: PyTorch's outputs for each wsol backbone with
the CAM head, on a fixed input, with weights from a formula that tests/backbone_parity.rs
computes the same way (so no weights are committed).

    pip install torch torchvision numpy efficientnet-lite-pytorch==0.1.0
    python3 scripts/make_backbone_parity_fixture.py tests/fixtures/backbone_parity

Weights: every float tensor of the state dict, in sorted-name order t = 0, 1, ..., gets
u_i = ((i * 7919 + t * 104729) mod 2001) / 1000 - 1 (in float64, then float32), scaled
by kind: conv/linear weights sqrt(6 / fan_in) * u, biases 0.1 * u, batch-norm weight
1 + 0.2 * u, running_mean 0.1 * u, running_var 1 + 0.25 * (u + 1).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

CLASSES = 10


def resnet(depth):
    m = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=CLASSES)
    # layer4 at stride 1, as wsolevaluation's ResNet CAM (v1.5: the stride is on conv2).
    block = m.layer4[0]
    (block.conv2 if depth == 50 else block.conv1).stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    return m, lambda x: m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))


class VggCam(nn.Module):
    """wsolevaluation's VGG16 CAM: features without pool5, conv6 + ReLU, GAP, fc."""

    def __init__(self):
        super().__init__()
        self.features = torchvision.models.vgg16(weights=None).features[:30]
        self.conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=1)
        self.fc = nn.Linear(1024, CLASSES)

    def feats(self, x):
        return torch.relu(self.conv6(self.features(x)))

    def forward(self, x):
        return self.fc(self.feats(x).mean((2, 3)))


class InceptionCam(nn.Module):
    """wsolevaluation's InceptionCam from torchvision's modules: Conv2d_1a padded, ceil-mode
    pools, Mixed_6a at stride 1 / padding 1 (its pool too), a pool after Mixed_5d, the
    SPG_A3 conv head; its 1x1 SPG_A4 is written as the equal linear `fc` on the GAP;
    dropout left out."""

    def __init__(self):
        super().__init__()
        tv = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]:
            setattr(self, name, getattr(tv, name))
        self.Conv2d_1a_3x3.conv.padding = (1, 1)
        b = self.Mixed_6a
        b.branch3x3.conv.stride, b.branch3x3.conv.padding = (1, 1), (1, 1)
        b.branch3x3dbl_3.conv.stride, b.branch3x3dbl_3.conv.padding = (1, 1), (1, 1)
        b._forward = lambda x: [b.branch3x3(x), b.branch3x3dbl_3(b.branch3x3dbl_2(b.branch3x3dbl_1(x))),
                                F.max_pool2d(x, kernel_size=3, stride=1, padding=1)]
        self.SPG_A3_1b = nn.Sequential(nn.Conv2d(768, 1024, 3, padding=1), nn.ReLU())
        self.SPG_A3_2b = nn.Sequential(nn.Conv2d(1024, 1024, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(1024, CLASSES)

    def feats(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, ceil_mode=True)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        return self.SPG_A3_2b(self.SPG_A3_1b(x))

    def forward(self, x):
        return self.fc(self.feats(x).mean((2, 3)))


def efficientnet_lite0():
    """The package's EfficientNet-Lite0 with SAME padding from the input size, no
    drop-connect; features end at the head's ReLU6, logits = fc(GAP) (the package's
    dropout left out)."""
    from efficientnet_lite_pytorch import EfficientNet

    m = EfficientNet.from_name("efficientnet-lite0", image_size=None, num_classes=CLASSES, drop_connect_rate=0.0)
    return m, m.extract_features, lambda x: m._fc(m.extract_features(x).mean((2, 3)))


def formula_weights(model):
    sd = model.state_dict()
    names = sorted(k for k, v in sd.items() if v.is_floating_point())
    for t, name in enumerate(names):
        v = sd[name]
        i = np.arange(v.numel(), dtype=np.int64)
        u = ((i * 7919 + t * 104729) % 2001).astype(np.float64) / 1000.0 - 1.0
        if name.endswith("running_mean"):
            w = 0.1 * u
        elif name.endswith("running_var"):
            w = 1.0 + 0.25 * (u + 1.0)
        elif name.endswith(".bias"):
            w = 0.1 * u
        elif v.dim() == 1:
            w = 1.0 + 0.2 * u
        else:
            fan_in = v.numel() // v.shape[0]
            w = np.sqrt(6.0 / fan_in) * u
        v.copy_(torch.from_numpy(w.astype(np.float32)).reshape(v.shape))


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    np.save(os.path.join(out, "input.npy"), x.numpy())
    models = {"resnet18": resnet(18), "resnet50": resnet(50)}
    vgg = VggCam()
    models["vgg16"] = (vgg, vgg.feats)
    inception = InceptionCam()
    models["inception_v3"] = (inception, inception.feats)
    models = {name: (m, feats, m) for name, (m, feats) in models.items()}
    models["efficientnet_lite0"] = efficientnet_lite0()
    with torch.no_grad():
        for name, (m, feats, logits) in models.items():
            formula_weights(m)
            m.eval()
            np.save(os.path.join(out, f"{name}_features.npy"), feats(x).numpy())
            np.save(os.path.join(out, f"{name}_logits.npy"), logits(x).numpy())
            # Train mode: batch statistics in every batch norm.
            m.train()
            np.save(os.path.join(out, f"{name}_train_logits.npy"), logits(x).numpy())
            print(name, "ok")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/backbone_parity")
