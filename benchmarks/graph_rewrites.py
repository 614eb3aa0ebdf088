"""Graph-level rewrites against the model as it is, in OpenVINO (fp32 and int8), alternating in one process.

Variants of DeepLabV3+ X-65 (random weights, seed 0, BatchNorms folded), each run by the zoo's OpenVINO path
(:class:`zoo.infer.openvino.OpenVinoRunner`, NNCF int8 calibrated on ``--calibration``):

- ``base``: the model;
- ``fold``: its input normalisation folded into the first convolution (:func:`zoo.infer.fold.fold_input_normalisation`);
- ``fold+planar``: also the final bilinear upsampling run on the logits reshaped to ``(N*C)×1×h×w`` (one channel, so
  OpenVINO's blocked layout equals the plain one and the output needs no reorder to NCHW; the same arithmetic).

Prints each variant's agreement with the model's classes, its median wall time and median per-round ratio to
``base`` over ``--rounds`` alternating rounds, then the class map after the engine: ``torch.argmax(logits, 1)``
against :func:`zoo.infer.predictor.class_map` on the same logits.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD $PY benchmarks/graph_rewrites.py --threads 1 --rounds 7 \\
        --calibration ../shared/data/voc_sample/JPEGImages
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F

import zoo
from zoo.infer.fold import InputFoldedModel, fold_batchnorm, fold_input_normalisation
from zoo.infer.openvino import OpenVinoRunner
from zoo.infer.predictor import class_map
from zoo.infer.quantize import calibration_batches

sys.path.insert(0, str(Path(__file__).parent))
from cpu_int8 import alternate, medians  # noqa: E402 - the alternating timer the other CPU benchmarks use


class PlanarUpsampling(InputFoldedModel):
    """:class:`InputFoldedModel` whose final upsampling runs on one channel at a time (reshaped, not looped)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, size = self.decoded(x)
        n, c, h, w = logits.shape
        up = F.interpolate(logits.reshape(n * c, 1, h, w), size=size, mode="bilinear", align_corners=False)
        up = up.reshape(n, c, *size)
        return up if tuple(size) == tuple(x.shape[-2:]) else up[..., : x.shape[-2], : x.shape[-1]]


def timed(fns: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """Each function's median ms and median per-round ratio of the first function's time to its own."""
    return medians(alternate(fns, rounds, repeats=1), next(iter(fns)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--precisions", default="int8,fp32")
    parser.add_argument("--calibration", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = zoo.build_model("xception65", "deeplabv3plus", num_classes=21, output_stride=16).eval()
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    base = fold_batchnorm(model, x)
    folded = fold_input_normalisation(base, x)
    planar = PlanarUpsampling(folded.model, folded.first_conv, folded.padding)
    variants = {"base": base, "fold": folded, "fold+planar": planar}
    calibration = calibration_batches(args.calibration)
    with torch.no_grad():
        reference = model(x).argmax(1)
    for precision in args.precisions.split(","):
        runners = {
            name: OpenVinoRunner(module, x, precision=precision, calibration=calibration, num_threads=args.threads)
            for name, module in variants.items()
        }
        first = runners["base"](x).argmax(1)
        for name, (ms, ratio) in timed({n: (lambda r=r: r(x)) for n, r in runners.items()}, args.rounds).items():
            out = runners[name](x).argmax(1)
            same_base = (out == first).float().mean().item()
            same_torch = (out == reference).float().mean().item()
            print(
                f"| OpenVINO {precision} | {name} | {ms:.1f} | {ratio:.3f}x | {100 * same_base:.2f}% | "
                f"{100 * same_torch:.2f}% |"
            )
    logits = runners["base"](x)
    maps = {"torch.argmax(logits, 1)": lambda: logits.argmax(1), "class_map (numpy)": lambda: class_map(logits)}
    for name, (ms, ratio) in timed(maps, args.rounds).items():
        print(f"| class map of {tuple(logits.shape)} | {name} | {ms:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
