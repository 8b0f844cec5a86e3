#!/usr/bin/env python3
"""Writes tests/fixtures/deit_parity/: the reference implementations' outputs for wsol's
transformer code, on weights from the formula of tests/cli/backbone_parity.rs (so no
weights are committed):

* timm's deit_tiny / deit_small (`dynamic_img_size=True`, so the 14x14 position
  embedding is resampled to the input's 4x4 grid as timm does): final normed tokens, each
  block's attention probabilities, the class-token logits, and a GAP-over-patch-tokens +
  linear head (wsol's `cam` method on DeiT), on a 2 x 3 x 64 x 64 input;
* pytorch-grad-cam's GradCAM on deit_tiny's block 10 with the usual ViT
  `reshape_transform` (class token dropped, tokens on their grid), the raw map before its
  resize and normalization, for targets 3 and 7;
* attention rollout (Abnar & Zuidema 2020) computed here from timm's attention maps, as
  jacobgil/vit-explain does with head_fusion="mean", discard_ratio=0;
* the authors' TS-CAM model (vasgaowei/TS-CAM, lib/models/{deit,vision_transformer}.py),
  tiny size, at its native 224 x 224 on the formula input x_i = ((i * 7919) mod 2001) / 1000 - 1:
  logits and the class maps its eval forward returns.

    pip install torch timm==1.0.31 grad-cam==1.5.7 numpy
    git clone https://github.com/vasgaowei/TS-CAM /tmp/TS-CAM
    python3 scripts/make_deit_parity_fixture.py tests/fixtures/deit_parity /tmp/TS-CAM

Weights: every float tensor of the state dict, sorted by name, t = 0, 1, ...: u_i =
((i * 7919 + t * 104729) mod 2001) / 1000 - 1 (float64, then float32); biases 0.1 u, 1-D
weights (LayerNorm) 1 + 0.2 u, others sqrt(6 / fan_in) u with fan_in = numel / dim 0.
"""
import os
import sys

import numpy as np
import timm
import torch
import torch.nn as nn
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

CLASSES = 10


def set_formula_weights(model):
    sd = model.state_dict()
    for t, name in enumerate(sorted(sd)):
        v = sd[name]
        n = v.numel()
        i = np.arange(n, dtype=np.int64)
        u = ((i * 7919 + t * 104729) % 2001) / 1000.0 - 1.0
        if name.endswith(".bias"):
            w = 0.1 * u
        elif v.dim() == 1:
            w = 1.0 + 0.2 * u
        else:
            w = np.sqrt(6.0 / (n / v.shape[0])) * u
        sd[name] = torch.from_numpy(w.astype(np.float32)).reshape(v.shape)
    model.load_state_dict(sd)


class GapHead(nn.Module):
    """wsol's `cam` method on a DeiT: GAP of the final patch tokens, then the linear head."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def forward(self, x):
        return self.vit.head(self.vit.forward_features(x)[:, 1:].mean(1))


def reshape_transform(t):
    """pytorch-grad-cam's ViT recipe: drop the class token, tokens to a [B, C, h, w] grid."""
    b, n, c = t.shape
    side = int(round((n - 1) ** 0.5))
    return t[:, 1:].reshape(b, side, side, c).permute(0, 3, 1, 2)


def rollout(attentions):
    joint = None
    for a in attentions:
        a = a.mean(1)
        a = (a + torch.eye(a.shape[-1])) / 2
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    return joint[:, 0, 1:]


def deit(name, x, out):
    model = timm.create_model(f"{name}_patch16_224", pretrained=False, num_classes=CLASSES, dynamic_img_size=True)
    model.eval()
    set_formula_weights(model)
    attn = []
    for blk in model.blocks:
        blk.attn.fused_attn = False  # the explicit softmax, so the probabilities can be read
        blk.attn.attn_drop.register_forward_hook(lambda m, i, o: attn.append(o.detach()))
    with torch.no_grad():
        attn.clear()
        feats = model.forward_features(x)
        cls_logits = model.forward_head(feats)
        gap_logits = GapHead(model)(x)
    attentions = attn[:len(model.blocks)]
    np.save(os.path.join(out, f"{name}_tokens.npy"), feats.numpy())
    np.save(os.path.join(out, f"{name}_attention.npy"), torch.stack(attentions).numpy())
    np.save(os.path.join(out, f"{name}_cls_logits.npy"), cls_logits.numpy())
    np.save(os.path.join(out, f"{name}_gap_logits.npy"), gap_logits.numpy())
    np.save(os.path.join(out, f"{name}_rollout.npy"), rollout(attentions).numpy())
    return model


def gradcam(model, x, layer, targets, out):
    import pytorch_grad_cam.base_cam as base_cam
    raw = []
    scale = base_cam.scale_cam_image
    base_cam.scale_cam_image = lambda cam, target_size=None: raw.append(cam) or scale(cam, target_size)
    try:
        wrapped = GapHead(model).eval()
        with GradCAM(model=wrapped, target_layers=[model.blocks[layer]], reshape_transform=reshape_transform) as cam:
            cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    finally:
        base_cam.scale_cam_image = scale
    np.save(os.path.join(out, f"deit_tiny_gradcam_block{layer}.npy"), raw[0].astype(np.float32))


def tscam(repo, out):
    import importlib.util
    pkg = os.path.join(repo, "lib", "models")
    spec = importlib.util.spec_from_file_location("tscam_models", os.path.join(pkg, "__init__.py"),
                                                  submodule_search_locations=[pkg])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tscam_models"] = mod
    spec.loader.exec_module(mod)
    model = mod.deit_tscam_tiny_patch16_224(pretrained=False, num_classes=CLASSES).eval()
    set_formula_weights(model)
    i = np.arange(3 * 224 * 224, dtype=np.int64)
    x = torch.from_numpy((((i * 7919) % 2001) / 1000.0 - 1.0).astype(np.float32)).reshape(1, 3, 224, 224)
    with torch.no_grad():
        logits, cams = model(x)
    np.save(os.path.join(out, "tscam_tiny_logits.npy"), logits.numpy())
    np.save(os.path.join(out, "tscam_tiny_cams.npy"), cams.numpy())


def check_vit_small_is_deit_small():
    """wsol's vit_small is checked against deit_small's fixture: the same network in timm."""
    vit = timm.create_model("vit_small_patch16_224", pretrained=False)
    deit_s = timm.create_model("deit_small_patch16_224", pretrained=False)
    a, b = vit.state_dict(), deit_s.state_dict()
    assert str(vit) == str(deit_s), "vit_small and deit_small differ in timm's modules"
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def main():
    out, repo = sys.argv[1], sys.argv[2]
    check_vit_small_is_deit_small()
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    np.save(os.path.join(out, "input.npy"), x.numpy())
    for name in ["deit_tiny", "deit_small"]:
        model = deit(name, x, out)
        if name == "deit_tiny":
            gradcam(model, x, 10, [3, 7], out)
    tscam(repo, out)


if __name__ == "__main__":
    main()
