"""OpenVINO on the CPU: a back-end of the fast path (fp32, bf16, int8 through NNCF) and the IR export.

The folded model goes to OpenVINO through the same dynamic-size ONNX graph that int8 with ONNX Runtime quantizes
(:func:`zoo.infer.quantize.dynamic_graph`), converted (and for int8 quantized) once; :class:`OpenVinoRunner`
compiles it fixed to each of the first input shapes it meets (constant pads fuse into the convs) and with dynamic
sizes for the rest, and returns 4-D outputs channels-last (no reorder of the full-size logits). fp32 is asked for
explicitly (``INFERENCE_PRECISION_HINT``): on a CPU with AMX or AVX-512 BF16, OpenVINO's default is bf16. int8 is
NNCF's post-training quantization (the library OpenVINO documents for it) calibrated on the same ``calibration``
images as ONNX Runtime's. ``openvino`` and ``nncf`` are optional (the ``openvino`` extra) and imported here only.

OpenVINO and ``torch.compile`` in one process: with torch 2.14.1 and openvino 2026.4.1, building and running an
OpenVINO engine, then ``torch.compile``, then OpenVINO again (and the other order) in one process runs without a
crash; tests/test_openvino.py runs that sequence in a subprocess so that a segmentation fault fails the test. The
zoo never uses OpenVINO's own ``torch.compile`` back-end (``openvino.torch``), which fails on the zoo's graphs
with torch 2.14.1 ("sources must not be empty for symbol" while creating guards).
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from zoo.checkpoint import model_meta
from zoo.errors import ArgumentError
from zoo.fileio import atomic_write
from zoo.infer.precision import require_openvino
from zoo.infer.quantize import dynamic_graph
from zoo.models import SegmentationModel

RT_INFO_KEY = ("zoo", "meta")  # where export_openvino keeps the model description in the IR
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: NNCF's graph, the rest in fp32


def _ov() -> Any:
    require_openvino()
    import openvino

    return openvino


@functools.cache
def core() -> Any:
    """The process's one ``openvino.Core``, shared by every compile and read (OpenVINO's own advice: one Core per
    application). A Core per compiled model lets a process that compiles several models (one per input shape)
    die later at an unrelated point, with no Python error."""
    return _ov().Core()


def convert(model: nn.Module) -> Any:
    """An ``openvino.Model`` of ``model`` (eval, CPU) with dynamic batch, height and width."""
    ov = _ov()
    with tempfile.TemporaryDirectory(prefix="zoo-ov-") as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(dynamic_graph(model))
        return ov.convert_model(str(path))


def quantize(ov_model: Any, batches: Sequence[torch.Tensor]) -> Any:
    """``ov_model`` quantized to int8 by NNCF's post-training quantization, calibrated on every batch.

    NNCF's full bias correction (``fast_bias_correction=False``), not its fast one: on Google's MobileNetV2 DeepLab
    (513x513, three VOC photos) the fast one left the masks equal to fp32's on 97.5% of the pixels and the mIoU
    0.047 below fp32's; the full one 98.4% and 0.002 below (BENCHMARKS.md), for twice the calibration time.
    """
    require_openvino(nncf=True)
    import nncf

    dataset = nncf.Dataset([b.detach().cpu().float().contiguous().numpy() for b in batches])
    return nncf.quantize(ov_model, dataset, subset_size=len(batches), fast_bias_correction=False)


def compile_model(ov_model: Any, precision: str = "fp32", num_threads: int | None = None) -> Any:
    """``ov_model`` compiled for the CPU, for latency, in ``precision`` ("fp32", "bf16"; "int8" for NNCF's graph)."""
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        "INFERENCE_NUM_THREADS": int(num_threads or torch.get_num_threads()),
    }
    return core().compile_model(ov_model, "CPU", config)


