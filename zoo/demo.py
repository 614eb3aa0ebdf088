"""The demo (``make demo`` / ``python -m zoo.demo``): train on synthetic shapes on the CPU in a few minutes.

Steps: write the ``shapes`` data to disk in Pascal VOC layout (if missing), train DeepLabV3+ with a
tiny aligned Xception from ``configs/quickstart.yaml`` through the same CLI as ``train.py``, validate
the best checkpoint, and write colour overlays of its predictions on a few validation images.
The last line printed states the validation mIoU and where the outputs are.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "quickstart.yaml"


def _predictor(ckpt: Path, module):
    """``zoo.Predictor`` on the checkpoint, or the trained module itself where that is not available."""
    try:
        from zoo.predict import Predictor
    except ImportError:
        Predictor = None
    if Predictor is not None:
        return Predictor.from_checkpoint(ckpt, device="cpu").predict
    mean = torch.tensor(module.model.mean).view(1, 3, 1, 1)
    std = torch.tensor(module.model.std).view(1, 3, 1, 1)
    model = module.model.eval().cpu()

    @torch.no_grad()
    def predict(image: np.ndarray) -> np.ndarray:
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - mean) / std
        return model(x).argmax(1)[0].byte().numpy()

    return predict


def write_overlays(predict, dataset, palette, out_dir: Path, count: int) -> list[Path]:
    """Save ``image | ground truth | prediction`` strips for the first ``count`` items of ``dataset``.

    Args:
        predict: function from an H×W×3 uint8 RGB image to an H×W mask.
        dataset: a zoo dataset without transform.
        palette: one RGB colour per class.
        out_dir: output folder.
        count: number of images.
    """
    from zoo.plots import overlay

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        image, mask = item["image"], np.asarray(item["mask"], np.uint8)
        pred = np.asarray(predict(image), np.uint8)
        strip = np.concatenate([image, overlay(image, mask, palette), overlay(image, pred, palette)], axis=1)
        path = out_dir / f"{item['name']}.png"
        Image.fromarray(strip).save(path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``): ``--config``, ``--output``, ``--num-overlays``,
            and any further ``train.py fit`` overrides such as ``--trainer.max_steps 100``.
    """
    parser = argparse.ArgumentParser(prog="python -m zoo.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config (default: %(default)s)")
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/demo"), help="overlay folder (default: %(default)s)"
    )
    parser.add_argument("--num-overlays", type=int, default=6, help="validation images to draw (default: %(default)s)")
    args, overrides = parser.parse_known_args(argv)
    if not args.config.is_file():
        parser.error(f"--config: no such file: {args.config}")
    start = time.perf_counter()

    from zoo.datasets.shapes import write_shapes
    from zoo.lightning import cli_main

    data_cfg = (yaml.safe_load(args.config.read_text()) or {}).get("data", {})
    shapes_args = data_cfg.get("write_shapes_if_missing")
    root = Path(data_cfg.get("root") or "data/shapes")
    if shapes_args is not None and not (root / "classes.txt").is_file():
        print(f"writing the shapes data to {root} (VOC layout)", flush=True)
        write_shapes(root, **shapes_args)

    cli = cli_main(["fit", "--config", str(args.config), *overrides])
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    best = Path(trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path)
    results = trainer.validate(module, datamodule=data, ckpt_path=str(best), verbose=False)
    miou = float(results[0]["val_miou"])

    predict = _predictor(best, module)
    dataset = data.build_split(data.hparams.val_split)
    write_overlays(predict, dataset, data.palette, args.output, args.num_overlays)
    elapsed = time.perf_counter() - start
    print(
        f"demo: validation mIoU {miou:.4f} in {elapsed:.0f} s; checkpoint {best}; logs {trainer.log_dir}; "
        f"overlays (image | truth | prediction) in {args.output}/",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
