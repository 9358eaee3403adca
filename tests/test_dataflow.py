"""`from`: a statement that reads earlier statements' outputs (a general DAG in a body). The
form compiles to what a hand-written torch module of the same DAG computes (parameters, fvcore's
FLOPs, outputs with its weights); `sedsl fmt` keeps it; an add written with `from` is a residual
unit for `at residual.end` exactly when the importer's rule says so; write-back uses it for a
timm model whose graph no nesting states (DLA), checked against timm itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sedsl
from sedsl.language.parse import parse
from sedsl.language.printer import unparse
from sedsl.targets.spec import NoSpecForm, write_spec
from tests.references import assert_same_outputs, fvcore_count, n_params, randomise

SPECS = Path(__file__).resolve().parents[1] / "specs"

RES2 = """\
block res2_unit(w, scale = 2) {
  a  = conv(w * scale, 1) bn relu
  s1 = from a channel_slice(0, w) conv(w, 3) bn relu
  p2 = from a channel_slice(w, 2 * w)
  s2 = from s1, p2 add conv(w, 3) bn relu
  from s1, s2, input concat conv(4 * w, 1) bn
}

network dag {
  input 3x32x32
  stem = conv(16, 3) bn relu
  unit = res2_unit(8)
  global_avgpool flatten linear(10)
}
"""


class Res2Unit(nn.Module):
    """RES2 by hand: two pieces of a 1x1 conv's output, the second added to the first's output,
    both concatenated with the unit's input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.s1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                nn.ReLU())
        self.s2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                nn.ReLU())
        self.out = nn.Sequential(nn.Conv2d(32, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a = self.a(x)
        s1 = self.s1(a[:, :8])
        s2 = self.s2(s1 + a[:, 8:16])
        y = self.out(torch.cat([s1, s2, x], 1))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def test_from_compiles_to_the_hand_written_dag() -> None:
    ref = randomise(Res2Unit()).eval()
    net = sedsl.loads(RES2)
    cost = net.cost().base
    assert cost.params == n_params(ref)
    assert cost.flops == fvcore_count(ref, (3, 32, 32))
    ours = sedsl.transfer_weights(ref, net.to_torch(fused=False))
    assert_same_outputs(ours, ref, (3, 32, 32))


def test_fmt_keeps_the_from_form() -> None:
    assert unparse(parse(RES2)) == RES2
    long = RES2.replace("from s1, s2, input concat conv(4 * w, 1) bn",
                        "from s1, s2, input concat " + " ".join(["conv(4 * w, 1) bn"] * 6))
    once = unparse(parse(long))
    assert unparse(parse(once)) == once
    assert sedsl.loads(once).cost().base.params == sedsl.loads(long).cost().base.params


def test_a_statement_without_from_reads_the_previous_one() -> None:
    """`from` changes nothing for the statements without it."""
    plain = RES2.replace("p2 = from a channel_slice(w, 2 * w)\n  s2 = from s1, p2 add",
                         "s2 = from s1, p2 add").replace(
        "s1 = from a channel_slice(0, w)", "p2 = from a channel_slice(w, 2 * w)\n"
        "  s1 = from a channel_slice(0, w)")
    assert sedsl.loads(plain).cost().base == sedsl.loads(RES2).cost().base


BASIC = """\
block basic(c) {
  BODY
}

network n {
  input 3x16x16
  stem = conv(16, 3) bn relu
  b1 = basic(16)
  b2 = basic(16)
}

se {
  ratio = 4
  at residual.end
}
"""


def se_params(body: str) -> int:
    cost = sedsl.loads(BASIC.replace("BODY", body)).cost()
    return cost.se.params - cost.base.params


def test_an_add_from_the_input_is_a_residual_unit() -> None:
    """`from t, input add` is x + f(x), as the importer marks it: `at residual.end` puts an SE
    block there, 16 -> 4 -> 16 channels with biases (timm's SEModule), one per block."""
    block = 16 * 4 + 4 + 4 * 16 + 16
    written = se_params("t = conv(c, 3) bn relu conv(c, 3) bn\n  from t, input add relu")
    assert written == 2 * block
    # two branches of one layer each from the input: no residual unit, no SE block
    with pytest.raises(sedsl.SpecError):
        se_params("l = conv(c, 1)\n  r = from input conv(c, 3)\n  from l, r add relu")


def test_dla34_is_written_with_from_and_gives_timm_outputs() -> None:
    """DLA's trees concatenate earlier outputs (no nesting states them): the written spec has
    `from` statements, timm's parameters and fvcore FLOPs, and its outputs with timm's weights."""
    timm = pytest.importorskip("timm")
    model = randomise(timm.create_model("dla34")).eval()
    imported = sedsl.from_torch(model, input=64)
    text = write_spec(imported.base_ir, se_graph=imported.ir).text
    assert " = from " in text and " add" in text and " concat" in text
    back = sedsl.loads(text)
    cost = back.cost().base
    assert cost.params == n_params(model)
    assert cost.flops == fvcore_count(model, (3, 64, 64))
    ours = sedsl.transfer_weights(model, back.to_torch(fused=False))
    assert_same_outputs(ours, model, (3, 64, 64))
    # DLA's trees are written as flat `from` regions, whose adds are no residual units of
    # their own: an SE rule at them reaches fewer than timm's residual units (a DlaBasic
    # each), and says so
    units = sum(type(m).__name__ == "DlaBasic" for m in model.modules())
    with_se = sedsl.loads(text + "\nse {\n  at residual.end\n}\n")
    reached = sum(with_se.cost().variants.values())
    assert reached < units
    assert [n for n in with_se.notes if f"reaches {reached} of the {units} adds" in n]
    assert sedsl.load(SPECS / "se_resnet50.se").notes == ()


def test_the_se_res2net_spec_is_timms_res2net_with_se_on_every_unit() -> None:
    """specs/se_res2net50.se, written by hand with `from`: its base network has timm's
    res2net50_26w_4s parameters, fvcore FLOPs and (given its weights) outputs; its SE rule
    reaches all 16 residual units, the 12 stated with `from y, input add` among them."""
    timm = pytest.importorskip("timm")
    spec = sedsl.load(SPECS / "se_res2net50.se", input=(3, 64, 64))
    model = randomise(timm.create_model("res2net50_26w_4s")).eval()
    assert spec.cost().base.params == n_params(model)
    assert spec.cost().base.flops == fvcore_count(model, (3, 64, 64))
    base = spec.to_torch(fused=False, se=False)
    assert_same_outputs(sedsl.transfer_weights(model, base), model, (3, 64, 64))
    assert sum(spec.cost().variants.values()) == 16


class TangledProduct(nn.Module):
    """a * B(a) and C(x) + a, concatenated: paths that meet in a way no nesting states, with a
    product among the merges (StarNet's kind of merge inside a `from` region)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return torch.cat([a * self.b(a), self.c(x) + a], 1)


def test_a_product_in_a_from_region_is_written_as_mul() -> None:
    """The region is written with `from t1, t2 mul`; the written spec, given the model's
    weights, gives its outputs."""
    model = randomise(TangledProduct()).eval()
    imported = sedsl.from_torch(model, input=8)
    text = write_spec(imported.base_ir, se_graph=imported.ir).text
    assert " mul" in text and " = from " in text
    back = sedsl.loads(text)
    assert back.cost().base.params == n_params(model)
    assert_same_outputs(sedsl.transfer_weights(model, back.to_torch(fused=False)), model,
                        (3, 8, 8))


class Gate(nn.Module):
    """(a + b(x)) * sigmoid(mean(h(a))): a tangled region that `from` would state but for its
    gate, computed by the model itself, which a spec states only as an `se` rule."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.h = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return (a + self.b(x)) * torch.sigmoid(self.h(a).mean((2, 3), keepdim=True))


def test_a_region_with_no_spec_form_is_still_refused() -> None:
    with pytest.raises(NoSpecForm, match=r"cannot write Gate as a spec: `mul` multiplies"):
        write_spec(sedsl.from_torch(Gate(), input=8).base_ir)


def test_the_editor_takes_a_from_name_to_the_statement_it_reads() -> None:
    """The language server's syntax facts: a name after `from` is the statement it reads (go to
    definition), never a reference to a block of that name (rename)."""
    from sedsl.lsp.syntax import from_source, references
    from sedsl.lsp.text import Text

    text = RES2.replace("res2_unit(w", "s1(w").replace("res2_unit(8)", "s1(8)")
    module = parse(text)
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "from s1, p2" in t)
    col = lines[line - 1].index("from s1, p2") + len("from ") + 1
    found = from_source(module, line, col)
    assert found is not None and found.name == "s1" and found.span.line == 3
    block_refs = [r for r in references(module, Text(text)) if r.name == "s1"]
    assert [r.span.line for r in block_refs] == [12]  # the call, not the three `from s1`
