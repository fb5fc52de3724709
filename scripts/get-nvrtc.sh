#!/usr/bin/env bash
# NVRTC (CUDA 13.0's run-time compiler) from NVIDIA's PyPI wheel, for compiling the CUDA
# backend's generated kernels to PTX on a machine without CUDA or a GPU (the `cuda` feature's
# tests use it when it is on LD_LIBRARY_PATH). Prints the directory holding libnvrtc.so.13.
#
#   export LD_LIBRARY_PATH="$(scripts/get-nvrtc.sh):$LD_LIBRARY_PATH"
set -euo pipefail
version=13.0.88
sha=ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
dir=${DINO_NVRTC_DIR:-$HOME/.cache/dino/nvrtc-$version}
if [ ! -f "$dir/libnvrtc.so.13" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "nvidia-cuda-nvrtc==$version --hash=sha256:$sha" >"$tmp/req.txt"
    python3 -m pip download --quiet --no-deps --require-hashes -r "$tmp/req.txt" -d "$tmp" >&2
    mkdir -p "$dir"
    python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
tmp, out = sys.argv[1:]
with zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0]) as z:
    for name in ("libnvrtc.so.13", "libnvrtc-builtins.so.13.0"):
        with z.open(f"nvidia/cu13/lib/{name}") as src, open(os.path.join(out, name), "wb") as dst:
            dst.write(src.read())
PY
fi
echo "$dir"
