#!/usr/bin/env bash
# DeepLabV3+ Xception-65, output stride 16, 512x512, batch 1, on the CPU: the zoo's eager model, its fast
# path (optimize_for_inference), smp's DeepLabV3Plus(tu-xception65) and timm's xception65 features, timed
# in alternating rounds in one run. Writes benchmarks/results/cpu_xception65.{md,csv,json,png}.
# Usage: benchmarks/cpu_xception65.sh [extra zoo benchmark arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/cpu_env.sh
"$PY" -m zoo benchmark --models xception65:deeplabv3plus --size 512 --batch-size 1 --output-stride 16 \
    --device cpu --reference --fast --warmup 2 --repeats 3 --rounds 7 \
    --csv "$RESULTS/cpu_xception65.csv" --json "$RESULTS/cpu_xception65.json" "$@"
"$PY" benchmarks/report.py "$RESULTS/cpu_xception65.json" \
    --markdown "$RESULTS/cpu_xception65.md" --plot "$RESULTS/cpu_xception65.png"
