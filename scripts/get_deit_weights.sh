#!/usr/bin/env bash
# ImageNet weights of the transformer backbones, into DATA_DIR/weights/ (default data/weights/):
# - DeiT-Tiny and DeiT-Small (Touvron et al. 2021), the files TS-CAM's and SCM's code start
#   from (vasgaowei/TS-CAM lib/models/deit.py). timm's tensor names under a `model` key,
#   which wsol reads as they are (configs/*/deit_small_*.yaml point there). The file names
#   carry the first 8 hex digits of their SHA-256 (torch.hub's check_hash convention); the
#   download is checked against them.
# - vit_small (`model.backbone: vit_small`, the same network as DeiT-Small): timm's
#   `vit_small_patch16_224.augreg_in21k_ft_in1k` (inputs on (pixel - 0.5) / 0.5, wsol's
#   default for vit_small with pretrained weights) and the self-supervised DINO ViT-S/16
#   `vit_small_patch16_224.dino` (ImageNet normalization: set data.mean / data.std; no
#   classifier). From the Hugging Face hub; checked against the SHA-256 the hub publishes
#   for the file (its `X-Linked-Etag`, the Git LFS object id).
# Run on a connected machine: `scripts/get_deit_weights.sh [DATA_DIR] [deit|vit|all]`.
set -eu
cd "$(dirname "$0")/.." && . scripts/data_lib.sh
dest=${1:-data}/weights
which=${2:-all}
mkdir -p "$dest"
case $which in deit|vit|all) ;; *) die "second argument: expected deit, vit or all, not '$which'" ;; esac

if [ "$which" != vit ]; then
    for f in deit_tiny_patch16_224-a1311bcf.pth deit_small_patch16_224-cd65a155.pth; do
        fetch "https://dl.fbaipublicfiles.com/deit/$f" "$dest/$f"
        want=${f##*-}; want=${want%.pth}
        got=$(sha256sum "$dest/$f" | cut -c1-8)
        [ "$got" = "$want" ] || die "$dest/$f: sha256 starts $got, expected $want"
        echo "ok $dest/$f"
    done
fi

if [ "$which" != deit ]; then
    command -v curl >/dev/null || die "curl not found (it reads the hub's published checksum)"
    for tag in augreg_in21k_ft_in1k dino; do
        url="https://huggingface.co/timm/vit_small_patch16_224.$tag/resolve/main/model.safetensors"
        out="$dest/vit_small_patch16_224.$tag.safetensors"
        want=$(curl -sIL "$url" | tr -d '\r' | awk 'tolower($1) == "x-linked-etag:" { gsub(/"/, "", $2); print $2 }' | tail -1)
        [ ${#want} = 64 ] || die "$url: the hub gave no SHA-256 (X-Linked-Etag); not downloading unchecked"
        fetch "$url" "$out"
        got=$(sha256sum "$out" | cut -d' ' -f1)
        [ "$got" = "$want" ] || die "$out: sha256 $got, expected $want (delete it and rerun)"
        echo "ok $out"
    done
fi
