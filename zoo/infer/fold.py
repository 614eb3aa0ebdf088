"""Folding BatchNorms into the convolutions that feed them, for inference.

BatchNorm folding follows the data flow of one forward pass, not the order in which modules are
declared: a BatchNorm is folded into a convolution only when its input is that convolution's output
and nothing else reads that output. In a depthwise-separable block ``dw -> bn -> relu -> pw -> bn``
each BatchNorm goes into the convolution that feeds it; in ``dw -> pw -> bn`` only the pointwise one
takes it.
"""

from __future__ import annotations

import copy
import weakref
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _ConvOutputs(TorchFunctionMode):
    """Follows convolution outputs through one forward pass without keeping any tensor alive.

    Each output gets a token when its convolution returns; a tensor is matched to its token by identity
    (a weak reference), so an id reused after a tensor is freed is never mistaken for it. ``uses`` counts,
    per token, the torch calls that read the tensor and return a tensor (metadata queries don't count).
    """

    def __init__(self) -> None:
        super().__init__()
        self._by_id: dict[int, tuple[int, weakref.ref]] = {}
        self.conv_of: dict[int, str] = {}
        self.uses: Counter[int] = Counter()

    def add(self, tensor: torch.Tensor, conv_name: str) -> None:
        token = len(self.conv_of)
        self.conv_of[token] = conv_name
        self._by_id[id(tensor)] = (token, weakref.ref(tensor))

    def token(self, tensor: Any) -> int | None:
        """The token of a convolution output that is still alive, else None."""
        entry = self._by_id.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return entry[0] if entry is not None and entry[1]() is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if any(isinstance(o, torch.Tensor) for o in pytree.tree_leaves(out)):
            for leaf in pytree.tree_leaves((args, kwargs)):
                token = self.token(leaf)
                if token is not None:
                    self.uses[token] += 1
        return out


def _is_foldable_bn(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.running_mean is not None
        and module.running_var is not None
    )


def find_conv_bn_pairs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[str, str]]:
    """Names of (convolution, BatchNorm) pairs where the BatchNorm reads only that convolution's output.

    Runs one forward pass of ``model`` (in eval mode, without gradients) on ``example_input`` and follows
    the data: a pair qualifies when the BatchNorm's input is the very tensor the convolution returned,
    nothing else reads that tensor (no residual branch, no in-place activation, not a model output),
    and each of the two modules runs exactly once per forward pass.

    Args:
        model: the network to inspect.
        example_input: an input ``model`` accepts.
    """
    tracker = _ConvOutputs()
    bn_in: dict[str, int | None] = {}
    calls: Counter[str] = Counter()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _CONV_TYPES):

            def after_conv(mod, inputs, output, name=name):
                calls[name] += 1
                if isinstance(output, torch.Tensor):
                    tracker.add(output, name)

            handles.append(module.register_forward_hook(after_conv))
        elif _is_foldable_bn(module):

            def before_bn(mod, inputs, name=name):
                calls[name] += 1
                bn_in[name] = tracker.token(inputs[0]) if inputs else None

            handles.append(module.register_forward_pre_hook(before_bn))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tracker:
            outputs = model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    returned = {tracker.token(leaf) for leaf in pytree.tree_leaves(outputs)}
    pairs = []
    for bn_name, token in bn_in.items():
        if token is None or token in returned or tracker.uses[token] != 1:
            continue
        conv_name = tracker.conv_of[token]
        if calls[conv_name] == 1 and calls[bn_name] == 1:
            pairs.append((conv_name, bn_name))
    return pairs