def channels_last_outputs(ov_model: Any) -> list[bool]:
    """Give every 4-D output of ``ov_model`` (changed in place) channels-last memory order (``N×H×W×C``); which
    outputs changed.

    The CPU plugin computes the last layers of a segmentation net (conv, resize) channels-last; a planar (``NCHW``)
    output costs a reorder of the whole full-resolution logits (for MobileNetV2 DeepLab at 513x513 on an Ice Lake
    core, as long as its whole int8 network: BENCHMARKS.md).
    The runner hands the result back as a ``N×C×H×W`` view of the same memory: the same values, in
    ``torch.channels_last`` order (where ``argmax(1)`` also runs faster than on planar logits).
    """
    ops = _ov().opset13
    changed = []
    for result in ov_model.get_results():
        source = result.input_value(0)
        four_d = source.get_partial_shape().rank.get_length() == 4
        if four_d:
            nhwc = ops.transpose(source, ops.constant(np.array([0, 2, 3, 1], dtype=np.int64)))
            result.input(0).replace_source_output(nhwc.output(0))
        changed.append(four_d)
    ov_model.validate_nodes_and_infer_types()
    return changed


def argmax_output(ov_model: Any) -> None:
    """Replace the one ``N×C×H×W`` output of ``ov_model`` (in place) by its class map, ``N×H×W`` int64: the index
    of the largest logit over C, the first on ties, as ``torch.argmax(logits, 1)`` (OpenVINO's ``TopK``, k=1).

    The full-size logits then never leave the engine (for MobileNetV2 DeepLab at 513x513: 21x513x513 floats that
    a consumer would write, copy and read again to take the same argmax).
    """
    ops = _ov().opset13
    results = ov_model.get_results()
    rank = results[0].input_value(0).get_partial_shape().rank if len(results) == 1 else None
    if rank is None or rank.is_dynamic or rank.get_length() != 4:
        raise ArgumentError("argmax", "needs a model with one N×C×H×W output (its logits)")
    top = ops.topk(results[0].input_value(0), ops.constant(np.int64(1)), 1, "max", "none", "i64")
    mask = ops.squeeze(top.output(1), ops.constant(np.array([1], dtype=np.int64)))
    results[0].input(0).replace_source_output(mask.output(0))
    ov_model.validate_nodes_and_infer_types()


def fixed_shape(ov_model: Any, shape: Sequence[int]) -> Any:
    """A copy of ``ov_model`` (one input) with its input fixed to ``shape``: the CPU plugin then folds the size
    arithmetic (TF "SAME" pads become constants it fuses into the convs, so int8 convs stay int8 across them)."""
    ov = _ov()
    fixed = ov_model.clone()
    fixed.reshape({fixed.inputs[0]: ov.PartialShape([int(d) for d in shape])})
    return fixed


class OpenVinoRunner:
    """Runs a (folded) module with OpenVINO on the CPU.

    The first ``max_shapes`` input shapes each get a model compiled for that fixed shape (the fastest to run;
    compiling one takes a fraction of a second); further shapes share one model compiled with dynamic sizes. All
    come from one converted (for int8: one quantized) model. 4-D outputs come back channels-last (see
    :func:`channels_last_outputs`): same shape and values as the module's.

    Args:
        model: the folded module, on the CPU, in eval mode.
        example_input: an input, to learn the output's structure; its shape is compiled now.
        precision: "fp32", "bf16" or "int8".
        calibration: int8: the calibration batches (``N×3×H×W`` in 0..1).
        num_threads: OpenVINO's inference threads (default: ``torch.get_num_threads()``).
        max_shapes: how many input shapes get a fixed-shape compiled model.
        argmax: return the class map (``N×H×W`` int64, :func:`argmax_output`) instead of the logits.

    Attributes:
        calibration_images: int8: how many images NNCF calibrated on (else None).
        ranges: None (NNCF keeps its ranges in the graph; :func:`zoo.infer.accuracy.quantization_report` skips its
            range check for this runner).
    """

    ranges = None

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        precision: str = "fp32",
        calibration: Sequence[torch.Tensor] | None = None,
        num_threads: int | None = None,
        max_shapes: int = 4,
        argmax: bool = False,
    ) -> None:
        self.model = model.cpu().eval()
        with torch.no_grad():
            output = self.model(example_input.cpu().float())
        if argmax and not (isinstance(output, torch.Tensor) and output.dim() == 4):
            raise ArgumentError("argmax", "needs a model with one N×C×H×W output (its logits)")
        self.spec = pytree.tree_structure(torch.empty(0) if argmax else output)
        ov_model = convert(self.model)
        self.calibration_images = None
        if precision == "int8":
            if not calibration:
                raise ArgumentError("calibration", "precision 'int8' needs calibration images")
            ov_model = quantize(ov_model, calibration)
            self.calibration_images = sum(int(b.shape[0]) for b in calibration)
        if argmax:
            argmax_output(ov_model)
        self.channels_last = channels_last_outputs(ov_model)
        self.ov_model = ov_model
        self.precision, self.num_threads, self.max_shapes = precision, num_threads, max_shapes
        self.compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.dynamic: Any = None
        self._compiled(tuple(example_input.shape))

    def _compiled(self, shape: tuple[int, ...]) -> Any:
        if shape in self.compiled:
            self.compiled.move_to_end(shape)
            return self.compiled[shape]
        if len(self.compiled) < self.max_shapes:
            self.compiled[shape] = compile_model(fixed_shape(self.ov_model, shape), self.precision, self.num_threads)
            return self.compiled[shape]
        if self.dynamic is None:
            self.dynamic = compile_model(self.ov_model, self.precision, self.num_threads)
        return self.dynamic

    def __call__(self, x: torch.Tensor) -> Any:
        array = x.detach().cpu().float().contiguous().numpy()
        compiled = self._compiled(tuple(array.shape))
        result = compiled(array)
        tensors = []
        for i, nhwc in enumerate(self.channels_last):
            tensor = torch.from_numpy(result[i])
            tensors.append((tensor.permute(0, 3, 1, 2) if nhwc else tensor).to(x.device))
        return pytree.tree_unflatten(tensors, self.spec)


