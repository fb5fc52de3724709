#!/usr/bin/env bash
# Write tests/fixtures/health/*.jsonl: the logs of four short fmnist-small runs (300
# iterations of batch 32 on 3200 training images, a step record per iteration) that
# tests/health.rs runs the collapse monitor on. About 4 minutes each on 2 cores.
#   healthy        the preset as it is
#   uniform        a teacher at temperature 1: centering with no sharpening (the paper's uniform collapse)
#   one-dimension  no centering (center momentum 1) and a sharp teacher (0.02) at a high lr
#   stalled        a learning rate of 0: nothing learns, the loss stays where it started
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/get-fmnist.sh
cargo build --release --quiet
dest=tests/fixtures/health
mkdir -p "$dest"
tmp=$(mktemp -d)
common=(--model fmnist-small --data fmnist --limit 3200 --batch-size 32 --epochs 3 --log-every 1 --seed 0)
run() {
    local name=$1
    shift
    target/release/dino train "${common[@]}" "$@" --out "$tmp/$name" > "$tmp/$name.txt" 2>&1
    cp "$tmp/$name/log.jsonl" "$dest/$name.jsonl"
    echo "$name: $(grep -c '"event":"step"' "$dest/$name.jsonl") steps; $(grep '^health' "$tmp/$name.txt" || true)"
}
run healthy
run uniform --teacher-temp 1.0 --warmup-teacher-temp 1.0
run one-dimension --center-momentum 1.0 --teacher-temp 0.02 --lr 5e-3 --warmup-epochs 0.1
run stalled --lr 0 --min-lr 0
rm -rf "$tmp"