def fold_conv_bn(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of ``conv`` that computes ``bn(conv(x))`` (BatchNorm in eval mode) in one convolution.

    torch's own ``torch.nn.utils.fusion.fuse_conv_bn_eval`` does the arithmetic.

    Args:
        conv: an ``nn.Conv1d/2d/3d`` (grouped and depthwise included).
        bn: a BatchNorm with running statistics over ``conv``'s output channels.
    """
    if bn.num_features != conv.out_channels:
        raise ValueError(f"cannot fold a BatchNorm of {bn.num_features} features into a conv of {conv.out_channels}")
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


_PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def _folded_replacement(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """What stays of a folded BatchNorm: nothing for a plain one; its activation for a BN+act module."""
    if type(bn) in _PLAIN_BATCHNORMS:
        return nn.Identity()
    if isinstance(getattr(bn, "act", None), nn.Module) and isinstance(getattr(bn, "drop", None), nn.Module):
        return nn.Sequential(bn.drop, bn.act)  # timm's BatchNormAct2d: normalise, drop, activate
    # An unknown subclass may do more than normalise: keep it, as an exact identity normalisation.
    neutral = copy.deepcopy(bn)
    neutral.running_mean.zero_()
    neutral.running_var.fill_(1.0)
    neutral.eps = 0.0
    if neutral.weight is not None:
        neutral.weight.fill_(1.0)
        neutral.bias.zero_()
    return neutral


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def fold_batchnorm(model: nn.Module, example_input: torch.Tensor, *, inplace: bool = False) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution into it (see :func:`find_conv_bn_pairs`).

    A folded plain BatchNorm becomes ``nn.Identity``; a BatchNorm+activation module (timm's
    ``BatchNormAct2d``) keeps its activation. Only valid for inference: the result is in eval mode.

    Args:
        model: the network.
        example_input: an input ``model`` accepts (one forward pass finds the pairs).
        inplace: change ``model`` itself instead of a deep copy.
    """
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    for conv_name, bn_name in find_conv_bn_pairs(target, example_input):
        conv = target.get_submodule(conv_name)
        bn = target.get_submodule(bn_name)
        _set_submodule(target, conv_name, fold_conv_bn(conv, bn))
        _set_submodule(target, bn_name, _folded_replacement(bn))
    return target


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm modules (with running statistics) in ``model``."""
    return sum(_is_foldable_bn(m) for m in model.modules())


# ----------------------------------------------------------------------------------------------------------------------
# The input normalisation


def _folded_first_conv(conv: nn.Conv2d, mean: float, std: torch.Tensor) -> nn.Conv2d:
    """``conv`` with the input normalisation ``(x - mean) / std`` folded in and no padding of its own: the weights
    divided by ``std`` per input channel, the bias less ``sum(W * mean / std)`` (its input arrives padded with the
    mean colour, which is what zero padding after normalisation is)."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, bias=True)
    with torch.no_grad():
        weight = conv.weight.detach() / std.view(1, -1, 1, 1)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        folded.weight.copy_(weight)
        folded.bias.copy_(bias - (weight * mean).sum((1, 2, 3)))
    return folded


class InputFoldedModel(nn.Module):
    """A :class:`~zoo.models.SegmentationModel` whose input normalisation is folded into its first convolution.

    The model normalises, zero-pads to a multiple of its size divisor, and its first convolution zero-pads again;
    zero after normalisation is the mean colour before it. Here one pad with the mean colour does both (the
    convolution's own padding at every side, the divisor's at the bottom and right), then the folded convolution
    runs without padding: the logits equal the model's up to float rounding, border pixels included. Built by
    :func:`fold_input_normalisation`, which refuses where this is not exact.
    """

    def __init__(self, model: nn.Module, first_conv: str, padding: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.first_conv = first_conv
        self.padding = padding
        self.value = float(model.mean[0])
        self.divisor = 1 if model.semantics == "deeplab-tf" else int(model.encoder.size_divisor)

    def decoded(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The decoder's logits for ``x`` padded with the mean colour, and the padded input's size."""
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.divisor, -width % self.divisor
        ph, pw = self.padding
        padded = F.pad(x, (pw, pw + pad_w, ph, ph + pad_h), value=self.value)
        return self.model.decoder(self.model.encoder(padded)), (height + pad_h, width + pad_w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, size = self.decoded(x)
        if logits.shape[-2:] != size:
            align = self.model.semantics == "deeplab-tf"
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=align)
        return logits if tuple(size) == tuple(x.shape[-2:]) else logits[..., : x.shape[-2], : x.shape[-1]]


def _first_conv(model: nn.Module, example_input: torch.Tensor) -> tuple[str | None, bool]:
    """The name of the first convolution the encoder runs, and whether its input is the encoder's input itself."""
    seen: dict[str, Any] = {}
    convs = {module: name for name, module in model.encoder.named_modules() if isinstance(module, nn.Conv2d)}

    def encoder_input(module, inputs):
        seen.setdefault("input", inputs[0])

    def conv_input(module, inputs):
        if "conv" not in seen:
            seen["conv"], seen["conv_input"] = convs[module], inputs[0]

    handles = [model.encoder.register_forward_pre_hook(encoder_input)]
    handles += [module.register_forward_pre_hook(conv_input) for module in convs]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return seen.get("conv"), seen.get("conv_input") is seen.get("input")


def fold_input_normalisation(model: nn.Module, example_input: torch.Tensor) -> InputFoldedModel:
    """``model`` (a copy, eval mode) with its input normalisation folded into its first convolution, where exact.

    Args:
        model: a :class:`~zoo.models.SegmentationModel`.
        example_input: an input ``model`` accepts (one forward pass finds the first convolution).

    Raises:
        ValueError: the fold would not be exact: the mean differs between channels (one pad value cannot stand for
            the mean colour), the first convolution is grouped, pads other than with zeros, or reads something other
            than the normalised input (a TF ``SAME`` pad before it).
    """
    for attribute in ("mean", "std", "encoder", "decoder", "semantics"):
        if not hasattr(model, attribute):
            raise ValueError(f"model must be a SegmentationModel (no {attribute!r})")
    if len(set(model.mean)) != 1:
        raise ValueError(f"the mean differs between channels ({model.mean}): one pad value cannot be the mean colour")
    target = copy.deepcopy(model).eval()
    name, direct = _first_conv(target, example_input)
    if name is None or not direct:
        raise ValueError("the first convolution does not read the normalised input itself: not folded")
    conv = target.encoder.get_submodule(name)
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"the first convolution {name} is grouped or pads other than with zeros: not folded")
    _set_submodule(target.encoder, name, _folded_first_conv(conv, float(model.mean[0]), torch.tensor(model.std)))
    return InputFoldedModel(target, name, tuple(conv.padding)).eval()


__all__ = [
    "InputFoldedModel",
    "count_batchnorms",
    "find_conv_bn_pairs",
    "fold_batchnorm",
    "fold_conv_bn",
    "fold_input_normalisation",
]
