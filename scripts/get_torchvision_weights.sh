#!/usr/bin/env bash
# The ImageNet weights the paper configs start from, as wsolevaluation names them
# (torchvision's files: vgg16-397923af.pth, resnet50-19c8e357.pth,
# inception_v3_google-1a9a5a14.pth), plus resnet18-f37072fd.pth for configs/custom.yaml, into
# DATA_DIR/weights/ (default data/weights/).
# Run on a connected machine. torchvision names each file after the first 8 hex digits of
# its SHA-256; the download is checked against them, as torchvision's own loader does.
set -eu
cd "$(dirname "$0")/.." && . scripts/data_lib.sh
dest=${1:-data}/weights
mkdir -p "$dest"
for f in vgg16-397923af.pth resnet50-19c8e357.pth inception_v3_google-1a9a5a14.pth resnet18-f37072fd.pth; do
    fetch "https://download.pytorch.org/models/$f" "$dest/$f"
    want=${f##*-}; want=${want%.pth}
    got=$(sha256sum "$dest/$f" | cut -c1-8)
    [ "$got" = "$want" ] || die "$dest/$f: sha256 starts $got, expected $want"
    echo "ok $dest/$f"
done
