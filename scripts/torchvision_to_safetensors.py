#!/usr/bin/env python3
"""Converts a torchvision / PyTorch checkpoint to .safetensors for `model.pretrained`
(wsol also reads the .pth directly; safetensors loads faster and cannot run code).
Run on a machine with PyTorch and the `safetensors` package:

    python3 scripts/torchvision_to_safetensors.py resnet18-f37072fd.pth resnet18.safetensors

or, with network access, straight from torchvision's model zoo:

    python3 scripts/torchvision_to_safetensors.py --torchvision resnet18 resnet18.safetensors

Names are kept as they are (a `state_dict` wrapper and a DataParallel `module.` prefix
are removed); `num_batches_tracked` buffers are dropped (wsol does not use them).
"""
import argparse

import torch
from safetensors.torch import save_file


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src", help="a .pth file, or a torchvision model name with --torchvision")
    p.add_argument("dst")
    p.add_argument("--torchvision", action="store_true", help="src is a torchvision model name (downloads weights)")
    a = p.parse_args()
    if a.torchvision:
        import torchvision
        state = getattr(torchvision.models, a.src)(weights="DEFAULT").state_dict()
    else:
        state = torch.load(a.src, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    tensors = {k.removeprefix("module."): v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(tensors, a.dst)
    print(f"{len(tensors)} tensors -> {a.dst}")


if __name__ == "__main__":
    main()
