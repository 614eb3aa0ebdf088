"""Google's TFLite DeepLab models, converted, on the zoo's fast path against LiteRT's interpreter (XNNPACK).

Two models (tests/data/real_models), each at its own fixed input size, batch 1:

- ``deeplabv3_mnv2_dm05_pascal_quant.tflite`` (MobileNetV2 dm 0.5, OS16, 513x513): the zoo's converted model
  through ``optimize_for_inference`` in fp32 and int8 (calibrated on the ``--calibration`` photographs, resized to
  513x513) with each engine (ONNX Runtime: QDQ int8; OpenVINO: NNCF int8; ``auto``: the faster of the two, as the
  zoo picks it), against LiteRT running the uint8 file itself;
- ``deeplabv3_257_mv_gpu.tflite`` (MobileNetV2 dm 0.5, OS8, 257x257): the same zoo rows against LiteRT running
  the float32 file.

LiteRT runs with its default delegate (XNNPACK) and, for comparison, without it (TFLite's builtin kernels).
Every row gets the same photograph at the model's size and the same thread count; rows are timed in alternating
rounds (one untimed run, then ``--repeats`` timed runs, per row and round); medians over all timed runs, ratios
to LiteRT XNNPACK as the median of the per-round ratios. A zoo row returns the 21 logits at full size; its "mask"
twin adds the class map as ``zoo predict`` takes it (:func:`zoo.infer.predictor.class_map`: numpy's argmax
over the classes), what the uint8 file's own graph ends with (LiteRT's float32 file returns
logits). The zoo's input is the photo as RGB in 0..1 (the model normalises it itself); LiteRT's is the uint8
photo (float file: scaled to [-1, 1]). Two more rows run OpenVINO fp32 and int8 with the argmax inside the
engine (:class:`zoo.infer.openvino.OpenVinoRunner` with ``argmax=True``, on the folded model; not reachable from
``optimize_for_inference``).

Accuracy, per row, on the calibration photographs at the model's size: the share of pixels whose class equals the
zoo fp32 model's (eager PyTorch), and, where ``--masks`` (default: ``SegmentationClass`` beside the photographs)
holds their ground truth, the mIoU of the masks brought back to each photo's size by nearest neighbour (pooled
over the photos, as tests/test_convert_tflite.py). int8 rows also print :func:`zoo.quantization_report`.

Usage (from the repository root): ``source benchmarks/cpu_env.sh && $PY benchmarks/tflite_speed.py
--calibration ../shared/data/voc_sample/JPEGImages``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import zoo
from zoo.benchmark.report import machine_description
from zoo.infer.predictor import class_map
from zoo.metrics import scores_from_confusion

sys.path.insert(0, str(Path(__file__).parent))
from cpu_int8 import alternate, medians  # noqa: E402 - the alternating timer the other CPU benchmarks use

MODELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_models"
FILES = {513: "deeplabv3_mnv2_dm05_pascal_quant.tflite", 257: "deeplabv3_257_mv_gpu.tflite"}
ENGINES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "auto": "auto"}
NUM_CLASSES = 21


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def photos(folder: Path, size: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in photo_files(folder)]


def ground_truth(folder: Path, masks: Path | None) -> list[torch.Tensor] | None:
    if masks is None or not masks.is_dir():
        return None
    files = [masks / f"{p.stem}.png" for p in photo_files(folder)]
    if not all(f.is_file() for f in files):
        return None
    return [torch.from_numpy(np.asarray(Image.open(f))).long() for f in files]


class LiteRT:
    """One LiteRT interpreter of a TFLite file; ``run()`` invokes it on the input set last."""

    def __init__(self, path: Path, threads: int, xnnpack: bool) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.it = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        self.it.allocate_tensors()
        self.input, self.output = self.it.get_input_details()[0], self.it.get_output_details()[0]

    def set(self, image: np.ndarray) -> LiteRT:
        x = image[None] if self.input["dtype"] == np.uint8 else image[None].astype(np.float32) / 127.5 - 1
        self.it.set_tensor(self.input["index"], x)
        return self

    def run(self) -> None:
        self.it.invoke()

    def mask(self, image: np.ndarray) -> np.ndarray:
        self.set(image).run()
        out = self.it.get_tensor(self.output["index"])[0]
        return out if out.ndim == 2 else out.argmax(-1)


def zoo_engines(model, batches: list[torch.Tensor], threads: int) -> dict[str, object]:
    """Every zoo fast path: engine x precision, built as ``optimize_for_inference`` builds them."""
    fast = {}
    for engine in ENGINES:
        for precision in ("fp32", "int8"):
            cal = batches if precision == "int8" else None
            built = zoo.optimize_for_inference(
                model, batches[0], engine, precision=precision, calibration=cal, num_threads=threads, cache_choice=False
            )
            chose = f" -> {built.backend}" if engine == "auto" else ""
            fast[f"zoo {precision} {engine}{chose}"] = built
    return fast


def engine_masks(fast: dict[str, object], batches: list[torch.Tensor], threads: int) -> dict[str, object]:
    """OpenVINO fp32 and int8 with the argmax inside the engine (``OpenVinoRunner(argmax=True)``), from the folded
    model ``optimize_for_inference`` built (``optimize_for_inference`` does not offer it)."""
    from zoo.infer.openvino import OpenVinoRunner

    runners = {}
    for precision in ("fp32", "int8"):
        folded = fast[f"zoo {precision} openvino"].folded_model
        cal = batches if precision == "int8" else None
        runners[f"zoo {precision} openvino, argmax in the engine"] = OpenVinoRunner(
            folded, batches[0], precision=precision, calibration=cal, num_threads=threads, argmax=True
        )
    return runners


def masks_of(run: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(run(image)) for image in images]


def miou(masks: list[np.ndarray], truth: list[torch.Tensor]) -> float:
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for mask, target in zip(masks, truth, strict=True):
        pred = Image.fromarray(mask.astype(np.uint8)).resize(target.shape[::-1], Image.NEAREST)
        pred = torch.from_numpy(np.asarray(pred)).long()
        keep = target != 255
        counts = torch.bincount(target[keep] * NUM_CLASSES + pred[keep], minlength=NUM_CLASSES**2)
        confusion += counts.view(NUM_CLASSES, -1)
    return scores_from_confusion(confusion).miou


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


def rows_for(size: int, threads: int, images: list[np.ndarray], truth) -> tuple[dict, dict, list[str]]:
    """The timed rows, each row's accuracy, and the int8 reports."""
    path = MODELS / FILES[size]
    model = zoo.convert_deeplab_tflite(path)
    batches = [to_tensor(i) for i in images]
    x = batches[0]
    fast = zoo_engines(model, batches, threads)
    litert = {"XNNPACK": LiteRT(path, threads, True), "builtin kernels": LiteRT(path, threads, False)}
    kind = "uint8" if size == 513 else "float32"
    rows: dict[str, Callable[[], object]] = {}
    runs: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for name, built in fast.items():
        rows[f"{name}, logits"] = lambda b=built: b(x)
        rows[f"{name}, mask"] = lambda b=built: class_map(b(x))
        runs[f"{name}, mask"] = lambda image, b=built: np.asarray(class_map(b(to_tensor(image)))[0])
    for name, runner in engine_masks(fast, batches, threads).items():
        rows[name] = lambda r=runner: r(x)
        runs[name] = lambda image, r=runner: r(to_tensor(image))[0]
    for name, rt in litert.items():
        label = f"LiteRT {kind} file, {name}, {'mask' if size == 513 else 'logits'}"
        rows[label] = rt.set(images[0]).run
        runs[label] = rt.mask
    with torch.inference_mode():
        reference = masks_of(lambda image: model(to_tensor(image)).argmax(1)[0], images)
    accuracy = {}
    for label, run in [("zoo fp32 eager (PyTorch), mask", None), *runs.items()]:
        masks = reference if run is None else masks_of(run, images)
        agree = float(np.mean([(m == r).mean() for m, r in zip(masks, reference, strict=True)]))
        accuracy[label] = (agree, miou(masks, truth) if truth else None)
    for rt in litert.values():
        rt.set(images[0])
    reports = []
    for name, built in fast.items():
        if " int8 " in f" {name} ":
            r = zoo.quantization_report(model, built, images)
            reports.append(
                f"{name}: quantization_report on {r.images} photos: pixel agreement with fp32 "
                f"{r.pixel_agreement:.4f} (worst image {r.worst_image_agreement:.4f})"
            )
    return rows, accuracy, reports


