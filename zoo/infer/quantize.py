"""Lower precision on the CPU: int8 static post-training quantization with ONNX Runtime, and the CPU checks.

int8 is ONNX Runtime's static quantization in QDQ form: weights per output channel (int8, symmetric),
activations per tensor (uint8), their ranges calibrated (min/max) on the images the caller gives. The
calibration and the quantization run once, on the folded model's dynamic-size graph, so calibration images keep
their own sizes and the one quantized graph runs inputs of any size (the ranges belong to that graph's tensor
names). On a CPU without a VNNI dot-product instruction the weights use 7 bits
(``reduce_range``): AVX2's 8-bit multiply-add saturates its 16-bit sums otherwise, as ONNX Runtime's
quantization guide says.

Accuracy is measured, never assumed: :func:`zoo.infer.accuracy.quantization_report`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from zoo.checkpoint import model_meta
from zoo.data.io import image_files, read_image, to_rgb_uint8
from zoo.errors import ArgumentError, ZooWarning
from zoo.fileio import atomic_write
from zoo.infer.fold import fold_batchnorm
from zoo.infer.onnx import INPUT_NAME, META_KEY, onnx_bytes, ort_session
from zoo.infer.precision import check_cpu_precision, cpu_flags, has_vnni
from zoo.models import SegmentationModel

Calibration = Iterable[torch.Tensor] | str | Path


# ----------------------------------------------------------------------------------------------------------------------
# Calibration data


def image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A ``1×3×H×W`` float batch in 0..1 from an ``H×W×3`` uint8 image or a (batched) tensor in 0..1."""
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        return x.unsqueeze(0) if x.dim() == 3 else x
    rgb = to_rgb_uint8(np.asarray(image))
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def calibration_batches(calibration: Calibration | None, *, limit: int | None = None) -> list[torch.Tensor]:
    """The calibration batches: ``N×3×H×W`` float tensors of RGB in 0..1, like the model's input.

    Args:
        calibration: a folder of images, or an iterable of batches (``N×3×H×W`` or ``3×H×W`` tensors in 0..1;
            the model normalises its input itself, so batches are not normalised).
        limit: read at most this many images from a folder.

    A folder's unreadable files (corrupt, truncated, not images) are skipped, each named in a warning and
    counted in a last one.

    Raises:
        ArgumentError: naming ``calibration``: none given, an empty iterable or a folder with no readable image, a
            batch that is not ``N×3×H×W``, or values outside 0..1 (a batch already normalised with a mean and std).
        FileNotFoundError: a folder that does not exist or holds no images.
    """
    if calibration is None:
        raise ArgumentError(
            "calibration", "precision 'int8' needs calibration images: a folder of images like the data"
        )
    if isinstance(calibration, (str, Path)):
        return _folder_batches(Path(calibration), limit)
    batches = [image_tensor(batch) for batch in calibration]
    if not batches:
        raise ArgumentError("calibration", "the calibration set is empty")
    for index, batch in enumerate(batches):
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ArgumentError("calibration", f"batch {index} has shape {tuple(batch.shape)}, expected N×3×H×W")
        low, high = batch.min().item(), batch.max().item()
        if low < -1e-3 or high > 1 + 1e-3:
            raise ArgumentError(
                "calibration",
                f"batch {index} holds values in [{low:.3g}, {high:.3g}]: give RGB in 0..1 "
                "(the model normalises its input itself)",
            )
    return batches


def _folder_batches(folder: Path, limit: int | None) -> list[torch.Tensor]:
    """One batch per readable image of ``folder``; unreadable ones are named in a warning each, then counted."""
    files = image_files(folder, what="calibration folder")[:limit]
    batches, skipped = [], []
    for path in files:
        try:
            batches.append(image_tensor(read_image(path)))
        except ValueError as error:  # read_image's one line naming the file
            skipped.append(path.name)
            warnings.warn(f"calibration: skipped {error}", ZooWarning, stacklevel=3)
    if skipped:
        warnings.warn(
            f"calibration: skipped {len(skipped)} of {len(files)} files in {folder} ({', '.join(skipped[:5])})",
            ZooWarning,
            stacklevel=3,
        )
    if not batches:
        raise ArgumentError("calibration", f"no readable image in {folder}")
    return batches


# ----------------------------------------------------------------------------------------------------------------------
# Ranges and quantized graphs


class _BatchReader:
    """ONNX Runtime's calibration data reader over a list of batches."""

    def __init__(self, batches: Sequence[torch.Tensor]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch.contiguous().numpy()}


def dynamic_graph(model: nn.Module, channels: int = 3) -> bytes:
    """The ONNX bytes of ``model`` with dynamic batch, height and width (exported at an odd size to keep the pad)."""
    odd = torch.rand(1, channels, 65, 91, generator=torch.Generator().manual_seed(0))
    return onnx_bytes(model, odd, dynamic=True)


