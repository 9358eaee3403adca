"""timm's zoo in CI, a fast subset of bench/import_zoo.py's sample (the whole sample and the
torchvision zoo are in the bench; tests/test_writeback.py runs every torchvision CNN, and
tests/test_import_coverage.py checks ConvNeXt, ReXNet and others against their outputs): each
model, built on the meta device, imports with its parameter count and writes back to a spec
that reloads to the same network, base and with its attention blocks; the models that cannot
are refused with an error naming the construct."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import sedsl
from sedsl.targets.spec import NoSpecForm, write_spec
from tests.references import n_params

timm = pytest.importorskip("timm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from import_zoo import empty_weights  # noqa: E402

# One model per construct the import and the writer had to learn (issue 22).
ROUND_TRIP = {
    "cs3darknet_m": {},  # CSP: split, a block run in a parallel branch
    "cspresnext50": {},  # LeakyReLU in BatchNormAct2d
    "mixnet_s": {"se": 13},  # split into kernel groups, timm's SqueezeExcite
    "tf_efficientnet_b0": {"se": 16},  # Conv2dSame: unequal padding from concrete shapes
    "mobilenetv3_large_100": {"se": 8},  # classifier by F.linear
    "eca_vovnet39b": {"eca": 4},  # a concat of a chain's outputs (OSA)
    "selecsls42": {},  # the same with a skip input
    "repghostnet_050": {"se": 7},  # residual units nested in a block's unit
    "ghostnet_050": {"se": 7},  # x[:, :c] slices
    "inception_next_atto": {},  # layer norm of flat features
    "repvit_m0_9": {"se": 10},  # BatchNorm1d, (a + b) / 2
    "regnetz_c16": {"se": 22},  # RegStage's units, SE with base = block_in
    "resnest14d": {},  # SplitAttn as split_attention
    "skresnet18": {},  # SelectiveKernel: paths on split input, concat, split_attention
    "dm_nfnet_f0": {"se": 12},  # weight standardisation, skipinit gain, TF `same` padding
    "dla34": {},  # trees that concatenate earlier outputs: written with `from`
    "dpn48b": {},  # dual paths: a conv's output split into a residual and a dense part
}

REFUSED = {
    "resnet50x16_clip": "computes on token sequences",
}


def imported(name: str) -> tuple[int, sedsl.Network]:
    with empty_weights():
        model = timm.create_model(name)
    return n_params(model), sedsl.from_torch(model, input=64, name=name)


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_timm_models_import_and_round_trip(name: str) -> None:
    params, net = imported(name)
    cost = net.cost()
    assert cost.se.params == params
    assert cost.variants == ROUND_TRIP[name]
    back = sedsl.loads(write_spec(net.base_ir, se_graph=net.ir).text, path=f"{name}.se").cost()
    assert (back.base.params, back.base.flops) == (cost.base.params, cost.base.flops)
    assert (back.se.params, back.se.flops) == (cost.se.params, cost.se.flops)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_others_name_the_construct(name: str) -> None:
    with pytest.raises(sedsl.SpecError) as err:
        write_spec(imported(name)[1].base_ir)
    assert REFUSED[name] in str(err.value)
    assert not isinstance(err.value, NoSpecForm) or "bug" not in str(err.value)
