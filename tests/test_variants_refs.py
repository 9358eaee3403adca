"""The attention variants timm does not ship (or cannot build) equal their authors' code: srm,
gct, simam, scse and Gather-Excite's theta-minus, theta and theta-plus (settings `gather`, `mlp`).

Each variant sits after bn3 of every bottleneck, in a small ResNet and in `specs/se_resnet50.se`
(timm layout, 64x64), and is compared with timm's ResNet whose `attn_layer` is the reference
module (tests/attention_references.py; smp's own `SCSEModule` for scse): parameters, FLOPs
(fvcore on the reference, sedsl's analytic count, fvcore on sedsl's plain lowering) and eval
outputs after copying the weights, with every constant-initialised parameter (SRM's cfc, GCT's
alpha, gamma, beta) and every BN randomised first. Mutants of sedsl's tables show each check can
fail. Also here: `init = identity` (issue 19, item 6) and the variants table of docs/language.md.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import sedsl
from sedsl.ir import ops, vocab
from sedsl.ir import se as se_ir
from sedsl.ir.node import records
from sedsl.pytorch.flops import fvcore_flops
from sedsl.record import replace
from sedsl.targets import support
from tests.attention_references import GCT, SRM, GatherExcite, SimAM
from tests.references import n_params, randomise_bn

timm = pytest.importorskip("timm")
tvm = pytest.importorskip("torchvision.models")
smp_modules = pytest.importorskip("segmentation_models_pytorch.base.modules")
resnet = pytest.importorskip("timm.models.resnet")

ROOT = Path(__file__).resolve().parents[1]
SE_RESNET50 = ROOT / "specs" / "se_resnet50.se"
SIZE = 64  # input height and width: feature maps 16, 8, 4, 2 in ResNet-50's four stages

# timm's ResNet has four stages and a 64-wide stem. Bottleneck widths 24, 40, 48, 32: scSE's
# floor(C / 16) is 1, 2, 3, 2 where rounding to the nearest (Gather-Excite's MLP, timm's
# make_divisible) gives 2, 3, 3, 2: either rounding in the wrong variant changes the count.
SMALL = """\
use "lib/resnet.se"

network small_attention(classes = 10) {
  input 3x64x64
  stem  = stem7x7(64, ceil = false)
  conv2 = bottleneck(6, stride_3x3 = true) * 2
  conv3 = bottleneck(10, stride = 2, stride_3x3 = true) * 1
  conv4 = bottleneck(12, stride = 2, stride_3x3 = true) * 1
  conv5 = bottleneck(8, stride = 2, stride_3x3 = true) * 1
  head  = classifier(classes)
}

se {
SETTINGS  at residual.end in conv2..conv5
}
"""


@dataclass(frozen=True)
class Net:
    """A spec with an se section to fill in, and timm's equal network with an attention layer."""

    name: str
    spec: Callable[[str], sedsl.Network]
    timm: Callable[[Any], nn.Module]  # attn_layer (None: the base network) -> the model
    maps: dict[int, int]  # channels -> the height (= width) of the map the block sees


def _small_spec(settings: str) -> sedsl.Network:
    return sedsl.loads(SMALL.replace("SETTINGS", settings),
                       path=str(ROOT / "specs" / "small_attention.se"))


def _resnet50_spec(settings: str) -> sedsl.Network:
    text = re.sub(r"\nse \{.*\}", "\nse {\n" + settings + "  at residual.end in conv2..conv5\n}",
                  SE_RESNET50.read_text(), flags=re.S)
    return sedsl.loads(text, path=str(SE_RESNET50), input=(3, SIZE, SIZE), layout="timm")


def _small_timm(attn: Any) -> nn.Module:
    model: nn.Module = resnet.ResNet(resnet.Bottleneck, (2, 1, 1, 1), num_classes=10,
                                     channels=(6, 10, 12, 8), block_args={"attn_layer": attn})
    return model


def _resnet50_timm(attn: Any) -> nn.Module:
    model: nn.Module = timm.create_model("resnet50", block_args={"attn_layer": attn})
    return model


