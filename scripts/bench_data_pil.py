#!/usr/bin/env python3
"""The reference for `wsol bench data`: the same training input pipeline in PIL +
torchvision (decode JPEG, Resize((256, 256)) bilinear with antialiasing, RandomCrop(224),
RandomHorizontalFlip, ToTensor, Normalize) through a DataLoader with the same batch size
and worker count, on the same folder of JPEGs. Prints decoded + augmented images per
second (median over epochs) as one JSON line.

    wsol bench data --dir /tmp/jpegs --workers 2            # writes the JPEGs on first use
    python3 scripts/bench_data_pil.py /tmp/jpegs --workers 2

Needs torch, torchvision and Pillow; not part of CI.
"""
import argparse
import json
import os
import statistics
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class Folder(Dataset):
    def __init__(self, root, transform):
        self.paths = sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".jpg"))
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with open(self.paths[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)  # the workers do the work, as in training
    t = transforms.Compose([
        transforms.Resize((a.resize, a.resize)),
        transforms.RandomCrop(a.size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = Folder(a.dir, t)
    loader = DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                        persistent_workers=a.workers > 0)
    epoch_s = []
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        n = sum(len(x) for x, _ in loader)
        epoch_s.append(time.perf_counter() - t0)
        assert n == len(ds)
    print(json.dumps({"dir": a.dir, "batch": a.batch, "workers": a.workers, "size": a.size, "resize": a.resize,
                      "images_per_s": len(ds) / statistics.median(epoch_s), "epoch_s": epoch_s,
                      "torch": torch.__version__, "pillow": Image.__version__}))


if __name__ == "__main__":
    main()
