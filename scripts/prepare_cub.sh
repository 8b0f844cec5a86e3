#!/usr/bin/env bash
# CUB-200-2011 for the paper configs (configs/cub/): images in data/CUB/ (train/test from
# CUB_200_2011.tgz, the CUBV2 val images of Choe et al. 2020 beside them) and
# wsolevaluation's metadata in data/metadata/CUB/. Run on a connected machine:
#   scripts/prepare_cub.sh [DATA_DIR]     (default data/)
# Then check with: wsol data check --config configs/cub/vgg16_cam.yaml
set -eu
cd "$(dirname "$0")/.." && . scripts/data_lib.sh
data=${1:-data}
mkdir -p "$data/downloads"
fetch "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1" "$data/downloads/CUB_200_2011.tgz"
check_md5 "$data/downloads/CUB_200_2011.tgz" 97eceeb196236b17998738112f37df78
fetch "https://onedrive.live.com/download?cid=B7111B95B80CCC66&resid=B7111B95B80CCC66%2130812&authkey=AFMzb4akufUiWU0" "$data/downloads/CUBV2.tar"
record_sha256 "$data/downloads/CUBV2.tar"
if [ ! -d "$data/CUB/001.Black_footed_Albatross" ]; then
    tar xzf "$data/downloads/CUB_200_2011.tgz" -C "$data/downloads"
    mkdir -p "$data/CUB"
    cp -r "$data/downloads/CUB_200_2011/images/." "$data/CUB/"
    tar xf "$data/downloads/CUBV2.tar" -C "$data/CUB"
fi
wsol_metadata CUB "$data/metadata/CUB"
echo "CUB ready: images $data/CUB, metadata $data/metadata/CUB"
echo "(the native CUB_200_2011 layout is in $data/downloads/CUB_200_2011 for data.format: cub)"
