#!/usr/bin/env python3
"""Writes tests/fixtures/backbone_parity/: PyTorch's outputs for each wsol backbone with
the CAM head, and for VGG16, ResNet-50 and Inception-v3 with the SPG head (logits, its
three auxiliary maps, its loss) and the ACoL head (logits, fused map, loss) in
wsolevaluation's layouts, on a fixed input, with weights from a formula that
tests/backbone_parity.rs computes the same way (so no weights are committed).

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


SPG_LABELS = [3, 7]


def add_spg_head(m, b1_channels, b2_channels, width, channels, c_width):
    """SPG's branches (Zhang et al. 2018) with wsolevaluation's names."""
    m.SPG_B_1a = nn.Sequential(nn.Conv2d(b1_channels, width, 3, padding=1), nn.ReLU())
    m.SPG_B_2a = nn.Sequential(nn.Conv2d(b2_channels, width, 3, padding=1), nn.ReLU())
    m.SPG_B_shared = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))
    m.SPG_C = nn.Sequential(nn.Conv2d(channels, c_width, 3, padding=1), nn.ReLU(), nn.Conv2d(c_width, 1, 1))
    m.SPG_A4 = nn.Conv2d(channels, CLASSES, 1)
    return m


def spg_outputs(m, taps, x):
    """Logits, the three auxiliary maps at the input size and the loss for SPG_LABELS."""
    f1, f2, feats = taps(x)
    b1 = m.SPG_B_shared(m.SPG_B_1a(f1))
    b2 = m.SPG_B_shared(m.SPG_B_2a(f2))
    c = m.SPG_C(feats)
    maps = m.SPG_A4(feats)
    logits = maps.mean((2, 3))
    size = x.shape[2:]
    up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0]
    b1, b2, c = up(b1), up(b2), up(c)
    labels = torch.tensor(SPG_LABELS)
    cam = up(maps[torch.arange(len(labels)), labels][:, None]).flatten(1)
    lo, hi = cam.min(1, keepdim=True)[0], cam.max(1, keepdim=True)[0]
    attention = (cam - lo) / (hi - lo)
    b1p, b2p = torch.sigmoid(b1.flatten(1)), torch.sigmoid(b2.flatten(1))
    loss = F.cross_entropy(logits, labels)
    for z, source, (high, low) in [(b2, attention, (0.7, 0.01)), (b1, b2p, (0.5, 0.05)),
                                   (c, (b1p + b2p) / 2, (0.7, 0.1))]:
        fg = source > high
        few = fg.sum(1, keepdim=True) < 30
        fg = torch.where(few, source > source.max(1, keepdim=True)[0] * 0.7, fg)
        bg = source < low
        valid = fg | bg
        target = (fg & ~bg).float()
        loss = loss + F.binary_cross_entropy_with_logits(z.flatten(1)[valid], target[valid])
    return logits, torch.stack([b1, b2, c]), loss


def spg_models():
    r = resnet(50)[0]
    del r.fc
    add_spg_head(r, 1024, 1024, 1024, 2048, 512)

    def resnet_taps(x):
        f1 = r.layer3[0](r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))))
        f2 = r.layer3[1:](f1)
        return f1, f2, r.layer4(f2)

    v = nn.Module()
    v.features = torchvision.models.vgg16(weights=None).features[:30]
    v.features[23] = nn.MaxPool2d(3, stride=2, padding=1)
    v.SPG_A_3 = nn.Sequential(nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(), nn.Conv2d(512, 512, 3, padding=1), nn.ReLU())
    add_spg_head(v, 512, 512, 512, 512, 512)

    def vgg_taps(x):
        f1 = v.features[:24](x)
        f2 = v.features[24:](f1)
        return f1, f2, v.SPG_A_3(f2)

    i = InceptionCam()
    del i.fc
    add_spg_head(i, 288, 768, 512, 1024, 512)

    def inception_taps(x):
        x = i.Conv2d_2b_3x3(i.Conv2d_2a_3x3(i.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = i.Conv2d_4a_3x3(i.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = i.Mixed_5d(i.Mixed_5c(i.Mixed_5b(x)))
        f1 = F.max_pool2d(x, kernel_size=3, stride=2, ceil_mode=True)
        f2 = i.Mixed_6d(i.Mixed_6c(i.Mixed_6b(i.Mixed_6a(f1))))
        return f1, f2, i.SPG_A3_2b(i.SPG_A3_1b(i.Mixed_6e(f2)))

    return {"resnet50": (r, resnet_taps), "vgg16": (v, vgg_taps), "inception_v3": (i, inception_taps)}


def add_acol_head(m, channels, width=1024):
    for name in ["classifier_A", "classifier_B"]:
        setattr(m, name, nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(width, CLASSES, 1)))
    return m


def acol_outputs(m, feats, x, erase_threshold=0.6):
    """ACoL (Zhang et al. 2018): logits of branch A, the fused map max(norm A, norm B) of
    the labels' class, CE(A) + CE(B) with B on features erased where norm A >= threshold."""
    labels = torch.tensor(SPG_LABELS)
    f = feats(x)
    a = m.classifier_A(f)
    rows = torch.arange(len(labels))

    def norm(t):
        flat = t.flatten(1)
        lo, hi = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
        return ((flat - lo) / (hi - lo)).reshape(t.shape)

    att = norm(a[rows, labels])
    b = m.classifier_B(f * (att < erase_threshold).float()[:, None])
    logits = a.mean((2, 3))
    loss = F.cross_entropy(logits, labels) + F.cross_entropy(b.mean((2, 3)), labels)
    cam = torch.maximum(att, norm(b[rows, labels]))
    return logits, cam, loss