# ----------------------------------------------------------------------------------------------------------------------
# The IR file


def export_openvino(
    model: nn.Module,
    path: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    check: bool = True,
    tolerance: float = 1e-3,
) -> Path:
    """Write ``model`` as an OpenVINO IR (``path`` .xml and its .bin) with dynamic batch, height and width.

    Args:
        model: a :class:`~zoo.models.SegmentationModel` (or a module mapping ``N×3×H×W`` RGB in 0..1 to logits).
        path: the ``.xml`` file (the weights go to the ``.bin`` beside it).
        meta: the model description kept in the IR's rt_info under ``zoo/meta`` (classes, palette, input mean/std;
            default: :func:`zoo.checkpoint.model_meta`); :func:`read_meta` reads it back.
        check: compile the file and compare its logits with the model's at two input sizes.
        tolerance: largest allowed max abs difference of the logits.

    Raises:
        ArgumentError: naming ``path`` when it does not end in .xml.
        ValueError: OpenVINO's logits differ from PyTorch's by more than ``tolerance``.
    """
    path = Path(path)
    if path.suffix != ".xml":
        raise ArgumentError("path", f"an OpenVINO IR is a .xml file (and its .bin), got {path}")
    ov = _ov()
    was_training = model.training
    module = model.cpu().eval()
    try:
        ov_model = convert(module)
        if meta is None and isinstance(model, SegmentationModel):
            meta = model_meta(model)
        if meta is not None:
            ov_model.set_rt_info(json.dumps(meta), list(RT_INFO_KEY))
        with tempfile.TemporaryDirectory(prefix="zoo-ov-") as folder:
            staged = Path(folder) / "model.xml"
            ov.save_model(ov_model, str(staged), compress_to_fp16=False)
            bin_path = path.with_suffix(".bin")
            atomic_write(bin_path, lambda f: f.write(staged.with_suffix(".bin").read_bytes()))
            atomic_write(path, lambda f: f.write(staged.read_bytes()))
        if check:
            compiled = compile_model(core().read_model(str(path)), "fp32", None)
            for size in ((65, 91), (96, 64)):
                x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
                with torch.no_grad():
                    expected = module(x)
                diff = (torch.from_numpy(compiled(x.numpy())[0]) - expected).abs().max().item()
                if not diff <= tolerance:  # NaN fails too
                    raise ValueError(f"{path}: OpenVINO's logits differ from PyTorch's by {diff:.3g} at {size}")
    finally:
        model.train(was_training)
    return path


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The model description :func:`export_openvino` kept in the IR ``path`` (None when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such OpenVINO IR: {path}")
    ov_model = core().read_model(str(path))
    if not ov_model.has_rt_info(list(RT_INFO_KEY)):
        return None
    return json.loads(ov_model.get_rt_info(list(RT_INFO_KEY)).astype(str))


__all__ = [
    "OpenVinoRunner",
    "argmax_output",
    "channels_last_outputs",
    "compile_model",
    "convert",
    "export_openvino",
    "fixed_shape",
    "quantize",
    "read_meta",
]
