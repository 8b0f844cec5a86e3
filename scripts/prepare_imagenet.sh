#!/usr/bin/env bash
# ImageNet (ILSVRC 2012) for the paper configs (configs/ilsvrc/), as Choe et al. 2020 use
# it: train = the ILSVRC train set, val (hyperparameter search) = ImageNetV2
# threshold-0.7 with their boxes, test = the ILSVRC val set. The ILSVRC archives need an
# image-net.org account: download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
# yourself into DATA_DIR/downloads/, then run on a connected machine:
#   scripts/prepare_imagenet.sh [DATA_DIR]     (default data/)
# Images land in data/ILSVRC/{train,val,val2}, metadata in data/metadata/ILSVRC.
set -eu
cd "$(dirname "$0")/.." && . scripts/data_lib.sh
data=${1:-data}
dl=$data/downloads
mkdir -p "$dl" "$data/ILSVRC"
for f in ILSVRC2012_img_train.tar ILSVRC2012_img_val.tar; do
    [ -f "$dl/$f" ] || die "$dl/$f missing: download it from image-net.org (account needed) first"
done
# The published MD5s of the two archives (as torchvision's ImageNet checks them).
check_md5 "$dl/ILSVRC2012_img_val.tar" 29b22e2961454d5413ddabcf34fc5622
check_md5 "$dl/ILSVRC2012_img_train.tar" 1d675b47d978889d74fa0da5fadfb00e
fetch https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-threshold0.7.tar.gz "$dl/imagenetv2-threshold0.7.tar.gz"
record_sha256 "$dl/imagenetv2-threshold0.7.tar.gz"
if [ ! -d "$data/ILSVRC/val" ]; then
    mkdir -p "$data/ILSVRC/val" && tar xf "$dl/ILSVRC2012_img_val.tar" -C "$data/ILSVRC/val"
fi
if [ ! -d "$data/ILSVRC/val2" ]; then
    tar xzf "$dl/imagenetv2-threshold0.7.tar.gz" -C "$data/ILSVRC"
    mv "$data/ILSVRC/imagenetv2-threshold0.7" "$data/ILSVRC/val2"
fi
if [ ! -d "$data/ILSVRC/train" ]; then
    mkdir -p "$data/ILSVRC/train" && tar xf "$dl/ILSVRC2012_img_train.tar" -C "$data/ILSVRC/train"
    # One tar per class: extract each into its synset folder.
    for t in "$data"/ILSVRC/train/*.tar; do
        d=${t%.tar}; mkdir -p "$d" && tar xf "$t" -C "$d" && rm "$t"
    done
fi
wsol_metadata ILSVRC "$data/metadata/ILSVRC"
echo "ImageNet ready: images $data/ILSVRC, metadata $data/metadata/ILSVRC"
