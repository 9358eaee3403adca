"""FLOP counters see the fused ops: torch's FlopCounterMode (through the registered formulas)
and fvcore (through sedsl.fvcore_handles()) count a fused SE-ResNet-50, and a small ResNet with
ECA and CECA blocks (and ones with Gather-Excite's and GCT's), exactly as their plain
lowerings. Every expected number is the counter's own count of the plain model, never sedsl's
cost model.

The fused model runs its blocks as `torch.ops.sedsl.se_block` (`eca_block`) here on the CPU
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
    """How many times sedsl::se_block, sedsl::se_bn_block (the SE block with bn3 folded in,
    as the fusion pass lowers SE-ResNet), sedsl::eca_block, sedsl::ge_block,
    sedsl::gct_block or sedsl::channel_apply (the generic transform's apply) ran during
    `run`."""
    from sedsl.pytorch.kernels import bn_op, eca_op, gct_op, ge_op, steps_op
    from sedsl.pytorch.kernels import op as se_op

    calls = [0]
    originals = [(module, module._forward) for module in (se_op, bn_op, eca_op, ge_op, gct_op)]
    originals.append((steps_op, steps_op._apply_forward))

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            return original(*args, **kwargs)
        return counted

    for module, original in originals:
        name = "_apply_forward" if module is steps_op else "_forward"
        setattr(module, name, counting(original))
    try:
        run()
    finally:
        for module, original in originals:
            setattr(module, "_apply_forward" if module is steps_op else "_forward", original)
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


ECA_NET = """use "lib/resnet.se"
network eca_pair {
  input 3x64x64
  stem = { conv(8, 3) bn relu }
  conv2 = bottleneck(4)
  conv3 = bottleneck(8, stride = 2)
  head = classifier(5)
}
se {
  variant = eca
  at residual.end in conv2
  at residual.end in conv3 { variant = ceca, kernel = 5 }
}
"""


@pytest.fixture(scope="module")
def eca_models() -> dict[str, nn.Module]:
    net = sedsl.loads(ECA_NET, path=str(ROOT / "specs" / "eca_pair.se"))
    return {"plain": net.to_torch(fused=False), "fused": net.to_torch(fused=True),
            "base": net.to_torch(fused=False, se=False)}


@pytest.mark.parametrize("train", [False, True], ids=["forward", "training-step"])
def test_counters_count_the_fused_eca_op_as_the_plain_lowering(
        eca_models: dict[str, nn.Module], train: bool) -> None:
    """The eca and ceca blocks run as sedsl::eca_block (the fusion pass lowers them to it), and
    FlopCounterMode and fvcore count them as the plain lowering's conv1d."""
    fused = eca_models["fused"]
    fused.load_state_dict(eca_models["plain"].state_dict())
    want = flop_counter(eca_models["plain"], train)
    with trace_fused_op():
        calls = op_calls(lambda: flop_counter(fused, train))
        got = flop_counter(fused, train)
    assert calls == 2  # both blocks ran as the op
    assert got == want > flop_counter(eca_models["base"], train)
    if not train:
        x = INPUT
        with trace_fused_op():
            assert (fvcore_flops(fused, x, sedsl.fvcore_handles())
                    == fvcore_flops(eca_models["plain"], x)
                    > fvcore_flops(fused, x))  # without the handles the op counts nothing


@pytest.mark.parametrize("variant", ["ge", "gct", "ese", "se_bn", "srm", "ecam"])
@pytest.mark.parametrize("train", [False, True], ids=["forward", "training-step"])
def test_counters_count_the_other_fused_ops_as_the_plain_lowering(variant: str,
                                                                  train: bool) -> None:
    """Gather-Excite's parameter-free blocks run as sedsl::ge_block, GCT's as sedsl::gct_block;
    ese, se_bn, srm and ecam their statistic and apply as sedsl::channel_stats and
    sedsl::channel_apply, their transform as the plain modules. FlopCounterMode and fvcore
    count them as the plain lowering does: for GE and GCT nothing beyond the base network
    (means, sums of squares, GCT's normalisation, gates, products), for the others the FCs,
    channel convs and BNs (FlopCounterMode more than the base wherever there is a conv, fvcore
    wherever there is a BN too)."""
    text = ECA_NET.replace("variant = eca", f"variant = {variant}").replace(
        "{ variant = ceca, kernel = 5 }", "")
    net = sedsl.loads(text, path=str(ROOT / "specs" / "pair.se"))
    plain, fused = net.to_torch(fused=False), net.to_torch(fused=True)
    fused.load_state_dict(plain.state_dict())
    want = flop_counter(plain, train)
    with trace_fused_op():
        calls = op_calls(lambda: flop_counter(fused, train))
        got = flop_counter(fused, train)
    assert calls == 2  # both blocks ran as the op (the generic blocks: the apply op)
    base = flop_counter(net.to_torch(fused=False, se=False), train)
    parameter_free = variant in ("ge", "gct")
    assert got == want
    assert want == base if parameter_free else (want > base) == (variant != "srm")  # no conv
    if not train:
        with trace_fused_op():
            counted = fvcore_flops(fused, INPUT, sedsl.fvcore_handles())
        assert counted == fvcore_flops(plain, INPUT)
        if not parameter_free:
            assert counted > fvcore_flops(net.to_torch(se=False), INPUT)


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
