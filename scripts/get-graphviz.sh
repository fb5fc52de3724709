#!/usr/bin/env bash
# Install Graphviz (Debian's graphviz package: `dot`), which `dino inspect` uses to render its
# DOT drawings to SVG and PNG, unless `dot` is already on the PATH.
set -euo pipefail
if command -v dot >/dev/null 2>&1; then
    echo "Graphviz: found $(command -v dot)"
    exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "Graphviz: installing the graphviz package"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq graphviz
command -v dot >/dev/null 2>&1 || { echo "Graphviz: installed, but dot is not on the PATH" >&2; exit 1; }
echo "Graphviz: installed $(command -v dot)"