class RangeCollector:
    """Min/max ranges of every tensor ONNX Runtime's quantizer would quantize, collected one batch at a time.

    Only each tensor's running min and max are kept, so memory does not grow with the number of batches.

    Args:
        graph: the fp32 ONNX bytes (dynamic sizes where the batches differ in size).
    """

    def __init__(self, graph: bytes) -> None:
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import create_calibrator

        self._folder = tempfile.TemporaryDirectory(prefix="zoo-calib-")
        path = Path(self._folder.name) / "model.onnx"
        path.write_bytes(graph)
        self.calibrator = create_calibrator(
            path,
            augmented_model_path=str(Path(self._folder.name) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
        )
        self.batches = 0

    def add(self, batch: torch.Tensor) -> None:
        """Widen the ranges by one ``N×3×H×W`` batch of RGB in 0..1."""
        self.calibrator.collect_data(_BatchReader([batch]))
        self.batches += 1

    def ranges(self) -> Any:
        """ONNX Runtime's ``TensorsData`` (tensor name -> min and max) over every batch added."""
        if not self.batches:
            raise ArgumentError("calibration", "no batch to calibrate on")
        return self.calibrator.compute_data()


def calibrate(graph: bytes, batches: Iterable[torch.Tensor]) -> Any:
    """Min/max ranges of every tensor ONNX Runtime's quantizer would quantize, over ``batches`` (one at a time).

    Args:
        graph: the fp32 ONNX bytes (dynamic sizes where the batches differ in size).
        batches: ``N×3×H×W`` tensors of RGB in 0..1.

    Returns:
        ONNX Runtime's ``TensorsData`` (tensor name -> min and max).
    """
    collector = RangeCollector(graph)
    for batch in batches:
        collector.add(batch)
    return collector.ranges()


def range_table(ranges: Any) -> dict[str, tuple[float, float]]:
    """``TensorsData`` as a plain ``{tensor name: (min, max)}``."""
    table = {}
    for name, value in ranges.data.items():
        low, high = value.range_value
        table[name] = (float(np.min(low)), float(np.max(high)))
    return table


def quantize_graph(model: bytes, ranges: Any, *, reduce_range: bool) -> bytes:
    """The QDQ int8 graph of an fp32 ONNX graph, with activation ranges from :func:`calibrate`.

    Args:
        model: the fp32 ONNX bytes (BatchNorms already folded).
        ranges: ONNX Runtime's ``TensorsData`` from :func:`calibrate`.
        reduce_range: 7-bit weights (CPUs without VNNI).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="zoo-quant-") as folder, _root_log_level(logging.ERROR):
        source, target, cache = (Path(folder) / name for name in ("model.onnx", "int8.onnx", "ranges.json"))
        source.write_bytes(model)
        save_tensors_data(ranges, cache)
        quantize_static(
            source,
            target,
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=cache,
        )
        return target.read_bytes()


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    """Raise the root logger's level for the block (ONNX Runtime's quantizer logs "consider pre-processing" there)."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(before, level))
    try:
        yield
    finally:
        root.setLevel(before)


class QuantizedRunner:
    """The int8 fast path: the folded model's dynamic-size graph, calibrated and quantized once, run by ONNX Runtime.

    One graph serves every input size (calibration ranges are tied to the graph's tensor names, so every size
    runs the graph they were measured on; at 512x512 it measured no slower than a graph fixed to that size).

    Args:
        model: the folded fp32 module, on the CPU, in eval mode.
        example_input: an input (its outputs give the output structure).
        calibration: a folder of images or an iterable of batches of RGB in 0..1 (see :func:`calibration_batches`).
        num_threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        reduce_range: 7-bit weights; default: on a CPU without VNNI.

    Attributes:
        graph: the quantized ONNX bytes.
        ranges: each quantized tensor's calibrated (min, max).
        calibration_images: how many images the ranges come from.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        calibration: Calibration | None,
        *,
        num_threads: int | None = None,
        reduce_range: bool | None = None,
    ) -> None:
        batches = calibration_batches(calibration)
        self.calibration_images = sum(int(b.shape[0]) for b in batches)
        fp32 = dynamic_graph(model.cpu().eval())
        ranges = calibrate(fp32, batches)
        self.ranges = range_table(ranges)
        self.graph = quantize_graph(fp32, ranges, reduce_range=not has_vnni() if reduce_range is None else reduce_range)
        self.session = ort_session(self.graph, num_threads=num_threads or torch.get_num_threads())
        with torch.no_grad():
            self.spec = pytree.tree_structure(model(example_input.cpu().float()))

    def __call__(self, x: torch.Tensor) -> Any:
        array = x.detach().cpu().float().contiguous().numpy()
        outputs = self.session.run(None, {INPUT_NAME: array})
        return pytree.tree_unflatten([torch.from_numpy(o).to(x.device) for o in outputs], self.spec)


__all__ = [
    "Calibration",
    "check_cpu_precision",
    "cpu_flags",
    "has_vnni",
    "QuantizedRunner",
    "RangeCollector",
    "calibrate",
    "calibration_batches",
    "export_int8_onnx",
    "quantize_graph",
]


def export_int8_onnx(
    model: nn.Module, path: str | Path, calibration: Calibration, *, meta: dict[str, Any] | None = None
) -> Path:
    """Write a model's int8 ONNX file: BatchNorms folded, calibrated on ``calibration``, dynamic batch/height/width.

    The file is the graph the int8 fast path runs, with the model description in its metadata (as
    :func:`zoo.infer.onnx.export_onnx` writes it), so ``zoo predict --backend onnx`` runs it alone.

    Args:
        model: a :class:`~zoo.models.SegmentationModel` (left unchanged).
        path: the ``.onnx`` file to write (atomically; parent folders are created).
        calibration: a folder of images like the data, or an iterable of batches of RGB in 0..1.
        meta: the model description (default: :func:`zoo.checkpoint.model_meta` of a SegmentationModel).
    """
    import onnx

    batches = calibration_batches(calibration)
    folded = fold_batchnorm(copy.deepcopy(model).cpu().eval(), batches[0], inplace=True)
    proto = onnx.load_from_string(QuantizedRunner(folded, batches[0], batches).graph)
    if meta is None and isinstance(model, SegmentationModel):
        meta = model_meta(model)
    if meta is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta)
    return atomic_write(path, lambda f: f.write(proto.SerializeToString()))
