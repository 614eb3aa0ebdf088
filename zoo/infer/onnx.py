"""The ONNX layer: export (``zoo export``), one ONNX Runtime session builder, and the ONNX Runtime model.

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

The model description (:func:`zoo.checkpoint.model_meta`: build arguments, class names, palette, mean/std) is
stored as JSON in the ONNX file's metadata under the key ``"zoo"``, so ``zoo predict --onnx FILE`` needs
no checkpoint.
"""

from __future__ import annotations

import io
import json
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from zoo.checkpoint import model_meta, non_finite_tensors
from zoo.errors import ArgumentError
from zoo.models import SegmentationModel

META_KEY = "zoo"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DYNAMO_MIN_OPSET = 18  # the dynamo exporter implements opset 18 and later; 17 goes through the TorchScript one


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
        meta: the model description stored in the file's metadata (default: :func:`zoo.checkpoint.model_meta`
            of ``model`` when it is a SegmentationModel).
        check: run the file with ONNX Runtime at two input sizes and compare with the PyTorch model.
        tolerance: largest allowed max abs difference of the logits when ``check`` is set.

    Raises:
        ValueError: ``opset`` below 17, non-finite weights or logits (nothing is written), or ONNX Runtime's logits
            differ from PyTorch's by more than ``tolerance`` (or are not finite).
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset must be at least 17, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    device = next(model.parameters(), torch.empty(0)).device
    wrapped = model.cpu().eval()
    divisor = int(getattr(getattr(model, "encoder", None), "size_divisor", 32))
    (height, width), other = _example_sizes(divisor)
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    try:
        _check_finite(wrapped, example)
        proto = _export_proto(wrapped, example, opset)
        if meta is None and isinstance(model, SegmentationModel):
            meta = model_meta(model)
        if meta is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(meta)
        onnx.save_model(proto, str(path))
        if check:
            for size in ((height, width), other):
                x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
                diff = onnx_max_difference(wrapped, path, x)
                if not diff <= tolerance:  # NaN fails too
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


