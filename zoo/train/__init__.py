"""Training with PyTorch Lightning: the LightningModule and the LightningDataModule."""

from zoo.train.datamodule import SegmentationDataModule
from zoo.train.module import SegmentationModule

__all__ = ["SegmentationDataModule", "SegmentationModule"]