def table(times: dict[str, list[list[float]]], accuracy: dict, reference: str) -> str:
    """One line per row; the speed ratio is the median over rounds of LiteRT XNNPACK's round median over the
    row's (rows alternate within a round, so a burst of load on a shared machine hits both sides of a ratio)."""
    lines = [
        "| row | median ms | min ms | LiteRT XNNPACK time / row's time | pixels as zoo fp32 | mIoU (VOC sample) |",
        "|---|---|---|---|---|---|",
    ]
    summary = medians(times, reference)
    for name, rounds in times.items():
        flat = [t for r in rounds for t in r]
        median, ratio = summary[name]
        agree, score = accuracy.get(name, accuracy.get(name.replace(", logits", ", mask"), (None, None)))
        cells = [f"{agree:.2%}" if agree is not None else "", f"{score:.4f}" if score is not None else ""]
        lines.append(f"| {name} | {median:.1f} | {min(flat):.1f} | {ratio:.2f}x | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=Path, required=True, help="a folder of photographs")
    parser.add_argument("--masks", type=Path, help="their ground truth (default: SegmentationClass beside them)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[513, 257], choices=sorted(FILES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    truth = ground_truth(args.calibration, args.masks or args.calibration.parent / "SegmentationClass")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n{machine_description('cpu', threads)}; {args.rounds} rounds x {args.repeats} timed runs")
        for size in args.sizes:
            rows, accuracy, reports = rows_for(size, threads, photos(args.calibration, size), truth)
            times = alternate(rows, args.rounds, args.repeats)
            reference = next(name for name in rows if "XNNPACK" in name)
            print(f"\n{FILES[size]}, {size}x{size}:\n" + "\n".join(reports))
            print(f"\nzoo fp32 eager (PyTorch): mIoU {accuracy['zoo fp32 eager (PyTorch), mask'][1]:.4f}")
            print(f"\n{table(times, accuracy, reference)}", flush=True)


if __name__ == "__main__":
    main()