def acol_models():
    r = resnet(50)[0]
    del r.fc
    add_acol_head(r, 2048)
    resnet_feats = lambda x: r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))

    v = nn.Module()
    v.features = torchvision.models.vgg16(weights=None).features
    for k in [4, 9, 16, 23]:
        v.features[k] = nn.MaxPool2d(3, stride=2, padding=1)
    v.features[30] = nn.MaxPool2d(3, stride=1, padding=1)
    add_acol_head(v, 512)
    vgg_feats = lambda x: F.avg_pool2d(v.features(x), kernel_size=3, stride=1, padding=1)

    i = InceptionCam()
    del i.fc, i.SPG_A3_1b, i.SPG_A3_2b
    add_acol_head(i, 768)

    def inception_feats(x):
        x = i.Conv2d_2b_3x3(i.Conv2d_2a_3x3(i.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = i.Conv2d_4a_3x3(i.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = i.Mixed_5d(i.Mixed_5c(i.Mixed_5b(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, ceil_mode=True)
        return i.Mixed_6e(i.Mixed_6d(i.Mixed_6c(i.Mixed_6b(i.Mixed_6a(x)))))

    return {"resnet50": (r, resnet_feats), "vgg16": (v, vgg_feats), "inception_v3": (i, inception_feats)}


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
        for name, (m, taps) in spg_models().items():
            formula_weights(m)
            m.eval()
            logits, aux, loss = spg_outputs(m, taps, x)
            np.save(os.path.join(out, f"{name}_spg_logits.npy"), logits.numpy())
            np.save(os.path.join(out, f"{name}_spg_aux.npy"), aux.numpy())
            np.save(os.path.join(out, f"{name}_spg_loss.npy"), loss.reshape(1).numpy())
            print(name, "spg ok, loss", loss.item())
        for name, (m, feats) in acol_models().items():
            formula_weights(m)
            m.eval()
            logits, cam, loss = acol_outputs(m, feats, x)
            np.save(os.path.join(out, f"{name}_acol_logits.npy"), logits.numpy())
            np.save(os.path.join(out, f"{name}_acol_cam.npy"), cam.numpy())
            np.save(os.path.join(out, f"{name}_acol_loss.npy"), loss.reshape(1).numpy())
            print(name, "acol ok, loss", loss.item())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/backbone_parity")
