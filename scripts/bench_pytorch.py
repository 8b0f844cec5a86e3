#!/usr/bin/env python3
"""The PyTorch side of `wsol bench train`: the same model and training step (forward,
cross-entropy, backward, SGD with momentum 0.9 / weight decay 1e-4) on random input,
median step time after 2 warm-up steps, and peak RSS. Run both on one machine with the
same threads, e.g.

    python3 scripts/bench_pytorch.py --backbone resnet18 --batch 8 --size 224 --threads 2
    wsol bench train --backbone resnet18 --batch 8 --size 224 --threads 2

`resnet18`/`resnet50` are torchvision's with layer4 at stride 1 and a GAP + linear CAM
head, `vgg16` is wsolevaluation's CAM VGG (no pool5, conv6 512->1024), as wsol builds
them. `--head acol|adl|spg` builds wsolevaluation's layouts of those methods on the same
backbones, as `wsol bench train --head` does (same layers, losses and erasing/masking). `--device cuda` times the step on the GPU (synchronized) and also reports the peak
GPU memory. `--cam cam|gradcam` times evaluation instead, as `wsol bench eval`: the
forward pass in eval mode (under `no_grad`), then the maps of each image's class (CAM
from the classifier's weights; Grad-CAM from the gradient of the class score with
respect to the last feature map), read back. Needs torch and torchvision; not part of CI.
"""
import argparse
import sys
import json
import resource
import time

import torch
import torch.nn as nn
import torchvision


def resnet_features(depth):
    """torchvision's ResNet up to layer4, layer4 at stride 1 (wsolevaluation's CAM ResNet)."""
    m = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    block = m.layer4[0]
    (block.conv2 if depth == 50 else block.conv1).stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    return m


def resnet_stem(m):
    return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)


class Adl(nn.Module):
    """Attention-based dropout (Choe & Shim 2019): the drop mask with probability
    `drop_rate`, else the attention's sigmoid; the identity at evaluation."""

    def __init__(self, drop_rate=0.75, drop_threshold=0.9):
        super().__init__()
        self.drop_rate, self.drop_threshold = drop_rate, drop_threshold

    def forward(self, x):
        if not self.training:
            return x
        attention = x.mean(1, keepdim=True)
        if torch.rand(1).item() + self.drop_rate >= 1.0:
            peak = attention.detach().flatten(1).amax(1).view(-1, 1, 1, 1)
            return x * (attention.detach() < peak * self.drop_threshold).to(x.dtype)
        return x * torch.sigmoid(attention)


def cross_entropy_loss(out, y):
    return nn.functional.cross_entropy(out["logits"], y)


class ResNetCam(nn.Module):
    def __init__(self, depth, classes, adl=False):
        super().__init__()
        m = resnet_features(depth)
        if adl:  # wsolevaluation's places: after layer3.0, layer4.0 and layer4's last block
            m.layer3[0] = nn.Sequential(m.layer3[0], Adl())
            m.layer4[0] = nn.Sequential(m.layer4[0], Adl())
            m.layer4[-1] = nn.Sequential(m.layer4[-1], Adl())
        self.features = nn.Sequential(resnet_stem(m), m.layer1, m.layer2, m.layer3, m.layer4)
        self.fc = nn.Linear(m.fc.in_features, classes)

    def forward(self, x):
        return {"logits": self.fc(self.features(x).mean((2, 3)))}

    loss = staticmethod(cross_entropy_loss)


VGG_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg_features(head, large_feature_map=False):
    """torchvision's VGG16 convs with wsolevaluation's per-method pools (see src/models/vgg.rs)."""
    layers, c_in, pools = [], 3, 0
    for v in VGG_PLAN:
        if v != "M":
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
            continue
        pools += 1
        if head == "adl" and pools in (4, 5):
            layers.append(Adl())  # after conv4_3 and conv5_3
        if head == "acol":
            last = pools == 5 or (pools == 4 and large_feature_map)
            layers.append(nn.MaxPool2d(3, stride=1 if last else 2, padding=1))
            if pools == 5:
                layers.append(nn.AvgPool2d(3, stride=1, padding=1))
        elif pools < 5:
            layers.append(nn.MaxPool2d(3, 2, padding=1) if head == "spg" and pools == 4 else nn.MaxPool2d(2, 2))
        if head == "adl" and pools == 3:
            layers.append(Adl())  # after pool3
    return nn.Sequential(*layers)


