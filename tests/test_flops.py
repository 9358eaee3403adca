"""FLOP counters see the fused SE op: torch's FlopCounterMode (through the registered formulas)
and fvcore (through sedsl.fvcore_handles()) count a fused SE-ResNet-50 exactly as its plain
lowering. Every expected number is the counter's own count of the plain model, never sedsl's
cost model.

The fused model runs its SE blocks as `torch.ops.sedsl.se_block` here on the CPU
(`trace_fused_op`, whose implementation there is the plain-torch reference), as it does on a
GPU; the counters only see the op.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import sedsl
from sedsl.pytorch.export import trace_fused_op
from sedsl.pytorch.flops import fvcore_flops

ROOT = Path(__file__).resolve().parents[1]
INPUT = (3, 64, 64)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    net = sedsl.load(ROOT / "specs/se_resnet50.se", input=INPUT)
    return {"plain": net.to_torch(fused=False), "fused": net.to_torch(fused=True),
            "base": net.to_torch(fused=False, se=False)}


def flop_counter(model: nn.Module, train: bool) -> int:
    """FlopCounterMode's total for a forward (eval, no grad) or a training step's forward and
    backward, batch 2."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, *INPUT)
    model.train(train)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return int(counter.get_total_flops())


def op_calls(run: Callable[[], Any]) -> int:
    """How many times sedsl::se_block or sedsl::se_bn_block (the SE block with bn3 folded in,
    as the fusion pass lowers SE-ResNet) ran during `run`."""
    from sedsl.pytorch.kernels import bn_op
    from sedsl.pytorch.kernels import op as se_op

    calls = [0]
    originals = [(module, module._forward) for module in (se_op, bn_op)]

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return original(*args, **kwargs)
        return counted

    for module, original in originals:
        module._forward = counting(original)  # type: ignore[attr-defined]
    try:
        run()
    finally:
        for module, original in originals:
            module._forward = original  # type: ignore[attr-defined]
    return calls[0]


@pytest.mark.parametrize("train", [False, True], ids=["forward", "training-step"])
def test_flop_counter_mode_counts_the_fused_op_as_the_plain_lowering(
        models: dict[str, nn.Module], train: bool) -> None:
    want = flop_counter(models["plain"], train)
    with trace_fused_op():
        calls = op_calls(lambda: flop_counter(models["fused"], train))
        got = flop_counter(models["fused"], train)
    assert calls == 16  # every SE block ran as the op
    assert got == want
    assert want > flop_counter(models["base"], train)  # the SE blocks' FCs are in it


def test_fvcore_counts_the_fused_op_with_sedsls_handles(models: dict[str, nn.Module]) -> None:
    want = fvcore_flops(models["plain"], INPUT)
    with trace_fused_op():
        got = fvcore_flops(models["fused"], INPUT, sedsl.fvcore_handles())
        unknown = fvcore_flops(models["fused"], INPUT)  # the op skipped: its FCs and bn3
    assert got == want
    assert unknown < fvcore_flops(models["base"], INPUT) < want


@pytest.mark.parametrize("order", ["counter-first", "sedsl-first"])
def test_formulas_register_whichever_is_imported_first(order: str) -> None:
    """The formulas are registered when both are imported, in either order, and importing
    sedsl's kernels alone does not import torch.utils.flop_counter (it imports triton)."""
    imports = ["import torch.utils.flop_counter", "import sedsl.pytorch.kernels"]
    if order == "sedsl-first":
        imports.reverse()
    code = "; ".join([
        "import sys, torch", imports[0],
        "assert 'torch.utils.flop_counter' in sys.modules or 'triton' not in sys.modules",
        imports[1], "from torch.utils.flop_counter import flop_registry as r",
        "ops = [getattr(torch.ops.sedsl, n) for n in ('se_block', 'se_block_backward',"
        " 'se_bn_block', 'se_bn_block_backward')]", "assert all(op in r for op in ops)"])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
