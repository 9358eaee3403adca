"""The vocabulary: one record per activation and per squeeze, and nothing else to edit.

Every other table derives from these records: the ops a spec can call (`sedsl.ir.ops`), the values
the SE settings accept (`sedsl.ir.se`), the generated PyTorch code (`sedsl.targets.codegen`), the
plain-torch
reference (`sedsl.pytorch.kernels.reference`) and what the fusion pass hands to the Triton kernels
(`kernel`; the kernels implement exactly these names, `sedsl.pytorch.kernels.triton_se`). Adding an
activation is one entry here: where the kernels lack it, SE blocks that use it stay plain ops,
slower perhaps, never broken. This module imports nothing but `sedsl.record`: the compiler reads
it without torch.
"""

from __future__ import annotations

from sedsl.record import Record


class Activation(Record):
    """An elementwise activation: `relu`, `sigmoid`, ..."""

    name: str
    module: str  # its torch.nn class: generated code writes `nn.<module>()`
    functional: str  # dotted path of the torch function computing it: torch.nn.functional.relu
    inplace: str | None  # dotted path of a one-argument in-place form, if torch has one
    formula: str  # what it computes, for the docs
    gate: bool = False  # may be an SE gate (the excitation's last activation)
    kernel: bool = False  # the Triton SE kernels implement it, forward and derivative
    # Generated code may write `nn.<module>(inplace=True)` over a fresh tensor nobody else
    # reads: only where autograd's derivative needs the output, not the overwritten input.
    inplace_module: bool = False
    # The values a gate saturates at: low (the channel switched off) and high (passed), None
    # where it is unbounded (`sedsl excite` counts gates within a margin of them).
    bounds: tuple[float | None, float | None] = (None, None)


class Squeeze(Record):
    """How an attention block squeezes H x W to one value per channel."""

    name: str
    expr: str  # the statistic in torch over {0} (N, C, H, W) -> (N, C, 1, 1)
    formula: str
    kernel: bool = False  # the Triton squeeze kernel implements it
    reduce: str | None = None  # for a plain reduction, its Tensor method (mean, amax)


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("relu", "ReLU", "torch.relu", "torch.relu_", "max(x, 0)", gate=True, kernel=True,
               inplace_module=True, bounds=(0.0, None)),
    Activation("relu6", "ReLU6", "torch.nn.functional.relu6", None, "min(max(x, 0), 6)",
               kernel=True),
    Activation("silu", "SiLU", "torch.nn.functional.silu", "torch.ops.aten.silu_",
               "x * sigmoid(x)", kernel=True),
    Activation("hardswish", "Hardswish", "torch.nn.functional.hardswish",
               "torch.ops.aten.hardswish_", "x * relu6(x + 3) / 6", kernel=True),
    Activation("sigmoid", "Sigmoid", "torch.sigmoid", "torch.sigmoid_", "1 / (1 + exp(-x))",
               gate=True, kernel=True, bounds=(0.0, 1.0)),
    Activation("hardsigmoid", "Hardsigmoid", "torch.nn.functional.hardsigmoid",
               "torch.ops.aten.hardsigmoid_", "relu6(x + 3) / 6", gate=True, kernel=True,
               bounds=(0.0, 1.0)),
    Activation("tanh", "Tanh", "torch.tanh", "torch.tanh_", "tanh(x)", gate=True, kernel=True,
               bounds=(-1.0, 1.0)),
    Activation("gelu", "GELU", "torch.nn.functional.gelu", None,
               "x * Phi(x), Phi the normal CDF"),
    Activation("mish", "Mish", "torch.nn.functional.mish", None, "x * tanh(softplus(x))"),
)}

SQUEEZES: dict[str, Squeeze] = {s.name: s for s in (
    Squeeze("avg", "{0}.mean((2, 3), keepdim=True)",
            "the mean over H x W (the paper's global average pooling)", True, "mean"),
    Squeeze("max", "{0}.amax((2, 3), keepdim=True)", "the maximum over H x W", True, "amax"),
    Squeeze("avgpool", "nn.functional.adaptive_avg_pool2d({0}, 1)",
            "the mean over H x W by adaptive average pooling, as torchvision's "
            "SqueezeExcitation computes it (fvcore counts this one: one per element)"),
    Squeeze("avgmax", "0.5 * {0}.mean((2, 3), keepdim=True) + 0.5 * {0}.amax((2, 3), keepdim=True)",
            "the average of the mean and the maximum (timm's light CBAM)"),
    Squeeze("std", "{0}.std((2, 3), keepdim=True)",
            "the standard deviation over H x W, unbiased, no epsilon (SRM's release)"),
    Squeeze("l2", "({0}.pow(2).sum((2, 3), keepdim=True) + 1e-05).pow(0.5)",
            "the L2 norm over H x W, eps 1e-5 inside the root (GCT)"),
)}

GATES = tuple(n for n, a in ACTIVATIONS.items() if a.gate)
KERNEL_ACTIVATIONS = frozenset(n for n, a in ACTIVATIONS.items() if a.kernel)
KERNEL_SQUEEZES = frozenset(n for n, s in SQUEEZES.items() if s.kernel)