def onnx_bytes(model: nn.Module, example_input: torch.Tensor, *, opset: int = 17, dynamic: bool = False) -> bytes:
    """The ONNX bytes of ``model`` (eval mode, CPU, fp32) by the TorchScript exporter, quick enough to run per shape.

    Args:
        model: a module returning a tensor or a (nested) list/tuple/dict of tensors (flattened to outputs).
        example_input: an input of the shape the graph takes.
        opset: the ONNX opset version.
        dynamic: make batch, height and width dynamic (inputs of any size); otherwise the graph is fixed to
            ``example_input``'s shape, which ONNX Runtime runs ~5% faster.
    """
    flat = _FlatOutputs(model.eval()).eval()
    with torch.no_grad():
        count = len(flat(example_input))
    names = [f"output_{i}" for i in range(count)]
    axes = None
    if dynamic:
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        axes |= {name: {0: "batch", 2: f"height_{i}", 3: f"width_{i}"} for i, name in enumerate(names)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            flat,
            (example_input,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=names,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            dynamic_axes=axes,
        )
    return buffer.getvalue()


class _FlatOutputs(nn.Module):
    """Wraps a module so that it returns the flat tuple of its output tensors (what ONNX export needs)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(pytree.tree_leaves(self.module(x)))


def ort_session(model: bytes, *, num_threads: int | None = None, device: str = "cpu") -> Any:
    """An ONNX Runtime session with every graph optimisation, sequential execution and one inter-op thread.

    Args:
        model: the ONNX bytes.
        num_threads: intra-op threads (default: ONNX Runtime's own choice).
        device: "cpu", or "cuda" (needs onnxruntime's CUDA execution provider).
    """
    import onnxruntime as ort  # optional dependency (the onnx extra)

    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ArgumentError("device", "'cuda' with an ONNX model needs onnxruntime's CUDAExecutionProvider")
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if num_threads:
        options.intra_op_num_threads = num_threads
    return ort.InferenceSession(model, options, providers=providers)


@torch.no_grad()
def _check_finite(model: nn.Module, x: torch.Tensor) -> None:
    """Raise ValueError if the model's weights or its logits for ``x`` hold NaN or infinity (nothing is exported)."""
    bad = non_finite_tensors(model.state_dict())
    if bad:
        raise ValueError(f"non-finite weights (NaN or infinity) in {', '.join(bad[:3])}: not exported")
    if non_finite_tensors([("logits", model(x))]):
        raise ValueError("the model's logits hold NaN or infinity: not exported")


@torch.no_grad()
def onnx_max_difference(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between ``model(x)`` and the ONNX file's output for ``x`` (CPU).

    Args:
        model: the PyTorch model (eval mode).
        path: the ONNX file.
        x: an input batch.
    """
    out = model(x.cpu())
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
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {self.path}")
        try:
            self.session = ort_session(self.path.read_bytes(), num_threads=num_threads, device=device)
        except ValueError:
            raise
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{self.path} is not a loadable ONNX model: {error}") from None
        self.input_name = self.session.get_inputs()[0].name
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        self.meta: dict[str, Any] | None = json.loads(raw) if raw else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().float().contiguous().numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits).to(x.device)


def max_abs_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two (nested) tensor outputs of the same structure."""
    leaves_a, spec_a = pytree.tree_flatten(a)
    leaves_b, spec_b = pytree.tree_flatten(b)
    if spec_a != spec_b:
        raise ValueError(f"outputs differ in structure: {spec_a} vs {spec_b}")
    diffs = [(x.float() - y.float().to(x.device)).abs().max().item() for x, y in zip(leaves_a, leaves_b, strict=True)]
    return max(diffs, default=0.0)


class OnnxRuntimeRunner:
    """Runs a module through ONNX Runtime on the CPU.

    The first ``max_sessions`` input shapes each get a graph fixed to that shape (exported on first use;
    the fastest to run). Further shapes share one graph with dynamic batch, height and width, exported
    once at an odd size (so that a model's padding to a multiple of its stride stays in the graph) and
    checked against the module on the first shape it serves; where that check fails, each further shape
    gets a fixed graph of its own, the least recently used ones dropped.

    Args:
        model: the (folded) module, on the CPU, in eval mode.
        example_input: an input whose shape gets a session now.
        num_threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        max_sessions: how many shapes get a fixed-shape graph.
        tolerance: largest max abs difference allowed between the dynamic graph and the module.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        num_threads: int | None = None,
        max_sessions: int = 4,
        tolerance: float = 1e-3,
    ) -> None:
        self.model = model.cpu().eval()
        self.num_threads = num_threads or torch.get_num_threads()
        self.max_sessions = max_sessions
        self.tolerance = tolerance
        self.sessions: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.dynamic_session: Any = None
        self.dynamic_ok: bool | None = None  # None: not tried yet
        with torch.no_grad():
            self.spec = pytree.tree_structure(self.model(example_input.cpu().float()))
        self._session(example_input)

    def _build(self, model: bytes) -> Any:
        return ort_session(model, num_threads=self.num_threads)

    def _session(self, x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key in self.sessions:
            self.sessions.move_to_end(key)
            return self.sessions[key]
        if len(self.sessions) >= self.max_sessions:
            if self.dynamic_ok is None:
                self.dynamic_ok = self._try_dynamic(x)
            if self.dynamic_ok:
                return self.dynamic_session
        self.sessions[key] = self._build(onnx_bytes(self.model, x.detach().cpu().float()))
        while len(self.sessions) > max(1, self.max_sessions):
            self.sessions.popitem(last=False)
        return self.sessions[key]

    def _try_dynamic(self, x: torch.Tensor) -> bool:
        x = x.detach().cpu().float()
        odd = torch.randn(1, x.shape[1], 65, 91, generator=torch.Generator().manual_seed(0))
        try:
            session = self._build(onnx_bytes(self.model, odd, dynamic=True))
            with torch.no_grad():
                expected = self.model(x)
            if max_abs_difference(expected, self._run(session, x)) > self.tolerance:
                return False
        except Exception:  # a module that cannot be exported with dynamic sizes keeps fixed-shape graphs
            return False
        self.dynamic_session = session
        return True

    def _run(self, session: Any, x: torch.Tensor) -> Any:
        array = x.detach().cpu().float().contiguous().numpy()
        outputs = session.run(None, {session.get_inputs()[0].name: array})
        tensors = [torch.from_numpy(o).to(x.device) for o in outputs]
        return pytree.tree_unflatten(tensors, self.spec)

    def __call__(self, x: torch.Tensor) -> Any:
        return self._run(self._session(x), x)


__all__ = [
    "OnnxModel",
    "OnnxRuntimeRunner",
    "max_abs_difference",
    "export_onnx",
    "onnx_bytes",
    "onnx_max_difference",
    "ort_session",
]
