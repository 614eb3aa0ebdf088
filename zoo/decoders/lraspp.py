"""LR-ASPP head (Howard et al. 2019, "Searching for MobileNetV3", Sec. 6.3) as TF DeepLab builds it for its
MobileNetV3 models (research/deeplab, model_zoo.md's flags: ``aspp_with_squeeze_and_excitation``,
``image_se_uses_qsigmoid``, ``aspp_convs_filters=128``, ``aspp_with_concat_projection=0``,
``decoder_use_sum_merge``, ``decoder_output_is_logits``, ``decoder_output_stride=8``).

The deepest feature goes through a 1x1 conv-BN-ReLU (TF's ``aspp0``), gated by the image-pooling branch: average
pooling (global, or TF's ``image_pooling_crop_size`` window and ``image_pooling_stride``), a 1x1 conv with bias and
the gate (TF's ``q_sigmoid``: ``relu6(x + 3) * 0.16667``, or the sigmoid), resized back. The gated feature, resized
to the low-level feature at ``low_reduction`` (TF's decoder end point), goes through a 1x1 conv to the classes
(``decoder_conv0``) and is summed with a 1x1 conv of the low-level feature (``feature_projection0``): the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.decoders.base import check_num_classes, tap_index
from zoo.encoders.base import FeatureInfo
from zoo.layers import ConvBNAct, init_weights

GATES = ("hard_sigmoid", "sigmoid")


class LRASPPDecoder(nn.Module):
    """LR-ASPP: a pooled gate on a 1x1 conv of the deepest feature, summed with a low-level projection; logits at
    ``low_reduction``.

    Args:
        feature_info: the encoder's taps.
        num_classes: output classes.
        output_stride: the encoder's output stride (unused; every decoder takes it).
        channels: channels of the 1x1 conv and the gate (TF's ``aspp_convs_filters``).
        low_reduction: reduction of the low-level feature (TF's ``decoder_output_stride``); the first tap there.
        pool_size: the pooling window in feature pixels, (height, width); None pools globally. TF DeepLab's
            Cityscapes models: ``image_pooling_crop_size`` 769 at output stride 32, a 25x25 window. A feature
            smaller than the window is pooled over its whole extent in that dimension.
        pool_stride: the pooling stride, (height, width) (TF's ``image_pooling_stride``, 4,5 in model_zoo.md).
        gate: "hard_sigmoid" (TF's ``q_sigmoid``, ``image_se_uses_qsigmoid``) or "sigmoid".
        align_corners: ``align_corners`` of the resizes (True under ``semantics="deeplab-tf"``).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        output_stride: int,
        channels: int = 128,
        low_reduction: int = 8,
        pool_size: tuple[int, int] | None = None,
        pool_stride: tuple[int, int] = (1, 1),
        gate: str = "hard_sigmoid",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if gate not in GATES:
            raise ValueError(f"gate must be 'hard_sigmoid' or 'sigmoid', got {gate!r}")
        tap_index(feature_info, low_reduction)  # names the reductions there are when none matches
        self.low_index = min(i for i, f in enumerate(feature_info) if f.reduction == low_reduction)
        self.deep_index = tap_index(feature_info, "deepest")
        deep_chs, low_chs = feature_info[self.deep_index].channels, feature_info[self.low_index].channels
        self.conv = ConvBNAct(deep_chs, channels, 1)  # BatchNorm eps 1e-5, as TF DeepLab's ASPP
        self.pool_conv = nn.Conv2d(deep_chs, channels, 1)
        self.hard_gate = gate == "hard_sigmoid"
        self.pool_size = (0, 0) if pool_size is None else (int(pool_size[0]), int(pool_size[1]))
        self.pool_stride = (int(pool_stride[0]), int(pool_stride[1]))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.low_classifier = nn.Conv2d(low_chs, num_classes, 1)
        self.align_corners = align_corners
        init_weights(self)

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if self.pool_size[0] > 0:
            window = (min(self.pool_size[0], h), min(self.pool_size[1], w))
            pooled = F.avg_pool2d(x, window, self.pool_stride)
        else:
            pooled = x.mean((2, 3), keepdim=True)
        g = self.pool_conv(pooled)
        g = F.relu6(g + 3.0) * 0.16667 if self.hard_gate else torch.sigmoid(g)
        return F.interpolate(g, size=(h, w), mode="bilinear", align_corners=self.align_corners)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        deep, low = features[self.deep_index], features[self.low_index]
        y = self.conv(deep) * self._gate(deep)
        y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return self.classifier(y) + self.low_classifier(low)
