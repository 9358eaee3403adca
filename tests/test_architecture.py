"""The shape of the compiler: the import graph, named and idempotent passes, per-op behaviour from
the op table, SE blocks as data, compiler bugs apart from spec errors, and the recipes of
docs/architecture.md (each recipe's code is executed here)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import sedsl
from sedsl.cli import app
from sedsl.compile import passes
from sedsl.errors import CompilerError
from sedsl.ir import node as ir
from sedsl.ir import ops, serialize
from sedsl.ir.node import record, records
from tests.conftest import ROOT, SPECS, compiled

PACKAGE = ROOT / "sedsl"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Every import between sedsl's modules, wherever it stands (top level, in a function, or
    under TYPE_CHECKING)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                           else node.module for a in node.names]
            for t in targets:
                if t.startswith("sedsl") and t != name:
                    g.add_edge(name, t)
    return g


def test_no_import_cycles_and_nothing_imports_the_package_root() -> None:
    g = import_graph()
    assert nx.is_directed_acyclic_graph(g), nx.find_cycle(g)
    assert sorted(set(g.predecessors("sedsl"))) == [], "the package root is the API: none of " \
        "sedsl's own modules imports it"


def test_the_layer_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml: the pipeline's layers, no torch below
    sedsl.pytorch, an IR without parser or torch, a cost model without the parser."""
    run = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command;"
                          "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_importing_the_cost_model_loads_no_parser() -> None:
    code = ("import sys, sedsl.targets.cost, sedsl.targets.report; "
            "print(sorted(m for m in sys.modules if m.startswith(('sedsl.language', 'lark', "
            "'torch', 'sedsl.compile'))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "[]"


def structure(g: nx.DiGraph) -> tuple[list[tuple[str, ir.Node]], list[tuple[str, str, int]]]:
    return list(records(g)), sorted(g.edges(data="port"))


def test_the_pipeline_is_idempotent() -> None:
    net = compiled("se_resnet50.se")
    again = passes.run(net.graph, passes.pipeline(net.se))
    assert structure(again) == structure(net.graph)
    assert net.graph.number_of_nodes() == net.base.number_of_nodes() + 16 * 6
    assert structure(passes.strip_se(net.graph)) == structure(net.base)


def test_passes_have_names_and_graph_after_dumps_them(tmp_path: Path) -> None:
    spec = str(SPECS / "se_resnet50.se")
    runner = CliRunner()
    for name, se_ops in (("elaborate", 0), ("apply_se", 0), ("fuse_se", 16)):
        result = runner.invoke(app, ["graph", spec, "--after", name])
        assert result.exit_code == 0, result.output
        g = serialize.loads(result.output)
        assert sum(r.op == "se" for _, r in records(g)) == se_ops
    result = runner.invoke(app, ["graph", spec, "--after", "fuse"])
    assert result.exit_code == 1 and "no pass is called `fuse`" in result.output


def test_a_broken_invariant_is_a_compiler_error_naming_the_pass() -> None:
    def breaks(g: nx.DiGraph) -> nx.DiGraph:
        g = g.copy()
        g.remove_edge("conv2.block1.add1", "conv2.block1.relu3")
        return g

    with pytest.raises(CompilerError, match="pass `breaks` broke an IR invariant") as caught:
        passes.run(compiled("se_resnet50.se").graph, [passes.Pass("breaks", breaks)])
    assert not isinstance(caught.value, sedsl.SpecError)
    assert caught.value.node == "conv2.block1.relu3" and "bug in sedsl" in str(caught.value)


@pytest.mark.parametrize("op", ["maxpool(3, 2)", "avgpool(3, 2)", "conv(8, 3, stride = 2)"])
def test_a_repeat_resets_the_stride_of_every_op_that_has_one(op: str) -> None:
    net = sedsl.loads(f"network t {{\n  input 8x32x32\n  s = {op} * 2\n}}\n")
    strides = [r.attrs["stride"] for _, r in records(net.graph) if "stride" in r.attrs]
    assert strides == [(2, 2), (1, 1)]


def test_se_nodes_carry_their_block_and_settings() -> None:
    net = compiled("se_resnet50.se")
    rec = record(net.graph, "conv3.block2.se.fc1")
    assert rec.se is not None and rec.se.unit == "conv3.block2.se" and rec.se.step == "fc1"
    assert rec.se.settings.ratio == 16 and rec.se.rd_channels == 512 // 16  # typed, not a dict
    assert all((r.se is not None) == (r.role == "se") for _, r in records(net.graph))
    back = serialize.loads(serialize.dumps(net.graph))  # the tags survive JSON
    assert record(back, "conv3.block2.se.fc1") == rec


# --- SE variants, checked against timm's own modules ----------------------------------------------

VARIANT_SPEC = """
network t(classes = 5) {
  input 16x6x6
  b = { conv(32, 3) bn relu }
}

se {
  SETTINGS
  at block.end
}
"""


def se_after_block(settings: str) -> tuple[nn.Module, sedsl.Network]:
    net = sedsl.loads(VARIANT_SPEC.replace("SETTINGS", settings))
    return net.to_torch(fused=False).eval(), net


def body(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(model.b.bn1(model.b.conv1(x)))


def test_effective_se_equals_timm() -> None:
    layers = pytest.importorskip("timm.layers.squeeze_excite")
    ours, _ = se_after_block("variant = ese\n  gate = hardsigmoid")
    theirs = layers.EffectiveSEModule(32).eval()
    theirs.fc.load_state_dict(ours.b.se.fc.state_dict())
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(body(ours, x)))


def test_se_with_batch_norm_equals_timm() -> None:
    layers = pytest.importorskip("timm.layers.squeeze_excite")
    ours, net = se_after_block("variant = se_bn\n  ratio = 4")
    theirs = layers.SEModule(32, rd_ratio=1 / 4, norm_layer=nn.BatchNorm2d).eval()
    theirs.load_state_dict(ours.b.se.state_dict())
    assert net.cost().overhead.params == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(body(ours, x)))


