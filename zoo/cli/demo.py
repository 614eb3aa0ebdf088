"""``zoo demo`` (``make demo``): train on synthetic shapes on the CPU in a few minutes.

Steps: write the ``shapes`` data to disk in Pascal VOC layout (if missing), train DeepLabV3+ with a
tiny aligned Xception from ``configs/quickstart.yaml`` through the same CLI as ``train.py``, validate
the best checkpoint, and write colour overlays of its predictions on a few validation images.
Last, a real trained model on a real photograph: Google's TFLite DeepLab (MobileNetV2, Pascal VOC,
``tests/data/real_models``), converted, segments a public-domain portrait of Grace Hopper.
The last line printed states the validation mIoU and where the outputs are.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from zoo.cli.options import examples

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
REAL_MODELS = Path(__file__).resolve().parents[2] / "tests" / "data" / "real_models"


def write_overlays(predict, dataset, class_names, palette, out_dir: Path, count: int) -> list[Path]:
    """Save ``image | ground truth | prediction`` strips, above a legend, for the first ``count`` items of ``dataset``.

    Args:
        predict: function from an H×W×3 uint8 RGB image to an H×W mask.
        dataset: a zoo dataset without transform.
        class_names: name per class.
        palette: one RGB colour per class.
        out_dir: output folder.
        count: number of images.
    """
    import numpy as np

    from zoo.data.io import write_image
    from zoo.viz import PANEL_TITLES, panels

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        image, mask = item["image"], np.asarray(item["mask"], np.uint8)
        pred = np.asarray(predict(image), np.uint8)
        strip = panels(image, [mask, pred], class_names, palette, titles=PANEL_TITLES)
        paths.append(write_image(out_dir / f"{item['name']}.png", strip))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``zoo demo``; further ``zoo train fit`` overrides (``--trainer.max_steps 100``) pass through."""
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (default: %(default)s)")
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/demo"), help="overlay folder (default: %(default)s)"
    )
    parser.add_argument("--num-overlays", type=int, default=6, help="validation images to draw (default: %(default)s)")
    parser.epilog = examples(
        "zoo demo",
        "zoo demo --trainer.max_steps 100    # any zoo train fit override passes through",
    )
    parse_known = parser.parse_known_args

    def overrides_pass_through(args: list[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        namespace, extras = parse_known(args, namespace)
        namespace.overrides = extras  # the --section.key VALUE arguments, in their order
        return namespace, []

    parser.parse_known_args = overrides_pass_through  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit code."""
    import torch

    from zoo.cli.train import cli_main
    from zoo.infer.predictor import Predictor

    if not args.config.is_file():
        raise FileNotFoundError(f"--config: no such file: {args.config}")
    if "OMP_NUM_THREADS" not in os.environ:  # one thread: two OpenMP threads beside any other job stall each other
        torch.set_num_threads(1)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no banner, tips or seed line before the first step
    start = time.perf_counter()
    cli = cli_main(["fit", "--config", str(args.config), *args.overrides])
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    best = Path(trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path)
    results = trainer.validate(module, datamodule=data, ckpt_path=str(best), verbose=False)
    miou = float(results[0]["val_miou"])

    predict = Predictor.from_checkpoint(best, device="cpu").predict
    dataset = data.build_split(data.hparams.val_split)
    write_overlays(predict, dataset, data.class_names, data.palette, args.output, args.num_overlays)
    print(real_model_overlay(args.output), flush=True)
    elapsed = time.perf_counter() - start
    print(
        f"demo: validation mIoU {miou:.4f} in {elapsed:.0f} s; checkpoint {best}; logs {trainer.log_dir}; "
        f"overlays (image | truth | prediction) in {args.output}/",
        flush=True,
    )
    return 0


def real_model_overlay(out_dir: Path) -> str:
    """Convert Google's quantized TFLite DeepLab (VOC) and draw ``photo | prediction`` of ``grace_hopper.png`` into
    ``out_dir/real_model/``; returns the line to print (what was drawn, or why nothing was)."""
    import numpy as np

    from zoo.convert.tflite import convert_deeplab_tflite
    from zoo.data.io import read_image, write_image
    from zoo.infer.predictor import Predictor
    from zoo.viz import panels

    tflite, photo = REAL_MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite", REAL_MODELS / "grace_hopper.png"
    if not (tflite.is_file() and photo.is_file()):
        return f"demo: no real model drawn ({REAL_MODELS} holds no TFLite model and photograph: a source checkout has)"
    try:
        model = convert_deeplab_tflite(tflite)
    except ImportError as error:
        return f"demo: no real model drawn ({error}; pip install 'zoo[tflite]')"
    image = read_image(photo)
    predictor = Predictor(model, num_classes=model.num_classes, class_names=model.class_names, palette=model.palette)
    mask = np.asarray(predictor.predict(image), np.uint8)
    strip = panels(image, [mask], model.class_names, model.palette, titles=("image", "prediction"))
    path = write_image(out_dir / "real_model" / "grace_hopper.png", strip)
    return f"demo: a real trained model (Google's TF DeepLab MobileNetV2 on Pascal VOC, converted) on a photo: {path}"