class VggCam(nn.Module):
    def __init__(self, classes, adl=False):
        super().__init__()
        self.features = vgg_features("adl" if adl else "cam")
        self.conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=1)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        return {"logits": self.fc(torch.relu(self.conv6(self.features(x))).mean((2, 3)))}

    loss = staticmethod(cross_entropy_loss)


class InceptionMixed6a(nn.Module):
    """wsolevaluation's Mixed_6a: torchvision's InceptionB at stride 1, padding 1."""

    def __init__(self, c_in):
        super().__init__()
        conv = torchvision.models.inception.BasicConv2d
        self.branch3x3 = conv(c_in, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_1 = conv(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, kernel_size=3, padding=1)

    def forward(self, x):
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), dbl, nn.functional.max_pool2d(x, 3, stride=1, padding=1)], 1)


class InceptionCam(nn.Module):
    """wsolevaluation's CAM Inception-v3 (see src/models/inception.rs): torchvision's blocks
    to Mixed_6e, padded first conv, ceil-mode pools, an extra pool after Mixed_5d, Mixed_6a
    at stride 1, then SPG_A3_1b/2b (3x3, 768->1024->1024) and GAP + linear."""

    def __init__(self, classes):
        super().__init__()
        inc = torchvision.models.inception
        conv = inc.BasicConv2d
        pool = lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.features = nn.Sequential(
            conv(3, 32, kernel_size=3, stride=2, padding=1), conv(32, 32, kernel_size=3),
            conv(32, 64, kernel_size=3, padding=1), pool(),
            conv(64, 80, kernel_size=1), conv(80, 192, kernel_size=3), pool(),
            inc.InceptionA(192, 32), inc.InceptionA(256, 64), inc.InceptionA(288, 64),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            InceptionMixed6a(288), inc.InceptionC(768, 128), inc.InceptionC(768, 160),
            inc.InceptionC(768, 160), inc.InceptionC(768, 192),
            nn.Conv2d(768, 1024, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        return {"logits": self.fc(self.features(x).mean((2, 3)))}

    loss = staticmethod(cross_entropy_loss)


def pad_same(x, k, stride):
    """TensorFlow's SAME padding (more on the bottom/right), as src/models/efficientnet.rs."""
    h, w = x.shape[2:]
    pads = []
    for n in (w, h):
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return nn.functional.pad(x, pads)


class ConvSame(nn.Conv2d):
    def forward(self, x):
        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))


def conv_bn(c_in, c_out, k=1, stride=1, groups=1, relu6=True):
    """conv (no bias, SAME) -> batch norm (TensorFlow's eps 1e-3, momentum 0.01) [-> ReLU6]."""
    layers = [ConvSame(c_in, c_out, k, stride, groups=groups, bias=False), nn.BatchNorm2d(c_out, 1e-3, 0.01)]
    return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if relu6 else []))


class MbConv(nn.Module):
    def __init__(self, c_in, c_out, k, stride, expand):
        super().__init__()
        mid = c_in * expand
        self.block = nn.Sequential(*([conv_bn(c_in, mid)] if expand != 1 else []),
                                   conv_bn(mid, mid, k, stride, groups=mid), conv_bn(mid, c_out, relu6=False))
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.block(x)
        return y + x if self.skip else y


class EfficientNetCam(nn.Module):
    """EfficientNet-Lite0 (see src/models/efficientnet.rs): ReLU6, no squeeze-excitation,
    no drop-connect, SAME padding; GAP + linear on the 1280-channel head."""

    STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]

    def __init__(self, classes):
        super().__init__()
        blocks = [conv_bn(3, 32, 3, 2)]
        for repeats, k, stride, expand, c_in, c_out in self.STAGES:
            blocks += [MbConv(c_in if r == 0 else c_out, c_out, k, stride if r == 0 else 1, expand)
                       for r in range(repeats)]
        self.features = nn.Sequential(*blocks, conv_bn(320, 1280))
        self.fc = nn.Linear(1280, classes)

    def forward(self, x):
        return {"logits": self.fc(self.features(x).mean((2, 3)))}

    loss = staticmethod(cross_entropy_loss)


def normalize_maps(maps):
    """Min-max normalization of each [h, w] map of [B, h, w]."""
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def class_map(maps, y):
    return maps[torch.arange(len(y), device=y.device), y]