NETS = {
    "small": Net("small", _small_spec, _small_timm, {24: 16, 40: 8, 48: 4, 32: 2}),
    "resnet50": Net("resnet50", _resnet50_spec, _resnet50_timm,
                    {256: 16, 512: 8, 1024: 4, 2048: 2}),
}


@dataclass(frozen=True)
class Case:
    """A variant's settings and its reference module (channels, the map size -> the module).
    `by_name`: the reference's attention tensors -> sedsl's step modules, where the structural
    matcher cannot pair them (see `_copy_weights`)."""

    settings: str
    reference: Callable[[int, int], nn.Module]
    by_name: dict[str, str] | None = None


def _scse(c: int, size: int) -> nn.Module:
    return smp_modules.SCSEModule(c)  # type: ignore[no-any-return]


CASES = {
    "srm": Case("variant = srm\n", lambda c, size: SRM(c),
                {"cfc": "cfc.cfc", **{f"bn.{k}": f"bn.{k}" for k in (
                    "weight", "bias", "running_mean", "running_var", "num_batches_tracked")}}),
    "gct": Case("variant = gct\n", lambda c, size: GCT(c),
                {k: f"norm.{k}" for k in ("alpha", "gamma", "beta")}),
    "simam": Case("variant = simam\n", lambda c, size: SimAM(c)),
    "scse": Case("variant = scse\n", _scse),
    "ge_theta_minus": Case("variant = ge\n", lambda c, size: GatherExcite(c)),
    "ge_theta": Case("variant = ge\ngather = conv\n",
                     lambda c, size: GatherExcite(c, (size, size), "conv")),
    "ge_theta_plus": Case("variant = ge\ngather = conv\nmlp = true\n",
                          lambda c, size: GatherExcite(c, (size, size), "conv", mlp=True)),
    "ge_mean_mlp": Case("variant = ge\nmlp = true\n",
                        lambda c, size: GatherExcite(c, mlp=True)),
}


def _reference(net: Net, case: Case) -> nn.Module:
    """timm's network with the reference after every bottleneck's bn3, every parameter that
    starts as a constant (zeros, ones) and every BN randomised, in eval mode."""
    def attn(channels: int, **dd: Any) -> nn.Module:  # timm passes device=, dtype=
        return case.reference(channels, net.maps[channels])

    model = net.timm(attn)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.copy_(torch.rand(p.shape, generator=gen) * 2 - 1)
    return randomise_bn(model)


def _attention_key(key: str, by_name: dict[str, str]) -> str:
    """timm's `layer2.0.se.<tensor>` as sedsl's `conv3.block1.se.<step>.<tensor>`."""
    found = re.fullmatch(r"layer(\d+)\.(\d+)\.se\.(.+)", key)
    assert found is not None, key
    stage, index, rest = found.groups()
    return f"conv{int(stage) + 1}.block{int(index) + 1}.se.{by_name[rest]}"


def _copy_weights(theirs: nn.Module, ours: nn.Module, net: Net, case: Case,
                  network: sedsl.Network) -> nn.Module:
    """`sedsl.transfer_weights`, or where it cannot pair the layers, the structural matcher for
    the base network and an explicit name map for the attention tensors.

    The matcher treats a module that owns tensors as one unit whose output stands for all it
    computes. SRM's and GCT's reference modules own parameters and compute the whole block
    (SRMLayer holds `cfc` and runs its `bn` child inside; GCT holds alpha, gamma, beta and
    applies the gate itself), while sedsl's blocks are one node per step (StyleFC then bn;
    GCTNorm then the gate): the same computation at another granularity, so the graphs the
    matcher compares differ and it refuses (correctly, by its rules)."""
    if case.by_name is None:
        return sedsl.transfer_weights(theirs, ours)
    state = theirs.state_dict()
    base = net.timm(None)
    base.load_state_dict({k: v for k, v in state.items() if ".se." not in k})
    base_ours = sedsl.transfer_weights(base, network.to_torch(fused=False, se=False))
    missing, unexpected = ours.load_state_dict(base_ours.state_dict(), strict=False)
    assert not unexpected
    attention = {_attention_key(k, case.by_name): v for k, v in state.items() if ".se." in k}
    counted = sorted(k for k in attention if not k.endswith("num_batches_tracked"))
    assert counted == sorted(missing)  # every tensor of our blocks (torch does not report BN's
    # missing num_batches_tracked), nothing else
    tensors = dict(ours.state_dict(keep_vars=True))
    with torch.no_grad():
        for key, value in attention.items():
            tensors[key].copy_(value)
    return ours


