#!/usr/bin/env bash
# The main job: install Fashion-MNIST if missing, train DINO's `fmnist-small` preset on its
# 60k training images (2 epochs, batch 64, the reference recipe), evaluate the teacher's
# weighted k-NN at random init and after each epoch, and print it beside the raw-pixel
# baseline. An interrupted run continues from its checkpoint when started again.
#
#     scripts/main-job.sh [extra `dino train` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/get-fmnist.sh
cargo build --release --quiet
out="${DINO_OUT:-runs/fmnist-small}"
resume=()
[ -f "$out/checkpoint.safetensors" ] && resume=(--resume) && echo "continuing the run in $out"
target/release/dino train --model fmnist-small --data fmnist --knn --out "$out" "${resume[@]}" "$@"
