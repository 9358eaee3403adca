"""Elaboration: names, scopes, arithmetic, repetition, structures, overrides, and every inferred
shape against the shapes PyTorch actually produces."""

from __future__ import annotations

import pytest
import torch

import sedsl
from sedsl.compile.elaborate import MODULE_ATTRIBUTES
from sedsl.ir.node import record, records
from tests.conftest import SPECS, compiled


def load(body: str, **overrides: object) -> sedsl.Network:
    return sedsl.loads(f'use "lib/resnet.se"\n{body}', path=str(SPECS / "inline.se"), **overrides)


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.se")))
def test_every_shape_matches_pytorch(spec: str) -> None:
    net = compiled(spec, input="3x96x96") if spec != "se_bn_inception.se" else compiled(spec)
    model = net.to_torch(fused=False).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name, module in model.named_modules():
        if name in net.graph:
            module.register_forward_hook(
                lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        out = model(torch.zeros(1, *net.graph.graph["input"]))
    assert seen, "no module matched a node"
    for name, shape in seen.items():
        assert record(net.graph, name).shape == shape, name
    assert tuple(out.shape[1:]) == record(net.graph, net.graph.graph["output"]).shape


CONVS = [  # (input, call): odd sizes, strides, dilation, padding, groups, ceil-mode pooling
    ("3x17x23", "conv(8, 3, stride = 2)"),
    ("3x17x23", "conv(8, 5, stride = 3, padding = 1)"),
    ("4x20x20", "conv(8, 3, dilation = 2, groups = 2)"),
    ("3x15x15", "conv(6, 1x7, padding = 0x3)"),
    ("3x15x15", "maxpool(3, 2, ceil = true)"),
    ("3x14x14", "maxpool(3, 2, ceil = true)"),
    ("3x16x16", "avgpool(3, 2, padding = 1, ceil = true, count_pad = false)"),
    ("3x7x9", "avgpool(2)"),
    ("3x16x15", "maxpool(3, 2, same = true)"),  # TensorFlow's `same`: unequal on H, equal on W
    ("3x16x16", "maxpool(2, 3, same = true)"),
]


@pytest.mark.parametrize(("size", "call"), CONVS)
def test_window_arithmetic(size: str, call: str) -> None:
    net = sedsl.loads(f"network n {{\n input {size}\n y = {call}\n}}")
    model = net.to_torch().eval()
    c, h, w = map(int, size.split("x"))
    with torch.no_grad():
        out = model(torch.randn(1, c, h, w))
    assert tuple(out.shape[1:]) == record(net.graph, "y").shape


def test_names_follow_the_spec() -> None:
    net = compiled("se_resnet50.se")
    names = list(net.graph.nodes)
    assert names[:6] == ["input", "stem.conv1", "stem.bn1", "stem.relu1", "stem.pool",
                         "conv2.block1.conv1"]
    assert "conv4.block6.conv2" in names and "conv4.block7.conv2" not in names
    assert "conv3.block1.shortcut.conv1" in names and "conv3.block2.shortcut.conv1" not in names
    rec = record(net.graph, "conv4.block3.conv2")
    assert (rec.stage, rec.block, rec.kind, rec.branch) == ("conv4", "conv4.block3", "bottleneck",
                                                            "residual")


def test_stride_belongs_to_the_first_repeat() -> None:
    net = compiled("se_resnet50.se")
    assert record(net.graph, "conv3.block1.conv1").attrs["stride"] == (2, 2)
    assert record(net.graph, "conv3.block2.conv1").attrs["stride"] == (1, 1)
    timm_layout = compiled("se_resnet50.se", layout="timm")
    assert record(timm_layout.graph, "conv3.block1.conv2").attrs["stride"] == (2, 2)
    assert record(timm_layout.graph, "conv3.block1.conv1").attrs["stride"] == (1, 1)


def test_arithmetic_is_exact() -> None:
    """ResNeXt's width = planes * base_width / 64 * groups, never rounded along the way."""
    net = compiled("se_resnext101.se")
    assert record(net.graph, "conv2.block1.conv1").shape[0] == 128
    assert record(net.graph, "conv5.block1.conv2").attrs["groups"] == 32
    n = load("network n(a = 7) {\n input 3x8x8\n y = conv(a * 3 / 7 + 1, 1)\n}")
    assert record(n.graph, "y").shape[0] == 4


def test_block_builtins_and_defaults() -> None:
    net = load("""
block dw(k = 3, mid = c_in * 2) { conv(mid, 1) conv(mid, k, groups = mid) }
network n {
  input 6x8x8
  a = dw
  b = dw(5)
}""")
    assert record(net.graph, "a.conv2").attrs["groups"] == 12
    assert record(net.graph, "b.conv2").attrs["kernel"] == (5, 5)
    assert record(net.graph, "b.conv1").shape[0] == 24  # c_in of b is 12


def test_conditionals() -> None:
    body = """
network n(deep = false) {
  input 3x8x8
  if deep { conv(8, 3) conv(8, 3) } else { conv(4, 3) }
  y = conv(if deep then 16 else 2, 1)
}"""
    assert record(load(body).graph, "y").shape[0] == 2
    deep = load(body, deep=True)
    assert record(deep.graph, "y").shape[0] == 16 and "conv2" in deep.graph


def test_parallel_and_residual_structures() -> None:
    net = load("""
network n {
  input 8x16x16
  mix = parallel concat {
    b1 = conv(4, 1)
    b2 = conv(6, 1) conv(6, 3)
    maxpool(3, 1, padding = 1)
  }
  res = residual(scale = 0.5) { conv(18, 3) bn }
}""")
    assert record(net.graph, "mix.concat1").shape == (18, 16, 16)
    assert record(net.graph, "mix.concat1").attrs["branches"] == ("b1", "b2", "branch1")
    assert record(net.graph, "mix.b2.conv2").branch == "b2"
    assert record(net.graph, "res.scale1").attrs["factor"] == 0.5
    assert record(net.graph, "res.add1").attrs["branches"] == ("residual", "shortcut")


def test_residual_scale_matches_torch() -> None:
    net = load("network n {\n input 4x8x8\n res = residual(scale = 0.25) { conv(4, 3) }\n}")
    model = net.to_torch().eval()
    x = torch.randn(1, 4, 8, 8)
    conv = model.res.conv1
    with torch.no_grad():
        assert torch.allclose(model(x), x + 0.25 * conv(x))


def test_overrides_and_input() -> None:
    net = compiled("se_resnet50.se", classes=10, input=(3, 128, 96))
    assert record(net.graph, "head.fc").shape == (10,)
    assert net.graph.graph["input"] == (3, 128, 96)
    assert record(net.graph, "conv5.block3.relu3").shape == (2048, 4, 3)
    assert record(compiled("se_resnet50.se", input="160").graph, "input").shape == (3, 160, 160)


def test_reserved_names_cover_torch_module() -> None:
    """Layer names become module attributes; none may shadow what nn.Module has."""
    public = {n for n in dir(torch.nn.Module) if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES


def test_identity_and_empty_shortcut() -> None:
    net = load("""
network n {
  input 4x8x8
  a = residual { conv(4, 3) } shortcut { identity }
  b = residual { conv(4, 3) } shortcut { }
}""")
    assert [r.op for _, r in records(net.graph)] == ["input", "conv", "add", "conv", "add"]


# --- allowed values (issue 21) -----------------------------------------------------------------


@pytest.mark.parametrize(("spec", "name", "value", "hint"), [
    ("efficientnet.se", "size", "b9", None),  # silently built B7
    ("efficientnet.se", "size", "B3", 'did you mean "b3"?'),  # silently built B7 too
    ("se_resnet50.se", "layout", "tim", 'did you mean "timm"?'),  # built the Caffe layout
    ("regnet_y.se", "size", "400MF", 'did you mean "400mf"?'),  # "no block of kind y_block"
    ("ecaresnet50d.se", "kernels", "k357", 'did you mean "k3557"?'),
])
def test_a_value_outside_a_parameters_values_is_an_error_at_its_declaration(
        spec: str, name: str, value: str, hint: str | None) -> None:
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.load(SPECS / spec, **{name: value})
    e = caught.value
    declared = (SPECS / spec).read_text().split("\n")[e.span.line - 1] if e.span else ""
    assert e.message.startswith(f"`{name}` takes ") and e.message.endswith(f'not "{value}"')
    assert declared[e.span.col - 1:].startswith(f"{name}: ")  # type: ignore[union-attr]
    assert e.hint == hint


def test_efficientnet_names_every_size() -> None:
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.load(SPECS / "efficientnet.se", size="b9")
    assert ", ".join(f'"b{i}"' for i in range(7)) + ' or "b7"' in caught.value.message


def test_allowed_values_of_every_kind() -> None:
    body = ('network n(k: 1 | 3 | 5 = 3, on: true | false = true, s: 3x3 | 1x7 = 1x7) {\n'
            "  input 4x8x8\n  conv(4, if on then k else 1, padding = 0) conv(4, s)\n}\n")
    assert record(load(body, k=5).graph, "conv1").attrs["kernel"] == (5, 5)
    assert record(load(body, s=(3, 3)).graph, "conv2").attrs["kernel"] == (3, 3)
    assert record(load(body, on=False).graph, "conv1").attrs["kernel"] == (1, 1)
    for name, bad, shown in (("k", 2, "`k` takes 1, 3 or 5, not 2"),
                             ("s", "7x1", "`s` takes 3x3 or 1x7, not 7x1")):
        with pytest.raises(sedsl.SpecError, match=shown):
            load(body, **{name: bad})
    with pytest.raises(sedsl.SpecError, match="not layers"):
        load("network n(a: relu | silu = relu) {\n  input 4x8x8\n  a\n}\n")


def test_block_arguments_and_defaults_obey_their_values() -> None:
    block = 'block b(c, mode: "a" | "b" = if c_in > 4 then "a" else "c") { conv(c, 1) }\n'
    assert load(block + "network n {\n  input 8x8x8\n  x = b(4)\n}\n").graph
    with pytest.raises(sedsl.SpecError, match='`mode` of block `b` takes "a" or "b", not "c"'):
        load(block + "network n {\n  input 2x8x8\n  x = b(4)\n}\n")  # the default, where placed
    with pytest.raises(sedsl.SpecError) as caught:
        load(block + 'network n {\n  input 8x8x8\n  x = b(4, mode = "A")\n}\n')
    declared = f"{SPECS / 'inline.se'}:2:12"
    assert caught.value.hint == f'did you mean "a"? `mode` is declared at {declared}'


@pytest.mark.parametrize(("name", "hint"), [("clases", "did you mean `classes`"),
                                            ("layot", "did you mean `layout`?"),
                                            ("ratoi", "did you mean `ratio`?")])
def test_set_suggests_the_networks_parameters_and_the_se_settings(name: str, hint: str) -> None:
    """`--set clases=10` suggested `base` (an SE setting), `--set layot=timm` nothing."""
    with pytest.raises(sedsl.SpecError) as caught:
        sedsl.load(SPECS / "se_resnet50.se", **{name: "10"})
    assert caught.value.message == f"unknown parameter `{name}`"
    assert caught.value.hint is not None and caught.value.hint.startswith(hint)
