#!/usr/bin/env bash
# How the zoo's DeepLabV3+ Xception-65 grows on the CPU: input sizes 256..1024 at output stride 16, and
# output strides 8/16/32 at 512x512 (batch 1, the zoo's eager model only). Writes benchmarks/results/cpu_scaling.*.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/cpu_env.sh
"$PY" -m zoo benchmark --models xception65:deeplabv3plus --size 512 --scaling --device cpu \
    --warmup 1 --repeats 2 --rounds 3 \
    --csv "$RESULTS/cpu_scaling.csv" --json "$RESULTS/cpu_scaling.json" "$@"
"$PY" benchmarks/report.py "$RESULTS/cpu_scaling.json" --markdown "$RESULTS/cpu_scaling.md" --plot "$RESULTS/cpu_scaling.png"
