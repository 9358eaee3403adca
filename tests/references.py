"""Helpers for checking specs against outside references (torchvision, timm, plain torch)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import sedsl


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def uninitialised_params(build: Callable[[], nn.Module]) -> int:
    """The parameter count of a model built without initialising its weights: the memory is
    allocated but never touched, so even RegNetY-128GF (644M parameters) costs well under a
    second. (The meta device would be cheaper still, but torchvision's RegNet computes its
    widths with tensors and reads them back, which meta tensors cannot do.)"""
    skipped = {name: getattr(nn.init, name) for name in dir(nn.init)
               if name.endswith("_") and not name.startswith("_")}
    try:
        for name in skipped:
            setattr(nn.init, name, lambda t, *args, **kwargs: t)
        return n_params(build())
    finally:
        for name, fn in skipped.items():
            setattr(nn.init, name, fn)


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so that an output comparison sees every BN
    (fresh BNs are the identity in eval mode); eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                for t, lo, hi in ((m.running_mean, -0.2, 0.2), (m.running_var, 0.5, 1.5),
                                  (m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2)):
                    t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)
    return model.eval()


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random (weights of fan-in n ~ N(0, 1/n), vectors ~ U(-0.2, 0.2)), then
    random BN statistics and affine parameters (randomise_bn); eval mode. A reference's
    zero-initialised layers (timm's GC add fusion, zero_init_last BNs) would otherwise hide a
    mismatch behind zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.rand(p.shape, generator=gen) * 0.4 - 0.2)
    return randomise_bn(model, seed)


def fvcore_count(model: nn.Module, shape: tuple[int, ...]) -> int:
    """fvcore's FlopCountAnalysis total on a zero batch of one, eval mode, warnings off: the count
    of a reference model, taken without sedsl."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore traces with TorchScript, deprecated in torch
        logging.getLogger("fvcore").setLevel(logging.ERROR)  # the ops it skips
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, *shape))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())


def assert_same_outputs(ours: nn.Module, theirs: nn.Module, shape: tuple[int, ...],
                        tol: float = 1e-4) -> None:
    """Eval-mode outputs on the same random batch agree within `tol` of their largest value."""
    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected, got = theirs.eval()(x), ours.eval()(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= tol * expected.abs().max().item()


def transferred(theirs: nn.Module, net: sedsl.Network, fused: bool, se: bool = True,
                input: tuple[int, ...] | None = None) -> nn.Module:
    """The spec's module with the reference's weights."""
    return sedsl.transfer_weights(theirs, net.to_torch(fused=fused, se=se), input)
