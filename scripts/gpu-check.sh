#!/usr/bin/env bash
# GPU verification from prebuilt binaries (the GPU machine has no Rust and no network).
#
# Build here first (the first line builds every test binary of the workspace; the two after it
# build just the ones this script runs):
#   cargo test --no-run --release --workspace --features cuda
#     (or: cargo test --no-run --release -p dino-runtime --features cuda --lib
#          cargo test --no-run --release --features cuda --test gpu_step --test cuda_artifact)
#   cargo build --release --features cuda
#   (optional, the stock luminal_cuda baseline: scripts/cuda-sdk.sh install;
#    eval "$(scripts/cuda-sdk.sh env)"; cargo bench --no-run --features stock-cuda --bench stock_cuda)
# then, on the GPU machine, from the repository root:
#   scripts/gpu-check.sh
# The binaries are taken from target/release (test binaries from target/release/deps), or from
# the directory named by DINO_GPU_BINS laid out the same way (to carry stripped copies).
#
# Prints the GPU and driver, then runs every CUDA backend test against the CPU reference:
# NVRTC compilation of the generated kernels, each fused kernel of a ViT block, random
# contractions on cuBLAS, a whole compiled block forward+backward, three full DINO training
# steps (GPU runtime vs CPU runtime: losses, student and teacher) and the trainer for two
# epochs on real images (`--device cuda` vs `--device cpu`), a step trained from its CUDA
# artifact (kernels loaded from CUBIN) against the JIT-compiled step, and start-up both ways
# (`dino bench startup --device cuda`). Libraries are found
# through LD_LIBRARY_PATH; PyTorch's pip wheels carry NVRTC and cuBLAS, so their directories are
# added when torch is importable.
#
# Then the parity suites of the CPU (fixtures from PyTorch: ViT block, timm ViT, optimizers, the
# DINO step, DINO's rules, weight formats) again with DINO_TEST_DEVICE=cuda, so every executor is
# held to the same tests through one alias (`dino::device::test_executor`).
#
# Then the benchmark: the DINO ViT-S/16 step (2x224 + 10x96 crops, batch 64) on our runtime
# and in PyTorch on the same GPU, fp32 eager and AMP (`dino bench gpu`); and a data-parallel
# step's NCCL path at world size 1 (one GPU cannot host two NCCL ranks) against the plain step.
set -uo pipefail
cd "$(dirname "$0")/.."

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi not found or no GPU"

