"""Training options users know from smp and MMSegmentation: --model.loss, class_weights auto, init_from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
from PIL import Image
from test_lightning import tiny_data, tiny_module, tiny_trainer

from zoo.checkpoint import load_matching, save_model
from zoo.data.stats import class_stats
from zoo.train import SegmentationDataModule
from zoo.train.losses import CrossEntropy
from zoo.train.module import init_report

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_option_builds_the_named_sum() -> None:
    data = tiny_data()
    module = tiny_module(data, loss="ce+0.5*dice", ignore_index=255)
    assert [type(m) for m in module.criterion.losses] == [CrossEntropy, smp.losses.DiceLoss]
    assert module.criterion.weights == [1.0, 0.5]
    with pytest.raises(ValueError, match="unknown loss 'cross_entropy'"):
        tiny_module(data, loss="cross_entropy")


def test_class_weights_auto_are_median_frequency_of_the_train_split(tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = tiny_data()
    module = tiny_module(data, class_weights="auto")
    assert module.criterion is None
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    expected = class_stats(data.build_split("train"), data.num_classes).median_frequency_weights()
    weights = module.criterion.losses[0].weight
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float32))
    assert (weights > 0).all()


def test_init_from_loads_what_fits_and_lists_the_rest(tmp_path: Path) -> None:
    data = tiny_data()
    source = tiny_module(data).model
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    path = save_model(source, tmp_path / "source.pt")
    target = tiny_module(data, num_classes=3, class_names=None, palette=None).model
    skipped = load_matching(target, path)
    assert skipped == ["decoder.classifier.bias", "decoder.classifier.weight"]
    for name, tensor in target.state_dict().items():
        if name not in skipped:
            torch.testing.assert_close(tensor, source.state_dict()[name])
    module = tiny_module(data, num_classes=3, class_names=None, palette=None, init_from=str(path))
    torch.testing.assert_close(module.model.encoder.stem.conv1.weight, source.encoder.stem.conv1.weight)
    notes = tmp_path / "notes.txt"
    notes.write_text("weights are elsewhere\n")
    with pytest.raises(ValueError, match="notes.txt is not a checkpoint: it is a text file"):
        tiny_module(data, init_from=str(notes))


def test_init_from_says_how_many_tensors_loaded_and_when_only_batchnorm_counters_fit(tmp_path: Path) -> None:
    data = tiny_data()
    source = tiny_module(data).model
    target = tiny_module(data, num_classes=3, class_names=None, palette=None).model
    total = len(target.state_dict())
    assert init_report(target, ["decoder.classifier.bias", "decoder.classifier.weight"]).startswith(
        f"{total - 2} of {total} tensors loaded; not loaded: decoder.classifier.bias, decoder.classifier.weight"
    )
    # what fits of another architecture may be the BatchNorm step counters alone (shape () everywhere)
    skipped = [k for k in source.state_dict() if not k.endswith("num_batches_tracked")]
    counters = [k for k in source.state_dict() if k not in skipped]
    report = init_report(source, skipped)
    assert report.startswith(f"{len(counters)} of {len(source.state_dict())} tensors loaded (BatchNorm counters only")


def write_folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    """A folder dataset of random photos (different sizes) and masks of 3 classes, all in the split ``val``."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    (root / "classes.txt").write_text("a\nb\nc\n")
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 3, (h, w), dtype=np.uint8)).save(root / "masks" / f"{i}.png")
    (root / "splits" / "val.txt").write_text("".join(f"{i}\n" for i in range(len(sizes))))
    return root


def test_validation_scores_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", [(40, 56), (64, 48), (33, 37)])
    confusions = []
    for batch_size in (1, 3):
        pl.seed_everything(0)
        data = SegmentationDataModule(dataset="folder", root=str(root), val_split="val", val_batch_size=batch_size,
                                      num_workers=0)  # fmt: skip
        module = tiny_module(data, num_classes=3, class_names=None, palette=None)
        tiny_trainer(tmp_path).validate(module, datamodule=data, verbose=False)
        confusions.append(module.val_scores.confusion)
    assert confusions[0].sum() == 40 * 56 + 64 * 48 + 33 * 37
    assert torch.equal(confusions[0], confusions[1])
