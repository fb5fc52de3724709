#!/usr/bin/env bash
# The main job: install Fashion-MNIST if missing, train DINO's `fmnist-fast` preset on its
# 60k training images (17 epochs, batch 64, about an hour on 2 cores: the recipe that ranked
# best in the proxy runs), evaluate the teacher's weighted k-NN at random init and after each
# epoch, and print it beside the raw-pixel baseline. An interrupted run continues from its
# checkpoint when started again. `DINO_MODEL=fmnist-small` runs the reference recipe (2 epochs).
#
#     scripts/main-job.sh [extra `dino train` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/get-fmnist.sh
cargo build --release --quiet
model="${DINO_MODEL:-fmnist-fast}"
out="${DINO_OUT:-runs/$model}"
resume=()
[ -f "$out/checkpoint.safetensors" ] && resume=(--resume) && echo "continuing the run in $out"
target/release/dino train --model "$model" --data fmnist --knn --out "$out" "${resume[@]}" "$@"
