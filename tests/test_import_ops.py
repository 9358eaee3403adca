"""The ops issue 22 added for timm's star, crop and normalisations (`parallel mul`, `pad` with
negative amounts, ...): each written in a spec and compared with the module it stands for
(timm's, or plain torch): parameters, fvcore's FLOPs of the lowered module against sedsl's cost
and of the reference, outputs after copying the reference's weights; then the smallest timm
model that needs it, imported and checked against the model (parameters, fvcore, outputs) and
its written spec reloaded with the model's weights."""

from __future__ import annotations

import pytest
from torch import nn

import sedsl
from sedsl.ir.node import records
from sedsl.targets.spec import write_spec
from tests.references import assert_same_outputs, fvcore_count, n_params, randomise

timm = pytest.importorskip("timm")


def against(spec: str, reference: nn.Module, shape: tuple[int, ...]) -> sedsl.Network:
    """The spec's network against `reference` (randomised): parameters, fvcore's FLOPs (sedsl's
    cost, the lowered module's and the reference's), outputs with the reference's weights."""
    reference = randomise(reference)
    net = sedsl.loads(spec)
    module = net.to_torch(fused=False)
    cost = net.cost()
    assert cost.se.params == n_params(module) == n_params(reference)
    assert cost.se.flops == fvcore_count(module, shape) == fvcore_count(reference, shape)
    assert_same_outputs(sedsl.transfer_weights(reference, module), reference, shape, tol=1e-5)
    return net


def imports_exactly(model: nn.Module, size: int) -> sedsl.Network:
    """`model` (randomised) imported: parameters, fvcore, outputs; its written spec reloaded
    with the model's weights gives the same outputs."""
    model = randomise(model)
    shape = (3, size, size)
    net = sedsl.from_torch(model, input=size, name="m")
    assert net.cost().se.params == n_params(model)
    assert net.cost().se.flops == fvcore_count(model, shape)
    assert_same_outputs(net.to_torch(fused=False), model, shape, tol=1e-5)
    back = sedsl.loads(write_spec(net.base_ir, se_graph=net.ir).text)
    assert (back.cost().se.params, back.cost().se.flops) == \
        (net.cost().se.params, net.cost().se.flops)
    assert_same_outputs(sedsl.transfer_weights(model, back.to_torch(fused=False)), model, shape,
                        tol=1e-5)
    return net


def ops(net: sedsl.Network) -> set[str]:
    return {r.op for _, r in records(net.ir)}


# --- parallel mul: StarNet's star -------------------------------------------------------------

STAR = """
network star {
  input 16x8x8
  residual {
    conv(16, 7, groups = 16, bias = true) bn
    parallel mul {
      conv(48, 1, bias = true) relu6
      conv(48, 1, bias = true)
    }
    conv(16, 1, bias = true) bn
    conv(16, 7, groups = 16, bias = true)
  }
}
"""


def test_parallel_mul_is_starnets_star() -> None:
    """timm's StarNet Block: act(f1(x)) * f2(x) between its depthwise convs."""
    starnet = pytest.importorskip("timm.models.starnet")
    against(STAR, starnet.Block(16, mlp_ratio=3), (16, 8, 8))


def test_parallel_mul_needs_one_shape() -> None:
    with pytest.raises(sedsl.SpecError, match="cannot multiply tensors of different shapes"):
        sedsl.loads("network n {\n  input 8x8x8\n  parallel mul { conv(8, 1); conv(4, 1) }\n}\n")


def test_starnet_imports_exactly() -> None:
    net = imports_exactly(timm.create_model("starnet_s1"), 64)
    assert "product" in ops(net)