# CUDA 13 libraries of PyTorch's wheels (nvidia/cu13/lib), if present
if libs=$(python3 - 2>/dev/null <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for pat in ("nvidia/*/lib", "nvidia/cu13/lib"):
        dirs.update(os.path.dirname(p) for p in glob.glob(os.path.join(sp, pat, "lib*.so*")))
print(":".join(sorted(dirs)))
PY
); then
    [ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# the driver's and the toolkit's usual directories
for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
bins=${DINO_GPU_BINS:-target/release}

echo "== CUDA backend tests (each against the CPU kernels)"
bin=$(ls -t "$bins"/deps/dino_runtime-* 2>/dev/null | grep -v '\.d$' | head -1)
if [ -z "$bin" ]; then
    echo "no prebuilt test binary: run 'cargo test --no-run --release -p dino-runtime --features cuda --lib' first" >&2
    exit 2
fi
timeout 100 "$bin" backend::cuda --test-threads 1 --nocapture 2>&1 | grep -vE '^\s*$'
status=${PIPESTATUS[0]}
echo "== the DINO step on the GPU"
step=$(ls -t "$bins"/deps/gpu_step-* 2>/dev/null | grep -v '\.d$' | head -1)
if [ -z "$step" ]; then
    echo "no prebuilt gpu_step binary: run 'cargo test --no-run --release --features cuda --test gpu_step' first" >&2
    status=2
else
    timeout 100 "$step" --nocapture 2>&1 | grep -vE '^\s*$'
    s2=${PIPESTATUS[0]}
    [ "$status" = 0 ] && status=$s2
fi
echo "== CUDA artifacts: a step trained from its CUBIN against the step built and JIT-compiled at start"
art=$(ls -t "$bins"/deps/cuda_artifact-* 2>/dev/null | grep -v '\.d$' | head -1)
if [ -z "$art" ]; then
    echo "no prebuilt cuda_artifact binary: run 'cargo test --no-run --release --features cuda --test cuda_artifact' first" >&2
    [ "$status" = 0 ] && status=2
else
    timeout 100 "$art" --nocapture 2>&1 | grep -vE '^\s*$'
    s2=${PIPESTATUS[0]}
    [ "$status" = 0 ] && status=$s2
fi
echo "== start-up on the GPU: JIT (graph, passes, NVRTC) against the compiled artifact (CUBIN, no NVRTC)"
if [ -x "$bins/dino" ]; then
    timeout 60 "$bins/dino" bench startup --device cuda --model fmnist-small --batch 64 --rounds 3 \
        || { [ "$status" = 0 ] && status=1; }
    timeout 120 "$bins/dino" bench startup --device cuda --model dino-vits16-paper --batch 64 --rounds 2 \
        || { [ "$status" = 0 ] && status=1; }
fi
echo "== the parity suites on the GPU executor (DINO_TEST_DEVICE=cuda: the CPU suites, run unchanged)"
for t in vit_block_parity timm_parity optimizer_parity dino_step_parity dino_rules weight_formats; do
    tb=$(ls -t "$bins"/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -1)
    if [ -z "$tb" ]; then
        echo "$t: no prebuilt binary (cargo test --no-run --release --workspace --features cuda)" >&2
        [ "$status" = 0 ] && status=2
        continue
    fi
    echo "-- $t"
    DINO_TEST_DEVICE=cuda timeout 100 "$tb" --test-threads 1 2>&1 | grep -E '^test |test result|panicked|Error'
    s3=${PIPESTATUS[0]}
    [ "$status" = 0 ] && status=$s3
done
echo "== benchmark: DINO ViT-S/16 step"
if [ -x "$bins/dino" ]; then
    timeout 150 "$bins/dino" bench gpu --profile || { [ "$status" = 0 ] && status=1; }
    echo "== benchmark: the same with TF32 products (ours and PyTorch's fp32)"
    timeout 80 "$bins/dino" bench gpu --tf32 --runs 5 || { [ "$status" = 0 ] && status=1; }
else
    echo "no target/release/dino: run 'cargo build --release --features cuda' first" >&2
fi
echo "== NCCL at world size 1: the data-parallel path (DINO_DIST_ALWAYS=1) against the plain step"
# fmnist-small on the committed subset, 16 steps of batch 32: the same losses (ncclAvg over one
# rank is the identity) and the cost of the path per step (copies, buckets, NCCL calls, events)
if [ -x "$bins/dino" ]; then
    for mode in plain nccl; do
        out=$(mktemp -d)
        env $( [ $mode = nccl ] && echo DINO_DIST_ALWAYS=1 ) timeout 60 "$bins/dino" train --device cuda \
            --model fmnist-small --data fmnist:tests/fixtures/fmnist-subset --batch-size 32 --epochs 1 \
            --log-every 1 --json --out "$out/run" 2>/dev/null \
            | python3 -c "import json,sys; r=json.load(sys.stdin); print('$mode', 'images/s', round(r['images_per_s'], 1), 'last loss', r['last_loss'])" \
            || { echo "$mode: failed"; [ "$status" = 0 ] && status=1; }
        rm -rf "$out"
    done
else
    echo "no target/release/dino: run 'cargo build --release --features cuda' first" >&2
fi
echo "== stock luminal_cuda beside ours on forward graphs"
stock=$(ls -t "$bins"/deps/stock_cuda-* 2>/dev/null | grep -v '\.d$' | head -1)
if [ -n "$stock" ]; then
    timeout 150 "$stock" --runs 10 || { [ "$status" = 0 ] && status=1; }
else
    echo "no stock_cuda binary: build it with 'eval \"\$(scripts/cuda-sdk.sh env)\"; cargo bench --no-run --features stock-cuda --bench stock_cuda'"
fi
echo "== exit status $status"
exit "$status"
