#!/usr/bin/env bash
# Install Fashion-MNIST (Debian's dataset-fashion-mnist package: four gzipped IDX files in
# /usr/share/datasets/fashion-mnist) unless it is already there or DINO_FMNIST_DIR points
# to a directory holding them.
set -euo pipefail
dir="${DINO_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
need=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
have() { for f in "${need[@]}"; do [ -f "$dir/$f.gz" ] || [ -f "$dir/$f" ] || return 1; done; }
if have; then
    echo "Fashion-MNIST: found in $dir"
    exit 0
fi
if [ -n "${DINO_FMNIST_DIR:-}" ]; then
    echo "Fashion-MNIST: DINO_FMNIST_DIR=$DINO_FMNIST_DIR does not hold ${need[*]}" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "Fashion-MNIST: installing the dataset-fashion-mnist package"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
have || { echo "Fashion-MNIST: installed, but the files are not in $dir" >&2; exit 1; }
echo "Fashion-MNIST: installed in $dir"
