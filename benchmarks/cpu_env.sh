# Sourced by the CPU benchmark scripts: the interpreter, the results folder and a fixed malloc set-up.
# glibc's malloc adapts its mmap threshold to what the process allocated before, so one eager model can
# take 410 ms or 570 ms at 512x512 depending on history (fresh zeroed pages for every large activation).
# Fixed thresholds keep every torch eager model, the zoo's and smp's alike, at the fast end.
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-benchmarks/results}
mkdir -p "$RESULTS"
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1073741824}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-4294967296}