class Acol(nn.Module):
    """ACoL (Zhang et al. 2018): two branches of class maps; B sees the features with A's
    confident region erased. Loss CE(A) + CE(B)."""

    def __init__(self, backbone, classes, erase_threshold=0.6, width=1024):
        super().__init__()
        if backbone == "vgg16":
            self.features, c = vgg_features("acol"), 512
        else:
            m = resnet_features(int(backbone.removeprefix("resnet")))
            self.features = nn.Sequential(resnet_stem(m), m.layer1, m.layer2, m.layer3, m.layer4)
            c = m.fc.in_features
        branch = lambda: nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, classes, 1))
        self.classifier_A, self.classifier_B = branch(), branch()
        self.erase_threshold = erase_threshold

    def forward(self, x):
        features = self.features(x)
        maps_a = self.classifier_A(features)
        return {"logits": maps_a.mean((2, 3)), "features": features, "maps_a": maps_a}

    def loss(self, out, y):
        attention = normalize_maps(class_map(out["maps_a"].detach(), y))
        keep = (attention < self.erase_threshold).to(attention.dtype).unsqueeze(1)
        logits_b = self.classifier_B(out["features"] * keep).mean((2, 3))
        return nn.functional.cross_entropy(out["logits"], y) + nn.functional.cross_entropy(logits_b, y)


def spg_mask(attention, high, low):
    """SPG's self-produced mask: (target, valid) over [B, L]."""
    a = attention.detach()
    above = a > high
    few = above.sum(1, keepdim=True) < 30
    fallback = a > a.amax(1, keepdim=True) * 0.7
    foreground = torch.where(few, fallback, above)
    background = a < low
    target = (foreground & ~background).to(a.dtype)
    valid = (foreground | background).to(a.dtype)
    return target, valid


def masked_bce(logits, target, valid):
    per_pixel = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


class Spg(nn.Module):
    """SPG (Zhang et al. 2018): a 1x1 class-map classifier plus branches B1, B2 and C
    trained on masks the network produces itself (see src/models/spg_head.rs)."""

    def __init__(self, backbone, classes):
        super().__init__()
        conv3 = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
        if backbone == "vgg16":
            f = vgg_features("spg")  # stage ends: pool4 (B1's tap), conv5_3 (B2's)
            self.to_b1, self.to_b2 = f[:24], f[24:]
            self.to_out = nn.Sequential(conv3(512, 512), nn.ReLU(inplace=True), conv3(512, 512), nn.ReLU(inplace=True))
            w, c = 512, 512
        else:
            m = resnet_features(int(backbone.removeprefix("resnet")))
            self.to_b1 = nn.Sequential(resnet_stem(m), m.layer1, m.layer2, m.layer3[0])
            self.to_b2 = m.layer3[1:]
            self.to_out = m.layer4
            w, c = 256 * (4 if backbone == "resnet50" else 1), m.fc.in_features  # layer3's width
        self.b1a = nn.Sequential(conv3(w, w), nn.ReLU(inplace=True))
        self.b2a = nn.Sequential(conv3(w, w), nn.ReLU(inplace=True))
        self.shared = nn.Sequential(conv3(w, w), nn.ReLU(inplace=True), nn.Conv2d(w, 1, 1))
        self.c = nn.Sequential(conv3(c, 512), nn.ReLU(inplace=True), nn.Conv2d(512, 1, 1))
        self.classes = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        size = x.shape[2:]
        f1 = self.to_b1(x)
        f2 = self.to_b2(f1)
        features = self.to_out(f2)
        up = lambda m: nn.functional.interpolate(m, size=size, mode="bilinear", align_corners=False).squeeze(1)
        aux = [up(self.shared(self.b1a(f1))), up(self.shared(self.b2a(f2))), up(self.c(features))]
        maps = self.classes(features)
        return {"logits": maps.mean((2, 3)), "maps": maps, "aux": aux, "size": size}

    def loss(self, out, y):
        b1, b2, c = (a.flatten(1) for a in out["aux"])
        cam = class_map(out["maps"].detach(), y).unsqueeze(1)
        attention = normalize_maps(nn.functional.interpolate(cam, size=out["size"], mode="bilinear",
                                                             align_corners=False).squeeze(1)).flatten(1)
        b1_prob, b2_prob = torch.sigmoid(b1.detach()), torch.sigmoid(b2.detach())
        loss = nn.functional.cross_entropy(out["logits"], y)
        for logits, source, (high, low) in [(b2, attention, (0.7, 0.01)), (b1, b2_prob, (0.5, 0.05)),
                                            (c, (b1_prob + b2_prob) * 0.5, (0.7, 0.1))]:
            loss = loss + masked_bce(logits, *spg_mask(source, high, low))
        return loss