def _adaptive_pool_flops(model: nn.Module) -> int:
    """What fvcore counts for the reference's nn.AdaptiveAvgPool2d layers inside attention
    blocks (one per input element, batch 1): smp's cSE pools with one, sedsl's squeeze is a
    `mean`, which fvcore does not count (docs/cost_model.md)."""
    counted = 0

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal counted
        counted += args[0][0].numel()

    handles = [m.register_forward_hook(hook) for name, m in model.named_modules()
               if isinstance(m, nn.AdaptiveAvgPool2d) and ".se." in name]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, SIZE, SIZE))
    finally:
        for h in handles:
            h.remove()
    return counted


def check(net: Net, case: Case, fused: bool = False) -> None:
    """Parameters, FLOPs and outputs of sedsl's variant equal the reference network's (`fused`:
    the fused lowering's, whose state-dict keys are the plain one's)."""
    network = net.spec(case.settings)
    theirs = _reference(net, case)
    ours = network.to_torch(fused=fused)
    cost = network.cost()
    assert n_params(ours) == cost.se.params == n_params(theirs)
    shape = (3, SIZE, SIZE)
    assert fvcore_flops(ours, shape) == cost.se.flops
    assert fvcore_flops(theirs, shape) == cost.se.flops + _adaptive_pool_flops(theirs)
    ours = _copy_weights(theirs, ours, net, case, network)
    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected, got = theirs.eval()(x), ours.eval()(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("case", list(CASES))
def test_variant_equals_its_reference_in_a_small_resnet(case: str) -> None:
    check(NETS["small"], CASES[case])


@pytest.mark.parametrize("case", ["ge_theta_minus", "gct", "srm", "ge_mean_mlp"])
def test_fused_variant_equals_its_reference_in_a_small_resnet(case: str) -> None:
    """The variants that run fused (sedsl.ir.se.Variant.fused) as the fused lowering builds
    them: one module per block, still the reference's block."""
    check(NETS["small"], CASES[case], fused=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_variant_equals_its_reference_in_resnet50(case: str) -> None:
    check(NETS["resnet50"], CASES[case])


def test_theta_minus_reference_is_timms_gather_excite() -> None:
    """timm's GatherExcite builds without its MLP (use_mlp=False: theta-minus at global extent);
    it and the plain reference compute the same."""
    timm_layers = pytest.importorskip("timm.layers")
    x = torch.randn(2, 24, 8, 8)
    ge = timm_layers.GatherExcite(24, use_mlp=False).eval()
    assert torch.equal(ge(x), GatherExcite(24).eval()(x))
    assert n_params(ge) == 0


def test_scse_reduced_width_is_the_floor_of_c_over_16() -> None:
    network = _small_spec("variant = scse\n")
    widths = {rec.se.channels: rec.se.rd_channels for _, rec in records(network.ir)
              if rec.se is not None}
    assert widths == {c: c // 16 for c in (24, 40, 48, 32)} == {24: 1, 40: 2, 48: 3, 32: 2}
    smp = smp_modules.SCSEModule(40)
    assert smp.cSE[1].out_channels == 2


# --- the checks can fail: sedsl's tables with one thing changed ------------------------------


def _variant(name: str, **changes: Any) -> se_ir.Variant:
    return replace(se_ir.VARIANTS[name], **changes)


def _steps(name: str, edit: Callable[[se_ir.Step], se_ir.Step | None]) -> se_ir.Variant:
    kept = (edit(s) for s in se_ir.VARIANTS[name].steps)
    return _variant(name, steps=tuple(s for s in kept if s is not None))


MUTANTS: dict[str, tuple[str, Callable[[pytest.MonkeyPatch], None]]] = {
    "srm_biased_std": ("srm", lambda mp: mp.setitem(vocab.SQUEEZES, "std", replace(
        vocab.SQUEEZES["std"], expr="{0}.std((2, 3), keepdim=True, correction=0)"))),
    "gct_gate_without_one": ("gct", lambda mp: mp.setitem(se_ir.VARIANTS, "gct", _steps(
        "gct", lambda s: replace(s, args=()) if s.kind == "scale" else s))),
    "simam_n_is_hw": ("simam", lambda mp: mp.setitem(support.SUPPORT, "simam_energy", support.
                                                      SUPPORT["simam_energy"].replace(" - 1", ""))),
    "scse_nearest_width": ("scse", lambda mp: mp.setitem(se_ir.VARIANTS, "scse", _variant(
        "scse", defaults=(("round", 1),)))),
    "scse_sse_without_gate": ("scse", lambda mp: mp.setitem(se_ir.VARIANTS, "scse", _steps(
        "scse", lambda s: None if s.name == "sse_gate" else s))),
    "ge_theta_minus_with_a_gather": ("ge_theta_minus", lambda mp: mp.setitem(
        se_ir.VARIANTS, "ge", _steps("ge", lambda s: replace(s, when=()) if s.name == "gather"
                                     else s))),
    "ge_theta_biased_gather": ("ge_theta", lambda mp: mp.setitem(se_ir.VARIANTS, "ge", _steps(
        "ge", lambda s: replace(s, args=(*s.args, ("bias", True))) if s.name == "gather"
        else s))),
    "srm_bn_flops_uncounted": ("srm", lambda mp: mp.setitem(ops.OPS, "bn", replace(
        ops.OPS["bn"], fvcore=lambda a, ins, out: 0))),
    "ge_theta_plus_without_relu": ("ge_theta_plus", lambda mp: mp.setitem(
        se_ir.VARIANTS, "ge", _steps("ge", lambda s: None if s.name == "gather_act" else s))),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_a_wrong_variant_is_caught(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case, patch = MUTANTS[mutant]
    patch(monkeypatch)
    with pytest.raises(AssertionError):
        check(NETS["small"], CASES[case])


def test_another_variants_weights_are_caught() -> None:
    """sedsl's gct against the SRM reference: the counts differ (and SRM's cfc has no home)."""
    with pytest.raises(AssertionError):
        check(NETS["small"], dataclasses.replace(CASES["srm"], settings="variant = gct\n"))


# --- one block on a feature map of tiny variance: the epsilons count ----------------------------

ONE_BLOCK = """\
network one_block {
  input 16x6x6
  unit = { bn }
}

se {
SETTINGS  at block.end
}
"""


def _one_block(case: str) -> None:
    """One block after a fresh BN (the identity up to its epsilon) on inputs of scale 1e-3:
    variances of about 1e-6 next to SRM's missing epsilon, GCT's 1e-5 and SimAM's 1e-4."""
    network = sedsl.loads(ONE_BLOCK.replace("SETTINGS", CASES[case].settings))
    reference = nn.Sequential(nn.BatchNorm2d(16), CASES[case].reference(16, 6)).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in reference[1].parameters():
            p.copy_(torch.rand(p.shape, generator=gen) * 2 - 1)
    ours = network.to_torch(fused=False).eval()
    by_name = CASES[case].by_name or {}
    names = {f"0.{k}": f"unit.bn1.{k}" for k in reference[0].state_dict()}
    names |= {f"1.{k}": f"unit.se.{by_name[k]}" for k in reference[1].state_dict()}
    ours.load_state_dict({names[k]: v for k, v in reference.state_dict().items()})
    x = 1e-3 * torch.randn(2, 16, 6, 6, generator=gen)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("case", ["srm", "gct", "simam"])
def test_one_block_at_tiny_variance(case: str) -> None:
    _one_block(case)


TINY_MUTANTS: dict[str, tuple[str, Callable[[pytest.MonkeyPatch], None]]] = {
    "srm_std_with_eps": ("srm", lambda mp: mp.setitem(vocab.SQUEEZES, "std", replace(
        vocab.SQUEEZES["std"], expr="({0}.var((2, 3), keepdim=True) + 1e-05).sqrt()"))),
    "gct_l2_without_eps": ("gct", lambda mp: mp.setitem(vocab.SQUEEZES, "l2", replace(
        vocab.SQUEEZES["l2"], expr="{0}.pow(2).sum((2, 3), keepdim=True).pow(0.5)"))),
    "simam_lambda_1e-3": ("simam", lambda mp: mp.setitem(se_ir.STEP_KINDS, "energy", replace(
        se_ir.STEP_KINDS["energy"], build=lambda step, b: ("simam", {"e_lambda": 1e-3})))),
}


@pytest.mark.parametrize("mutant", list(TINY_MUTANTS))
def test_a_wrong_epsilon_is_caught(mutant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case, patch = TINY_MUTANTS[mutant]
    patch(monkeypatch)
    with pytest.raises(AssertionError):
        _one_block(case)


# --- init = identity ----------------------------------------------------------------------------


@contextmanager
def _resnet50() -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = randomise_bn(tvm.resnet50())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        yield model, x, model(x)


@pytest.mark.parametrize("variant", ["gca", "gct", "scse"])
def test_identity_init_keeps_an_imported_resnet50(variant: str) -> None:
    """Issue 19's "done when": SE rules on an imported torchvision ResNet-50 with
    `init = identity` give the original's outputs; the default start does not."""
    with _resnet50() as (model, x, expected):
        rules = f"variant = {variant}; SETTING; at residual.end"
        net = sedsl.from_torch(model, input=(3, SIZE, SIZE),
                               se=rules.replace("SETTING", "init = identity"))
        assert net.cost().overhead.params > 0
        with torch.no_grad():
            got = net.to_torch().eval()(x)
        assert torch.allclose(got, expected)
        assert torch.equal(got, expected)  # exactly: x + 0, x * (1 + tanh 0), x/2 + x/2
        plain = sedsl.from_torch(model, input=(3, SIZE, SIZE), se=rules.replace("SETTING; ", ""))
        with torch.no_grad():  # GCT's release starts as the identity anyway (gamma, beta 0)
            assert torch.allclose(plain.to_torch().eval()(x), expected) == (variant == "gct")


def test_identity_init_survives_the_importers_se_initialisation() -> None:
    """The importer re-initialises SE convs (Caffe's msra filler) but not those `init` fixed."""
    with _resnet50() as (model, _, _):
        net = sedsl.from_torch(model, input=(3, SIZE, SIZE),
                               se="variant = gca; init = identity; at residual.end in layer4")
        torch_model = net.to_torch(fused=False)
        fixed = {n for n, r in records(net.ir) if "init" in r.attrs}
        assert fixed == {f"layer4.{i}.se.fc2" for i in range(3)}
        for name, module in torch_model.named_modules():
            if isinstance(module, nn.Conv2d) and ".se." in name:
                assert (module.weight.abs().sum() == 0) == (name in fixed), name


def test_identity_init_in_a_spec_keeps_the_base_network() -> None:
    """Without an import: the SE network with the base network's weights computes the base."""
    network = _small_spec("variant = gca\ninit = identity\n")
    base = randomise_bn(network.to_torch(fused=False, se=False))
    ours = network.to_torch(fused=False).eval()
    missing, unexpected = ours.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(".se." in k for k in missing)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(ours(x), base(x))
    source = network.source()
    assert "nn.init.zeros_(self.conv2.block1.se.fc2.weight)" in source
    assert "nn.init.zeros_(self.conv2.block1.se.fc2.bias)" in source


def test_identity_init_gct_zeroes_gamma_and_beta() -> None:
    source = _small_spec("variant = gct\ninit = identity\n").source()
    assert "nn.init.zeros_(self.conv3.block1.se.norm.gamma)" in source
    assert "nn.init.zeros_(self.conv3.block1.se.norm.beta)" in source
    assert "alpha" not in source.split("def forward")[-1]


@pytest.mark.parametrize("variant", sorted(set(se_ir.VARIANTS) - {"gca", "gct", "scse"}))
def test_identity_init_is_refused_where_the_gate_cannot_be_one(variant: str) -> None:
    with pytest.raises(sedsl.SpecError, match=r"needs a variant that can start as the identity "
                                              r"\(gca, gct, scse\)") as err:
        _small_spec(f"variant = {variant}\ninit = identity\n")
    assert f"`{variant}` cannot" in str(err.value)


def test_identity_init_needs_the_gate_it_was_designed_for() -> None:
    with pytest.raises(sedsl.SpecError, match="only with gate = tanh, not sigmoid"):
        _small_spec("variant = gct\ngate = sigmoid\ninit = identity\n")


def test_identity_init_in_a_rule_and_bad_values() -> None:
    text = SMALL.replace("SETTINGS", "variant = gca\n").replace(
        "at residual.end in conv2..conv5", "at residual.end in conv2..conv5\n"
        "  at residual.end in conv3 { init = identity }")
    network = sedsl.loads(text, path=str(ROOT / "specs" / "small_attention.se"))
    assert {n: r.attrs["init"] for n, r in records(network.ir) if "init" in r.attrs} \
        == {"conv3.block1.se.fc2": "zero"}
    with pytest.raises(sedsl.SpecError, match="`init` cannot be `zero`"):
        _small_spec("variant = gca\ninit = zero\n")


# --- docs: the variants table -------------------------------------------------------------------


def _doc_rows(marker: str) -> dict[str, list[str]]:
    """The rows of the table after `<!-- marker -->` in docs/language.md, by their first cell."""
    text = (ROOT / "docs" / "language.md").read_text()
    rows = {}
    for line in text.split(f"<!-- {marker} -->")[1].strip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def _defaults(v: se_ir.Variant) -> str:
    return ", ".join(f"{k} = {str(x).lower() if isinstance(x, bool) else x}"
                     for k, x in dict(v.defaults).items()) or "—"


def _per_block(settings: str, formulas: list[str]) -> None:
    """The table's parameter and FLOP formulas for one block on a 64 x 8 x 6 map (H != W, so
    that swapping them shows) equal the cost model's overhead."""
    c, h, w = 64, 8, 6
    network = sedsl.loads(f"network one {{\n  input {c}x{h}x{w}\n  unit = {{ bn }}\n}}\n"
                          f"se {{\n{settings}  at block.end\n}}\n")
    tag = next(r.se for _, r in records(network.ir) if r.se is not None)
    names = {"C": c, "H": h, "W": w, "d": tag.rd_channels, "k": tag.settings.eca_kernel(c),
             "s": tag.settings.spatial_kernel}
    params, flops = (eval(f.strip("`").replace("·", "*"), {}, names) for f in formulas)
    overhead = network.cost().overhead
    assert (params, flops) == (overhead.params, overhead.flops), settings


def test_language_doc_lists_every_variant() -> None:
    rows = _doc_rows("variants table")
    assert list(rows) == list(se_ir.VARIANTS)
    for name, v in se_ir.VARIANTS.items():
        steps = ", ".join(s.name + ("?" if s.when else "") for s in v.steps)
        assert rows[name][1] == steps, name
        assert rows[name][4] == _defaults(v), name
        assert rows[name][5].startswith("yes" if v.identity else "no"), name
        if name != "ge":
            _per_block(f"variant = {name}\n", rows[name][2:4])


def test_language_doc_gather_excite_table() -> None:
    rows = _doc_rows("gather-excite table")
    assert len(rows) == 4
    for settings, cells in rows.items():
        _per_block("variant = ge\n" + settings.replace(", ", "\n") + "\n", cells[2:4])
