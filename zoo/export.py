"""ONNX export (``zoo export``) and the ONNX Runtime model used by ``zoo predict --backend onnx``.

The model is exported with a dynamic batch, height and width by torch's dynamo exporter
(``torch.onnx.export(..., dynamo=True)``, translated with onnxscript) for opset 18 and later, the default;
that exporter cannot write opset 17 (onnx has no Pad adapter down to 17), so ``opset=17`` uses the
TorchScript exporter (``dynamo=False`` with ``dynamic_axes``). Both give the same logits.

The model pads its input to a multiple of ``encoder.size_divisor`` inside ``forward`` and skips the pad
when there is nothing to pad; the example input is therefore given a height and a width that are *not*
multiples of the divisor, so the traced graph keeps the pad, with amounts computed from the input's shape
(a pad of zero is a no-op at run time; an example at a multiple of 32 would drop the pad and give wrong
logits at other sizes). After export the file is run by ONNX Runtime at two sizes and compared with the
PyTorch model.

The model description (:func:`zoo.models.model_meta`: build arguments, class names, palette, mean/std) is
stored as JSON in the ONNX file's metadata under the key ``"zoo"``, so ``zoo predict --backend onnx`` needs
no checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

META_KEY = "zoo"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DYNAMO_MIN_OPSET = 18  # the dynamo exporter implements opset 18 and later; 17 goes through the TorchScript one


class _Logits(nn.Module):
    """Eval-mode wrapper returning the logits tensor only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out


def _example_sizes(divisor: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """An export size with a non-zero pad on both axes, and a different size to check the file at."""
    return (2 * divisor + 1, 3 * divisor - 5), (divisor + 7, 2 * divisor)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = 18,
    meta: dict[str, Any] | None = None,
    check: bool = True,
    tolerance: float = 1e-3,
) -> Path:
    """Export a segmentation model to ONNX with dynamic batch, height and width.

    Args:
        model: a :class:`~zoo.models.SegmentationModel` (or a module mapping ``N×3×H×W`` to logits for any
            H, W); it is exported in eval mode on the CPU and left as it was.
        path: the ``.onnx`` file to write (parent folders are created).
        opset: ONNX opset version, at least 17 (18 and later: dynamo exporter; 17: TorchScript exporter).
        meta: the model description stored in the file's metadata (default: :func:`zoo.models.model_meta`
            of ``model`` when it is a SegmentationModel).
        check: run the file with ONNX Runtime at two input sizes and compare with the PyTorch model.
        tolerance: largest allowed max abs difference of the logits when ``check`` is set.

    Raises:
        ValueError: ``opset`` below 17, or ONNX Runtime's logits differ from PyTorch's by more than ``tolerance``.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset must be at least 17, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device
    wrapped = _Logits(model.cpu().eval()).eval()
    divisor = int(getattr(getattr(model, "encoder", None), "size_divisor", 32))
    (height, width), other = _example_sizes(divisor)
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    try:
        proto = _export_proto(wrapped, example, opset)
        if meta is None and hasattr(model, "build_args"):
            from zoo.models import model_meta

            meta = model_meta(model)
        if meta is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(meta)
        onnx.save_model(proto, str(path))
        if check:
            for size in ((height, width), other):
                x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
                diff = onnx_max_difference(wrapped, path, x)
                if diff > tolerance:
                    raise ValueError(f"{path}: ONNX Runtime's logits differ from PyTorch's by {diff:.3g} at {size}")
    finally:
        model.to(device).train(was_training)
    return path


def _export_proto(module: nn.Module, example: torch.Tensor, opset: int) -> Any:
    """The ONNX ModelProto of ``module`` with dynamic batch, height and width."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if opset >= DYNAMO_MIN_OPSET:
            dims = {0: torch.export.Dim("batch", min=1, max=4096)}
            dims |= {2: torch.export.Dim("height", min=1, max=16384), 3: torch.export.Dim("width", min=1, max=16384)}
            program = torch.onnx.export(
                module,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={"x": dims},
                external_data=False,
                verbose=False,
            )
            return program.model_proto
        buffer = io.BytesIO()
        axes = {0: "batch", 2: "height", 3: "width"}
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            do_constant_folding=True,
        )
        return onnx.load_from_string(buffer.getvalue())


@torch.no_grad()
def onnx_max_difference(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between ``model(x)`` and the ONNX file's output for ``x`` (CPU).

    Args:
        model: the PyTorch model (eval mode).
        path: the ONNX file.
        x: an input batch.
    """
    out = model(x.cpu())
    out = out["out"] if isinstance(out, dict) else out
    return float(np.abs(OnnxModel(path)(x).numpy() - out.numpy()).max())


class OnnxModel:
    """An exported model run by ONNX Runtime, called like the PyTorch model (tensor in, logits tensor out).

    Args:
        path: the ``.onnx`` file written by :func:`export_onnx`.
        device: "cpu", or "cuda" (needs onnxruntime's CUDA execution provider).
        num_threads: intra-op threads (default: ONNX Runtime's own choice).

    Attributes:
        meta: the model description stored in the file (see :func:`export_onnx`), or None.
    """

    def __init__(self, path: str | Path, device: str = "cpu", num_threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {self.path}")
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("--device cuda with --backend onnx needs onnxruntime's CUDAExecutionProvider")
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{self.path} is not a loadable ONNX model: {error}") from None
        self.input_name = self.session.get_inputs()[0].name
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        self.meta: dict[str, Any] | None = json.loads(raw) if raw else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().float().contiguous().numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits).to(x.device)


# ---------------------------------------------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> None:
    """Add ``zoo export`` to the ``zoo`` command's subparsers."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (dynamic batch, height and width)",
        description="Export a zoo model file or training checkpoint to ONNX and check it with ONNX Runtime.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="zoo.save_model file or Lightning checkpoint")
    parser.add_argument("--onnx", required=True, type=Path, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (>= 17, default 18)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``zoo export``; returns the exit code."""
    import sys

    from zoo.models import load_model

    try:
        model = load_model(args.checkpoint)
        path = export_onnx(model, args.onnx, opset=args.opset, check=not args.no_check)
    except (FileNotFoundError, ValueError) as error:
        print(f"zoo export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} (opset {args.opset}, dynamic batch/height/width)")
    return 0


__all__ = ["OnnxModel", "export_onnx", "onnx_max_difference"]