def test_blocks_the_kernels_lack_stay_plain_ops() -> None:
    _, net = se_after_block("variant = simam")
    fused = passes.run(net.graph, passes.LOWERING)
    assert not any(r.op == "se" for _, r in records(fused))
    _, net = se_after_block("variant = ese")  # the generic transform: statistic, FC, apply
    assert [r.attrs["transform"] for _, r in records(passes.run(net.graph, passes.LOWERING))
            if r.op == "se"] == ["steps"]
    _, net = se_after_block("squeeze = avgpool")  # fvcore counts it: no kernel statistic
    assert not any(r.op == "se" for _, r in records(passes.run(net.graph, passes.LOWERING)))
    _, net = se_after_block("excite = gelu")  # no kernel activation: the generic transform
    assert [r.attrs["transform"] for _, r in records(passes.run(net.graph, passes.LOWERING))
            if r.op == "se"] == ["steps"]
    _, net = se_after_block("")
    assert any(r.op == "se" for _, r in records(passes.run(net.graph, passes.LOWERING)))


# --- the recipes of docs/architecture.md ----------------------------------------------------------

DOC = (ROOT / "docs" / "architecture.md").read_text()


def recipe(title: str, language: str) -> str:
    section = DOC.split(f"### {title}", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(rf"```{language}(?: recipe)?\n(.*?)```", section, re.S)
    assert blocks, f"no {language} block in the recipe {title!r}"
    return str(blocks[0])


def test_recipe_add_an_op(monkeypatch: pytest.MonkeyPatch) -> None:
    namespace: dict[str, object] = {}
    exec(recipe("Add an op", "python"), vars(ops) | namespace, namespace)  # the doc's entry
    op = namespace["HARDTANH"]
    assert isinstance(op, ops.Op)
    monkeypatch.setitem(ops.OPS, op.name, op)
    net = sedsl.loads(recipe("Add an op", "se"))
    model = net.to_torch(fused=False).eval()
    with torch.no_grad():
        assert float(model(torch.randn(1, 3, 8, 8) * 4).abs().max()) <= 2.0


def test_recipe_add_an_se_step_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    from sedsl.ir import se

    namespace: dict[str, object] = {}
    exec(recipe("Add an SE step kind", "python"), vars(se) | namespace, namespace)
    kind, variant = namespace["DROPOUT"], namespace["SE_DROP"]
    assert isinstance(kind, se.StepKind) and isinstance(variant, se.Variant)
    monkeypatch.setitem(se.STEP_KINDS, kind.name, kind)
    monkeypatch.setitem(se.VARIANTS, variant.name, variant)
    monkeypatch.setitem(se.SYMBOLS, "variant", frozenset(se.VARIANTS))
    net = sedsl.loads(recipe("Add an SE step kind", "se"))
    nodes = {r.se.step: r for _, r in records(net.graph) if r.se is not None}
    assert list(nodes) == [s.name for s in variant.steps]
    assert nodes["drop"].op == "dropout" and nodes["drop"].attrs["p"] == 0.2
    assert "nn.Dropout(0.2)" in net.source()


def test_recipe_add_a_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    from sedsl.ir import se

    namespace: dict[str, object] = {}
    exec(recipe("Add a variant", "python"), vars(se) | namespace, namespace)
    variant = namespace["DOUBLE_GATE"]
    assert isinstance(variant, se.Variant)
    monkeypatch.setitem(se.VARIANTS, variant.name, variant)
    monkeypatch.setitem(se.SYMBOLS, "variant", frozenset(se.VARIANTS))
    net = sedsl.loads(recipe("Add a variant", "se"))
    tags = [r.se for _, r in records(net.graph) if r.se is not None]
    assert [t.step for t in tags] == [s.name for s in variant.steps]
    assert {t.rd_channels for t in tags} == {16 // 8}  # the variant's default ratio


def test_recipe_add_an_importable_torch_construct(monkeypatch: pytest.MonkeyPatch) -> None:
    from sedsl.pytorch import importer

    namespace: dict[str, object] = {}
    exec(recipe("Add an op", "python"), vars(ops) | namespace, namespace)
    op = namespace["HARDTANH"]
    assert isinstance(op, ops.Op)
    monkeypatch.setitem(ops.OPS, op.name, op)
    monkeypatch.setattr(importer, "MODULES", dict(importer.MODULES))
    exec(recipe("Add an importable torch construct", "python"), vars(importer) | {"nn": nn})
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardtanh(-0.5, 0.25)).eval()
    net = sedsl.from_torch(model, input=(3, 8, 8))
    assert [r.op for _, r in records(net.graph)][-1] == "hardtanh"
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.to_torch(fused=False).eval()(x), model(x))


def test_recipe_add_a_network_family() -> None:
    net = sedsl.loads(recipe("Add a network family", "se"), path=str(SPECS / "recipe.se"))
    assert net.cost().overhead.params > 0
