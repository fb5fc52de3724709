#!/usr/bin/env bash
# Install what `--features mpi` needs to build and run: Open MPI (Debian's libopenmpi-dev and
# openmpi-bin: the library, its headers and `mpirun`) and libclang-dev (rsmpi's bindgen reads
# mpi.h), unless `mpirun` and mpi.h are there already. Prints the environment to source for
# running `mpirun` as root (as CI does), which Open MPI refuses by default.
set -euo pipefail
have() { command -v mpirun >/dev/null 2>&1 && [ -e /usr/include/x86_64-linux-gnu/mpi/mpi.h -o -e /usr/include/mpi.h -o -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; }
if ! have; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "MPI: installing libopenmpi-dev, openmpi-bin and libclang-dev" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libopenmpi-dev openmpi-bin libclang-dev >&2
    have || { echo "MPI: installed, but mpirun, mpi.h or libclang is missing" >&2; exit 1; }
fi
echo "MPI: $(mpirun --version 2>/dev/null | head -1)" >&2
if [ "$(id -u)" -eq 0 ]; then
    echo "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
fi
