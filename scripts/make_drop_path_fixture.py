#!/usr/bin/env python3
"""Writes tests/fixtures/drop_path/: one timm ViT `Block` (dim 8, 2 heads, qkv bias,
LayerNorm eps 1e-6 as DeiT) with `drop_path=0.4`, run in training mode on a 6 x 5 x 8
input. timm draws its own per-sample masks (DropPath, scale_by_keep); forward hooks on
`drop_path1` / `drop_path2` read back which samples each branch kept, so wsol's block can
be run with the same masks (src/models/deit.rs tests).

    /work/torchenv/bin/python scripts/make_drop_path_fixture.py tests/fixtures/drop_path

Files: block.safetensors (the block's weights, timm names), x.npy, y.npy (the block's
output), keep_attn.npy / keep_mlp.npy (1 kept, 0 dropped, per sample), p.npy.
"""
import os
import sys
from functools import partial

import numpy as np
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.models.vision_transformer import Block

P = 0.4


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    block = Block(8, 2, qkv_bias=True, drop_path=P, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(6, 5, 8)
    seen = {}

    def hook(name):
        def f(_module, inputs, output):
            seen[name] = (inputs[0].detach(), output.detach())

        return f

    block.drop_path1.register_forward_hook(hook("attn"))
    block.drop_path2.register_forward_hook(hook("mlp"))
    block.train()
    # A seed whose masks keep and drop samples in both branches.
    for seed in range(100):
        torch.manual_seed(seed)
        with torch.no_grad():
            y = block(x)
        keeps = {k: (o.abs().sum((1, 2)) > 0).float() for k, (i, o) in seen.items()}
        if all(0 < k.sum() < len(k) for k in keeps.values()):
            break
    for name, (i, o) in seen.items():
        expect = i / (1 - P) * keeps[name][:, None, None]
        assert torch.allclose(o, expect), name  # timm's DropPath scales kept samples by 1/(1-p)
    save_file({k: v.contiguous() for k, v in block.state_dict().items()}, os.path.join(out, "block.safetensors"))
    np.save(os.path.join(out, "x.npy"), x.numpy())
    np.save(os.path.join(out, "y.npy"), y.numpy())
    np.save(os.path.join(out, "keep_attn.npy"), keeps["attn"].numpy())
    np.save(os.path.join(out, "keep_mlp.npy"), keeps["mlp"].numpy())
    np.save(os.path.join(out, "p.npy"), np.array([P], dtype=np.float32))
    print("seed", seed, "keep_attn", keeps["attn"].tolist(), "keep_mlp", keeps["mlp"].tolist(), "timm", timm.__version__)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/drop_path")
