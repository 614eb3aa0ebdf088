"""Facts about TF DeepLab's published models (research/deeplab/g3doc/model_zoo.md, Apache-2.0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DOWNLOAD_ROOT = "http://download.tensorflow.org/models/"


@dataclass(frozen=True)
class PublishedModel:
    """One checkpoint of TF DeepLab's model zoo.

    Args:
        name: the zoo's name (``zoo.list_pretrained()``; ``weights="deeplab-tf:NAME"``).
        source_name: the checkpoint's name in model_zoo.md.
        file: the tarball's name under ``DOWNLOAD_ROOT``.
        size_mb: the file size model_zoo.md gives, in MB (downloads are checked against it, within 5%); None where
            it gives none (the EdgeTPU-DeepLab rows: the conversion, reading every variable by name and shape, is
            then the only check).
        encoder: the zoo encoder it converts to.
        decoder: the zoo decoder it converts to (None: an ImageNet backbone, for ``encoder_weights``).
        num_classes: its classes (None for a backbone).
        result: the published result, as model_zoo.md states it.
        output_stride: the output stride it converts at (model_zoo.md's for the MobileNetV3 models: 32).
        build: the further ``build_model`` arguments of its configuration (depth multiplier, head options).
    """

    name: str
    source_name: str
    file: str
    size_mb: float | None
    encoder: str
    decoder: str | None
    num_classes: int | None
    result: str
    output_stride: int = 16
    build: tuple[tuple[str, Any], ...] = ()

    @property
    def url(self) -> str:
        return DOWNLOAD_ROOT + self.file


def _mnv2(width: float, channels: int = 256) -> tuple[tuple[str, Any], ...]:
    """TF DeepLab's MobileNetV2 configurations (also EdgeTPU-DeepLab's): ASPP with only aspp0 and image pooling at
    ``channels`` (``aspp_convs_filters``), no decoder."""
    build = (("encoder_kwargs", {"width": width}), ("atrous_rates", ()), ("conv3x3", False))
    return build if channels == 256 else (*build, ("channels", channels))


# model_zoo.md's MobileNetV3 flags: --image_pooling_crop_size=769 (a 25-pixel window at output stride 32) and
# --image_pooling_stride=4,5
MNV3 = (("pool_size", (25, 25)), ("pool_stride", (4, 5)))
MOBILENETS = (
    PublishedModel(
        "mobilenetv2_dm05_voc_trainaug",
        "mobilenetv2_dm05_coco_voc_trainaug",
        "deeplabv3_mnv2_dm05_pascal_trainaug_2018_10_01.tar.gz",
        7.6,
        "mobilenetv2",
        "deeplabv3",
        21,
        "70.19% (val, OS16, [1.0])",
        build=_mnv2(0.5),
    ),
    PublishedModel(
        "mobilenetv2_dm05_voc_trainval",
        "mobilenetv2_dm05_coco_voc_trainval",
        "deeplabv3_mnv2_dm05_pascal_trainval_2018_10_01.tar.gz",
        7.6,
        "mobilenetv2",
        "deeplabv3",
        21,
        "71.83% (test, OS8, [1.0])",
        build=_mnv2(0.5),
    ),
    PublishedModel(
        "mobilenetv2_voc_trainaug",
        "mobilenetv2_coco_voc_trainaug",
        "deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz",
        23,
        "mobilenetv2",
        "deeplabv3",
        21,
        "75.32% (val, OS16, [1.0]); 77.33% (val, OS8, [0.5:0.25:1.75], flip)",
        build=_mnv2(1.0),
    ),
    PublishedModel(
        "mobilenetv2_voc_trainval",
        "mobilenetv2_coco_voc_trainval",
        "deeplabv3_mnv2_pascal_trainval_2018_01_29.tar.gz",
        23,
        "mobilenetv2",
        "deeplabv3",
        21,
        "80.25% (test, OS8, [0.5:0.25:1.75], flip)",
        build=_mnv2(1.0),
    ),
    PublishedModel(
        "mobilenetv2_cityscapes_trainfine",
        "mobilenetv2_coco_cityscapes_trainfine",
        "deeplabv3_mnv2_cityscapes_train_2018_02_05.tar.gz",
        23,
        "mobilenetv2",
        "deeplabv3",
        19,
        "70.71% (val, OS16, [1.0]); 73.57% (val, OS8, [0.75:0.25:1.25], flip)",
        build=_mnv2(1.0),
    ),
    PublishedModel(
        "mobilenetv3_large_cityscapes_trainfine",
        "mobilenetv3_large_cityscapes_trainfine",
        "deeplab_mnv3_large_cityscapes_trainfine_2019_11_15.tar.gz",
        17,
        "mobilenetv3_large",
        "lraspp",
        19,
        "72.41% (val, OS32, [1.0])",
        output_stride=32,
        build=MNV3,
    ),
    PublishedModel(
        "mobilenetv3_small_cityscapes_trainfine",
        "mobilenetv3_small_cityscapes_trainfine",
        "deeplab_mnv3_small_cityscapes_trainfine_2019_11_15.tar.gz",
        5,
        "mobilenetv3_small",
        "lraspp",
        19,
        "68.99% (val, OS32, [1.0])",
        output_stride=32,
        build=MNV3,
    ),
    PublishedModel(
        "mobilenetv2_ade20k_train",
        "mobilenetv2_ade20k_train",
        "deeplabv3_mnv2_ade20k_train_2018_12_03.tar.gz",
        24.8,
        "mobilenetv2",
        "deeplabv3plus",
        151,
        "32.04% (val, OS16, [1.0]; pixel accuracy 75.41%; inputs resized to 257 on the longest side)",
        build=(("encoder_kwargs", {"width": 1.0}), ("atrous_rates", ())),
    ),
    # model_zoo.md's "EdgeTPU-DeepLab models on Cityscapes": the MobileNetV2 flags with model_variant
    # mobilenet_edgetpu and aspp_convs_filters 256; -slim: depth multiplier 0.75 and 128
    PublishedModel(
        "edgetpu_deeplab_cityscapes",
        "EdgeTPU-DeepLab",
        "edgetpu-deeplab_2020_03_09.tar.gz",
        None,
        "mobilenet_edgetpu",
        "deeplabv3",
        19,
        "70.6% (val, OS32, [1.0]); 74.1% (val, OS16, [1.0])",
        build=_mnv2(1.0),
    ),
    PublishedModel(
        "edgetpu_deeplab_slim_cityscapes",
        "EdgeTPU-DeepLab-slim",
        "edgetpu-deeplab-slim_2020_03_09.tar.gz",
        None,
        "mobilenet_edgetpu",
        "deeplabv3",
        19,
        "70.0% (val, OS32, [1.0]); 73.2% (val, OS16, [1.0])",
        build=_mnv2(0.75, 128),
    ),
)

PUBLISHED = (
    PublishedModel(
        "xception65_voc_trainaug",
        "xception65_coco_voc_trainaug",
        "deeplabv3_pascal_train_aug_2018_01_04.tar.gz",
        439,
        "xception65",
        "deeplabv3plus",
        21,
        "82.20% (val, OS16, [1.0]); 83.58% (val, OS8, [0.5:0.25:1.75], flip)",
    ),
    PublishedModel(
        "xception65_voc_trainval",
        "xception65_coco_voc_trainval",
        "deeplabv3_pascal_trainval_2018_01_04.tar.gz",
        439,
        "xception65",
        "deeplabv3plus",
        21,
        "87.80% (test, OS8, [0.5:0.25:1.75], flip)",
    ),
    PublishedModel(
        "xception65_cityscapes_trainfine",
        "xception65_cityscapes_trainfine",
        "deeplabv3_cityscapes_train_2018_02_06.tar.gz",
        439,
        "xception65",
        "deeplabv3plus",
        19,
        "78.79% (val, OS16, [1.0]); 80.42% (val, OS8, [0.75:0.25:1.25], flip)",
    ),
    PublishedModel(
        "xception71_dpc_cityscapes_trainfine",
        "xception71_dpc_cityscapes_trainfine",
        "deeplab_cityscapes_xception71_trainfine_2018_09_08.tar.gz",
        445,
        "xception71",
        "dpc",
        19,
        "80.31% (val, OS16, [1.0])",
    ),
    PublishedModel(
        "xception71_dpc_cityscapes_trainval",
        "xception71_dpc_cityscapes_trainval",
        "deeplab_cityscapes_xception71_trainvalfine_2018_09_08.tar.gz",
        446,
        "xception71",
        "dpc",
        19,
        "82.66% (test, OS8, [0.75:0.25:2], flip)",
    ),
    PublishedModel(
        "xception65_ade20k_train",
        "xception65_ade20k_train",
        "deeplabv3_xception_ade20k_train_2018_05_29.tar.gz",
        439,
        "xception65",
        "deeplabv3plus",
        151,
        "45.65% (val, OS8, [0.5:0.25:1.75], flip)",
    ),
    PublishedModel(
        "xception41_imagenet",
        "xception_41_imagenet",
        "xception_41_2018_05_09.tar.gz",
        288,
        "xception41",
        None,
        None,
        "ImageNet backbone",
    ),
    PublishedModel(
        "xception65_imagenet",
        "xception_65_imagenet",
        "deeplabv3_xception_2018_01_04.tar.gz",
        447,
        "xception65",
        None,
        None,
        "ImageNet backbone",
    ),
    PublishedModel(
        "xception65_imagenet_coco",
        "xception_65_imagenet_coco",
        "xception_65_coco_pretrained_2018_10_02.tar.gz",
        292,
        "xception65",
        None,
        None,
        "ImageNet + COCO backbone",
    ),
    PublishedModel(
        "xception71_imagenet",
        "xception_71_imagenet",
        "xception_71_2018_05_09.tar.gz",
        474,
        "xception71",
        None,
        None,
        "ImageNet backbone",
    ),
    *MOBILENETS,
)
