"""Copy weights between two models of the same architecture, by structure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sedsl.errors import SpecError


def _tensors(model: Any) -> list[tuple[str, torch.Tensor]]:
    state = model.state_dict() if isinstance(model, nn.Module) else model
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a module or a state dict, got {type(model).__name__}")
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def _same_shape(a: torch.Size, b: torch.Size) -> bool:
    """Equal, or equal once trailing 1s are dropped (a linear layer as a 1x1 conv)."""

    def core(s: torch.Size) -> tuple[int, ...]:
        dims = tuple(s)
        while len(dims) > 2 and dims[-1] == 1:
            dims = dims[:-1]
        return dims

    return tuple(a) == tuple(b) or core(a) == core(b)


def transfer_weights(src: Any, dst: nn.Module) -> nn.Module:
    """Copy `src`'s parameters and buffers into `dst`, pairing them in registration order.

    Both models must hold the same tensors in the same order (as timm's ResNets and SENets do
    for the matching sedsl specs). Shapes are checked pair by pair; the first mismatch is an
    error naming both tensors. `dst` is returned."""
    theirs, ours = _tensors(src), _tensors(dst)
    for i, ((src_key, s), (dst_key, d)) in enumerate(zip(theirs, ours, strict=False)):
        if not _same_shape(s.shape, d.shape):
            raise SpecError(
                f"tensor {i}: {src_key} {tuple(s.shape)} does not fit {dst_key} {tuple(d.shape)}",
                None, "the two models differ in structure at this point")
    if len(theirs) != len(ours):
        extra = theirs[len(ours)][0] if len(theirs) > len(ours) else ours[len(theirs)][0]
        raise SpecError(f"the source has {len(theirs)} tensors and the target {len(ours)}; "
                        f"the first without a partner is {extra}")
    target = dict(dst.state_dict())
    with torch.no_grad():
        for (_, s), (dst_key, _) in zip(theirs, ours, strict=True):
            target[dst_key].copy_(s.reshape(target[dst_key].shape))
    return dst
