"""Training with PyTorch Lightning: the LightningModule, the LightningDataModule and the run (:func:`build_run`)."""

import logging

# torch warns at import of its C++ extension helper that a CPU machine has no CUDA runtime: not the user's concern
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

from zoo.train.datamodule import SegmentationDataModule  # noqa: E402
from zoo.train.module import SegmentationModule  # noqa: E402

__all__ = ["SegmentationDataModule", "SegmentationModule"]
