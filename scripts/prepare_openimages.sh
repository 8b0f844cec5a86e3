#!/usr/bin/env bash
# OpenImages30k (Choe et al. 2020) for the paper configs (configs/openimages/): images and
# the instance / ignore masks of val and test in data/OpenImages/, wsolevaluation's
# metadata (mask lists) in data/metadata/OpenImages/. Run on a connected machine:
#   scripts/prepare_openimages.sh [DATA_DIR]     (default data/)
# PxAP is scored on the masks; mask paths are relative to data/OpenImages (data.mask_root
# defaults to data.image_root).
set -eu
cd "$(dirname "$0")/.." && . scripts/data_lib.sh
data=${1:-data}
dl=$data/downloads
mkdir -p "$dl" "$data/OpenImages"
fetch "https://onedrive.live.com/download?cid=B7111B95B80CCC66&resid=B7111B95B80CCC66%2130813&authkey=AHgXVPxKxO_5Fvc" "$dl/OpenImages_images.zip"
record_sha256 "$dl/OpenImages_images.zip"
fetch "https://onedrive.live.com/download?cid=B7111B95B80CCC66&resid=B7111B95B80CCC66%2130811&authkey=AMWbBWZVQFbm4jw" "$dl/OpenImages_annotations.zip"
record_sha256 "$dl/OpenImages_annotations.zip"
command -v unzip >/dev/null || die "unzip not found"
[ -d "$data/OpenImages/train" ] || unzip -q -d "$data/OpenImages" "$dl/OpenImages_images.zip"
[ -d "$data/OpenImages/test" ] && ls "$data"/OpenImages/test/*/*_ignore.png >/dev/null 2>&1 \
    || unzip -q -o -d "$data/OpenImages" "$dl/OpenImages_annotations.zip"
wsol_metadata OpenImages "$data/metadata/OpenImages"
echo "OpenImages ready: images and masks $data/OpenImages, metadata $data/metadata/OpenImages"
