"""Where the time goes in OpenVINO (fp32 and int8): the per-operator profile grouped into the parts of DeepLabV3+.

The model (random weights, seed 0, or ``--checkpoint``) has its BatchNorms folded and goes through the zoo's own
OpenVINO path (:mod:`zoo.infer.openvino`: the same graph, NNCF int8 calibrated on ``--calibration``), compiled for
latency with ``PERF_COUNT``; every node's median time over ``--runs`` inferences is put in a bucket by
:func:`zoo.benchmark.operators.bucket_of`. The argmax after the engine is timed in torch. Prints one markdown table.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD $PY benchmarks/operator_split.py --threads 1 --runs 5 \\
        --calibration ../shared/data/voc_sample/JPEGImages
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import openvino
import torch

import zoo
from zoo.benchmark.operators import markdown_split, profile_openvino, split, time_argmax
from zoo.infer import openvino as zov
from zoo.infer.fold import fold_batchnorm
from zoo.infer.quantize import calibration_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="xception65")
    parser.add_argument("--decoder", default="deeplabv3plus")
    parser.add_argument("--checkpoint", default=None, help="a zoo model file (default: random weights, seed 0)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--calibration", default=None, help="int8: a folder of images (default: 4 random images)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    if args.checkpoint:
        model = zoo.load_model(args.checkpoint).eval()
    else:
        model = zoo.build_model(args.encoder, args.decoder, num_classes=21, output_stride=args.output_stride).eval()
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(model, x)
    base = zov.convert(folded)
    columns, walls = {}, {}
    for precision in args.precisions.split(","):
        ov_model = base
        if precision == "int8":
            batches = calibration_batches(args.calibration) if args.calibration else [torch.rand(1, 3, 512, 512)] * 4
            ov_model = zov.quantize(zov.convert(folded), batches)
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": args.threads,
            "PERF_COUNT": True,
        }
        compiled = openvino.Core().compile_model(ov_model, "CPU", config)
        node_ms, wall = profile_openvino(compiled, x, args.runs)
        label = f"OpenVINO {precision}"
        columns[label] = split(node_ms, folded)
        logits = torch.from_numpy(compiled(x.numpy())[0])
        columns[label]["argmax (torch.argmax(logits, 1), after the engine)"] = time_argmax(logits, args.runs)
        walls[label] = statistics.median(wall)
    print(markdown_split(columns, walls))


if __name__ == "__main__":
    main()
