#!/usr/bin/env bash
# int8 on the CPU: DeepLabV3+ Xception-65, OS16, 512x512, batch 1. First zoo benchmark's own table (the zoo's eager
# model, its int8 fast path, smp's model and timm's encoder, alternating rounds), then benchmarks/cpu_int8.py
# (fp32, int8 with 7- and 8-bit weights, bf16 where the CPU has it, OpenVINO int8 when installed).
# Usage: benchmarks/cpu_int8.sh [--calibration DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/cpu_env.sh
"$PY" -m zoo benchmark --models xception65:deeplabv3plus --size 512 --batch-size 1 --output-stride 16 \
    --device cpu --reference --precision int8 --warmup 2 --repeats 3 --rounds 5 --threads 2 \
    --csv "$RESULTS/cpu_int8.csv" --json "$RESULTS/cpu_int8.json" "$@"
"$PY" benchmarks/cpu_int8.py --size 512 --rounds 5 --repeats 2 "$@"
