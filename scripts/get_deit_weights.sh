#!/usr/bin/env bash
# The ImageNet weights of DeiT-Tiny and DeiT-Small (Touvron et al. 2021), the files TS-CAM's
# code starts from (vasgaowei/TS-CAM lib/models/deit.py), into DATA_DIR/weights/ (default
# data/weights/). They keep timm's tensor names under a `model` key, which wsol reads as
# they are (configs/*/deit_small_*.yaml point there).
# Run on a connected machine. The file names carry the first 8 hex digits of their SHA-256
# (torch.hub's check_hash convention); the download is checked against them.
set -eu
cd "$(dirname "$0")/.." && . scripts/data_lib.sh
dest=${1:-data}/weights
mkdir -p "$dest"
for f in deit_tiny_patch16_224-a1311bcf.pth deit_small_patch16_224-cd65a155.pth; do
    fetch "https://dl.fbaipublicfiles.com/deit/$f" "$dest/$f"
    want=${f##*-}; want=${want%.pth}
    got=$(sha256sum "$dest/$f" | cut -c1-8)
    [ "$got" = "$want" ] || die "$dest/$f: sha256 starts $got, expected $want"
    echo "ok $dest/$f"
done
