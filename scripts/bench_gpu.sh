#!/usr/bin/env bash
# Side-by-side on one NVIDIA GPU: `wsol bench train` and `wsol bench eval --device
# cuda:0` against the same steps in PyTorch (scripts/bench_pytorch.py), then a short demo run (train + eval) on the
# GPU. Usage, on the GPU machine, from the repository root:
#
#   WSOL=target/release/wsol scripts/bench_gpu.sh [OUT_DIR]
#
# with a binary from `cargo build --release --features cudnn` (see README, "CUDA").
# Prints one JSON line per benchmark; logs go to OUT_DIR (default bench-gpu/).
set -u
WSOL=${WSOL:-target/release/wsol}
OUT=${1:-bench-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
for spec in "resnet18 32" "resnet50 32" "vgg16 32"; do
    set -- $spec
    # f32, TF32 (PyTorch's default for convolutions), TF32 with timed cuDNN algorithms,
    # TF32 through cuDNN's graph API (experimental)
    for flags in "" --tf32 "--tf32 --cudnn-benchmark" "--tf32 --cudnn-graph"; do
        "$WSOL" bench train --backbone "$1" --batch "$2" --size 224 --steps 10 --device cuda:0 $flags --json 2>>"$OUT/wsol_err.txt" \
            || echo "{\"backbone\": \"$1\", \"wsol_failed\": true}"
    done
    for flags in "" --cudnn-benchmark; do
        python3 scripts/bench_pytorch.py --backbone "$1" --batch "$2" --size 224 --steps 10 --device cuda $flags 2>>"$OUT/torch_err.txt" \
            || echo "{\"backbone\": \"$1\", \"torch_failed\": true}"
    done
    # Evaluation (forward in eval mode, then CAM / Grad-CAM maps), TF32 as PyTorch's default.
    for method in cam gradcam; do
        "$WSOL" bench eval --backbone "$1" --batch "$2" --size 224 --steps 10 --device cuda:0 --tf32 --method $method --json 2>>"$OUT/wsol_err.txt" \
            || echo "{\"backbone\": \"$1\", \"wsol_failed\": true}"
        python3 scripts/bench_pytorch.py --backbone "$1" --batch "$2" --size 224 --steps 10 --device cuda --cam $method 2>>"$OUT/torch_err.txt" \
            || echo "{\"backbone\": \"$1\", \"torch_failed\": true}"
    done
done | tee "$OUT/bench.jsonl"
# The demo config end to end on the GPU (data generated on the CPU first).
/usr/bin/time -v "$WSOL" train --config configs/demo.yaml --device cuda:0 --out "$OUT/demo" --quiet >"$OUT/demo.txt" 2>"$OUT/demo_err.txt"
echo "demo exit $?"; tail -n 20 "$OUT/demo.txt"; grep -E "Elapsed|Maximum resident" "$OUT/demo_err.txt"; grep -v "^\s" "$OUT/demo_err.txt" | head -5