class DeitTsCam(nn.Module):
    """timm's DeiT with TS-CAM's head (vasgaowei/TS-CAM): 3x3 conv on the patch tokens, GAP."""

    def __init__(self, backbone, classes):
        super().__init__()
        import timm  # only this model needs it
        self.vit = timm.create_model(f"{backbone}_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True)
        self.head = nn.Conv2d(self.vit.embed_dim, classes, 3, padding=1)

    def forward(self, x):
        t = self.vit.forward_features(x)[:, 1:]
        side = int(round(t.shape[1] ** 0.5))
        return {"logits": self.head(t.transpose(1, 2).reshape(t.shape[0], -1, side, side)).mean((2, 3))}

    loss = staticmethod(cross_entropy_loss)


def build(backbone, head, classes):
    if backbone.startswith("deit"):
        if head != "tscam":
            sys.exit(f"bench_pytorch.py: {backbone} has the TS-CAM head only here")
        return DeitTsCam(backbone, classes)
    if backbone in ("inception_v3", "efficientnet_lite0"):
        if head != "cam":
            sys.exit(f"bench_pytorch.py: {backbone} has the CAM head only here")
        return InceptionCam(classes) if backbone == "inception_v3" else EfficientNetCam(classes)
    if head == "acol":
        return Acol(backbone, classes)
    if head == "spg":
        return Spg(backbone, classes)
    if backbone == "vgg16":
        return VggCam(classes, adl=head == "adl")
    return ResNetCam(int(backbone.removeprefix("resnet")), classes, adl=head == "adl")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50", "vgg16", "inception_v3", "efficientnet_lite0", "deit_tiny", "deit_small"])
    p.add_argument("--head", default="cam", choices=["cam", "acol", "adl", "spg", "tscam"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True (wsol's --cudnn-benchmark)")
    p.add_argument("--cam", choices=["cam", "gradcam"],
                   help="time evaluation with these maps instead of training (CAM heads)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, run 2 steps under torch.profiler and print the GPU kernels' time to stderr")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    dev = torch.device(a.device)
    model = build(a.backbone, a.head, a.classes).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = torch.arange(a.batch, device=dev) % a.classes
    if a.cam and a.head not in ("cam", "adl"):
        p.error("--cam: the GAP + linear heads only (--head cam or adl)")
    step = (lambda: cam_step(model.eval(), x, y, a.cam)) if a.cam else (lambda: train_step(model, opt, x, y))
    times = []
    for k in range(2 + a.steps):
        t0 = time.perf_counter()
        step()
        if k >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    median = sorted(times)[len(times) // 2]
    if a.profile and not a.cam:
        profile_steps(model, opt, x, y, a.batch)
    print(json.dumps({
        "backbone": a.backbone, "head": a.head, "batch": a.batch, "size": a.size, "threads": a.threads, "steps": a.steps,
        "device": a.device, "cam": a.cam, "torch": torch.__version__, "cudnn_benchmark": a.cudnn_benchmark,
        "parameters": sum(p.numel() for p in model.parameters()), "images_per_s": a.batch / (median / 1e3), "step_ms": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
    }))


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = model.loss(model(x), y)
    loss.backward()
    opt.step()
    loss.item()


def cam_step(model, x, y, method):
    """Eval-mode forward, then the maps of class y per image, read back to the host."""
    with torch.no_grad():
        features = model.features(x)
        if isinstance(model, VggCam):
            features = torch.relu(model.conv6(features))
        logits = model.fc(features.mean((2, 3)))
        logits.cpu()
        if method == "cam":
            maps = torch.einsum("bc,bchw->bhw", model.fc.weight[y], features)
    if method == "gradcam":
        a = features.detach().requires_grad_()
        score = model.fc(a.mean((2, 3))).gather(1, y[:, None]).sum()
        (g,) = torch.autograd.grad(score, a)
        maps = torch.relu((g.mean((2, 3), keepdim=True) * a.detach()).sum(1))
    maps.cpu()


def profile_steps(model, opt, x, y, batch, steps=2):
    """Kernel time per step by kernel, from torch.profiler (to compare with ncu on wsol)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            opt.zero_grad()
            model.loss(model(x), y).backward()
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
