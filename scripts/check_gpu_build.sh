#!/usr/bin/env bash
# Compiles the GPU builds (`cuda`, `cudnn`, `cudnn-graph`) on a machine without a GPU, so
# GPU code does not rot between GPU runs. Run it before you stop when you touched code
# behind those features (crates/wsol-ops/src/{cuda,conv/cudnn,conv/gpu.rs}, `#[cfg(feature
# = "cuda")]` anywhere).
#
# Needs `nvcc` (candle compiles its kernels to PTX at build time) and, to link, the CUDA
# libraries (the toolkit's) and libcudnn. On Debian 12 `--install` gets both: Debian's
# nvidia-cuda-toolkit 11.8 (from non-free, added to apt's sources if missing) and cuDNN 9
# from PyPI's nvidia-cudnn-cu11 wheel (Debian's nvidia-cudnn downloads at install time from
# NVIDIA). With no GPU to ask, the kernels are built for CUDA_COMPUTE_CAP (80 unless set).
#
# Usage: scripts/check_gpu_build.sh [--install] [--tests]
#   --tests  also builds the test binaries of the `cudnn-graph` build (they run on a GPU only)
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
tests=0
for a in "$@"; do
    case "$a" in
        --install) install=1 ;;
        --tests) tests=1 ;;
        *) echo "check_gpu_build.sh: unknown argument \`$a\` (expected --install or --tests)" >&2; exit 2 ;;
    esac
done

if ! command -v nvcc >/dev/null; then
    if [ "$install" = 1 ]; then
        src=/etc/apt/sources.list.d/wsol-nonfree.sources
        if ! apt-cache policy nvidia-cuda-toolkit 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$src"
            apt-get update -qq
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nvidia-cuda-toolkit >/dev/null
    else
        echo "check_gpu_build.sh: nvcc not found; install a CUDA toolkit or rerun with --install (Debian 12: nvidia-cuda-toolkit from non-free)" >&2
        exit 1
    fi
fi
nvcc --version | tail -1

export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
# A target folder of its own: the CPU build's artifacts are not invalidated by the features.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/gpu}"

# libcudnn.so to link against: CUDNN_LIB (a folder with lib/libcudnn.so, as cudarc's build
# script looks for it) if set, else the PyPI wheel in a venv of our own.
if [ -z "${CUDNN_LIB:-}" ] && ! ldconfig -p | grep -q 'libcudnn\.so '; then
    root="$CARGO_TARGET_DIR/cudnn"
    if [ ! -e "$root/lib/libcudnn.so" ]; then
        if [ "$install" != 1 ]; then
            echo "check_gpu_build.sh: no libcudnn.so; set CUDNN_LIB to a folder with lib/libcudnn.so or rerun with --install (cuDNN 9 from PyPI's nvidia-cudnn-cu11)" >&2
            exit 1
        fi
        python3 -m venv "$root/venv"
        "$root/venv/bin/pip" install -q --no-deps nvidia-cudnn-cu11
        mkdir -p "$root/lib"
        ln -sf "$(cd "$root" && ls "$PWD"/venv/lib/python3*/site-packages/nvidia/cudnn/lib/libcudnn.so.9)" "$root/lib/libcudnn.so"
    fi
    CUDNN_LIB="$(cd "$root" && pwd)"
    export CUDNN_LIB
fi

# `cudnn-graph` is a superset (cuda + cudnn + the graph API): one full build with codegen and
# link; the two smaller feature sets are type-checked for the code only they compile.
echo "== cargo build --release --features cudnn-graph"
cargo build --release --features cudnn-graph
for features in cuda cudnn; do
    echo "== cargo check --release --features $features --all-targets"
    cargo check --release --features "$features" --all-targets
done
if [ "$tests" = 1 ]; then
    echo "== cargo test --release --features cudnn-graph --no-run"
    cargo test --release --features cudnn-graph --no-run
fi
echo "GPU builds compile (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
