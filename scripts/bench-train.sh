#!/usr/bin/env bash
# Training throughput of the fmnist-small recipe, ours against the PyTorch reference script,
# alternating in the same run: images/s with augmentation included, steps 6..STEPS of each run
# (the first 5 are warm-up in both), median over ROUNDS rounds. Needs torch, timm and
# torchvision for the reference (pip install torch timm torchvision).
#
#   scripts/bench-train.sh [ROUNDS=3] [STEPS=60] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} steps=${2:-60} threads=${3:-2}
scripts/get-fmnist.sh >/dev/null
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ours=() torch0=() torch1=()
for r in $(seq "$rounds"); do
    rm -rf "$tmp/run"
    # --limit makes an epoch exactly STEPS steps of 64 images
    target/release/dino train --model fmnist-small --data fmnist --limit $((steps * 64)) --epochs 1 \
        --threads "$threads" --log-every 1 --out "$tmp/run" >/dev/null 2>&1
    ours+=("$(python3 - "$tmp/run/log.jsonl" <<'EOF'
import json, sys
s = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l]
s = [r for r in s if r.get("event") == "step"]
a, b = s[5], s[-1]
print(f'{(b["iteration"] - a["iteration"]) * 64 / (b["elapsed_s"] - a["elapsed_s"]):.1f}')
EOF
)")
    for w in 0 1; do
        v=$(python3 scripts/train_torch_dino.py --threads "$threads" --workers "$w" --max-steps "$steps" --json \
            2>/dev/null | tail -1 | python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["images_per_s"])')
        if [ "$w" = 0 ]; then torch0+=("$v"); else torch1+=("$v"); fi
    done
    echo "round $r: ours ${ours[-1]} img/s | PyTorch ${torch0[-1]} img/s (workers 0), ${torch1[-1]} img/s (workers 1)"
done
python3 - "${ours[*]}" "${torch0[*]}" "${torch1[*]}" <<'EOF'
import statistics, sys
o, t0, t1 = ([float(x) for x in a.split()] for a in sys.argv[1:])
mo, m0, m1 = statistics.median(o), statistics.median(t0), statistics.median(t1)
best = max(m0, m1)
print(f"median: ours {mo:.1f} img/s, PyTorch {m0:.1f} (workers 0) / {m1:.1f} (workers 1) img/s; "
      f"ours / best PyTorch = {mo / best:.2f}")
EOF
