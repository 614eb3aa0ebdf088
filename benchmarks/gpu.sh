#!/usr/bin/env bash
# The GPU tables of BENCHMARKS.md (bf16 autocast, channels-last), run from the repository root on a CUDA
# machine: `benchmarks/gpu.sh infer|r101|train` (each a few minutes on an H100).
# PY (default python3) must have torch, timm, onnxruntime and segmentation_models_pytorch.
# Results go to $RESULTS (default benchmarks/results): gpu_<part>_<n>.{md,csv,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
RESULTS=${RESULTS:-benchmarks/results}
mkdir -p "$RESULTS"
bench() {  # bench NAME ARGS...
    local name=$1
    shift
    "$PY" -m zoo benchmark --device cuda --precision bf16 --channels-last "$@" \
        --csv "$RESULTS/$name.csv" --json "$RESULTS/$name.json" \
        || echo "zoo benchmark $name exited with $?" >&2
    "$PY" benchmarks/report.py "$RESULTS/$name.json" --markdown "$RESULTS/$name.md"
}
case "${1:-infer}" in
infer)
    # Latency at batch 1 (512x512 and Cityscapes' full 1024x2048) and throughput at batch 16: zoo eager,
    # zoo fast path (torch.compile vs eager, measured), smp and timm, alternating.
    bench gpu_infer_b1 --models xception65:deeplabv3plus --size 512 1024x2048 --batch-size 1 \
        --reference --fast --warmup 10 --repeats 20 --rounds 5
    bench gpu_infer_b16 --models xception65:deeplabv3plus --size 512 --batch-size 16 \
        --reference --fast --warmup 5 --repeats 10 --rounds 5
    ;;
r101)
    # DeepLabV3+ ResNet-101 (MMSegmentation reports 2.6 img/s for its R-101-D8 at 512x1024 on a V100).
    bench gpu_infer_r101 --models resnet101:deeplabv3plus --size 512x1024 1024x2048 --batch-size 1 \
        --reference --warmup 10 --repeats 20 --rounds 5
    bench gpu_infer_r101_os8 --models resnet101:deeplabv3plus --size 512x1024 1024x2048 --batch-size 1 \
        --output-stride 8 --reference --warmup 10 --repeats 20 --rounds 5
    ;;
train)
    # Training step (forward, loss, backward, SGD) at batch 8.
    bench gpu_train_b8 --models xception65:deeplabv3plus resnet101:deeplabv3plus --size 512 512x1024 \
        --batch-size 8 --mode train --reference --warmup 3 --repeats 5 --rounds 5
    ;;
*)
    echo "usage: $0 infer|r101|train" >&2
    exit 2
    ;;
esac
