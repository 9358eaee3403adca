"""sedsl train / excite on the digits: accuracy, gates against plain-torch hooks, the ablation
against fvcore and torch's own parameter count, torchrun against one process, bad input.

One short training run (3 epochs of specs/se_digits.se, SE and base) is shared by the tests."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import sedsl
from bench.fuzz import time_budget
from sedsl.cli import app

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "se_digits.se"
runner = CliRunner()


def sedsl_cli(*args: str) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    return result


def ok(*args: str) -> str:
    result = sedsl_cli(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return str(result.output)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a batch of 8x8 digits gains little from more; a busy box loses
    try:
        printed = ok("train", SPEC, "--data", "sklearn:digits", "--epochs", "3", "--compare-base",
                     "-o", run)
    finally:
        torch.set_num_threads(threads)
    return run, printed


def final_top1(folder: Path) -> float:
    rows = list(csv.DictReader((folder / "metrics.csv").read_text().splitlines()))
    return float(rows[-1]["val_top1"])


def test_train_reaches_95_percent_with_and_without_se(trained: tuple[Path, str]) -> None:
    run, printed = trained
    assert final_top1(run / "se") >= 0.95
    assert final_top1(run / "base") >= 0.95
    # the comparison prints each network's parameters: torch's own count of the built models
    net = sedsl.load(SPEC)
    for se in (True, False):
        n = sum(p.numel() for p in net.to_torch(fused=False, se=se).parameters())
        assert f"{n:,}" in printed


def test_resume_repeats_the_loss_curve(tmp_path: Path) -> None:
    from sedsl.analysis.data import open_source
    from sedsl.analysis.train import TrainConfig, train

    net = sedsl.load(SPEC, width=4)
    source = open_source("sklearn:digits", net.graph.graph["input"])
    cfg = TrainConfig(epochs=2, batch=128)
    whole = train(net, source, tmp_path / "a", cfg)

    def crash(_: object) -> None:
        raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(net, source, tmp_path / "b", cfg, report=crash)
    resumed = train(net, source, tmp_path / "b", cfg, resume=True)
    strip = [{k: v for k, v in r.__dict__.items() if k != "seconds"} for r in whole]
    assert [{k: v for k, v in r.__dict__.items() if k != "seconds"} for r in resumed] == strip


# --- excite -------------------------------------------------------------------------------------

CLASSES = ["0", "3", "7", "9"]
PER_CLASS = 20


@pytest.fixture(scope="module")
def excited(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("excite")
    ok("excite", SPEC, "--weights", trained[0] / "se" / "model.pt", "--data", "sklearn:digits",
       "--split", "all", "--per-class", str(PER_CLASS), "--classes", ",".join(CLASSES),
       "--ablate", "stage", "-o", out)
    return out, json.loads((out / "excite.json").read_text())


def digits_samples() -> tuple[torch.Tensor, np.ndarray]:
    """The analysed samples, straight from scikit-learn: the first PER_CLASS of each class."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16
    x = (x - x.mean()) / x.std()
    keep = sorted(i for c in CLASSES for i in np.flatnonzero(d.target == int(c))[:PER_CLASS])
    return x[keep], d.target[keep]


def plain_model(weights: Path, **overrides: Any) -> torch.nn.Module:
    model = sedsl.load(SPEC, **overrides).to_torch(fused=False)
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def test_gate_statistics_equal_plain_torch_hooks(trained: tuple[Path, str],
                                                  excited: tuple[Path, dict[str, Any]]) -> None:
    _, doc = excited
    model = plain_model(trained[0] / "se" / "model.pt")
    gates: dict[str, list[torch.Tensor]] = {}
    for name, module in model.named_modules():
        if name.endswith(".se.gate"):
            unit = name.removesuffix(".gate")
            module.register_forward_hook(
                lambda _m, _i, out, n=unit: gates.setdefault(n, []).append(out))
    x, y = digits_samples()
    with torch.no_grad():
        logits = model(x)
    assert doc["top1"] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))
    assert [b["name"] for b in doc["blocks"]] == list(gates)
    for b in doc["blocks"]:
        s = torch.cat(gates[b["name"]]).flatten(1).double().numpy()  # (N, C)
        assert np.allclose(b["mean"], s.mean(0), atol=1e-6)
        for c in CLASSES:
            mine = s[y == int(c)]
            assert b["classes"][c]["n"] == PER_CLASS
            assert np.allclose(b["classes"][c]["mean"], mine.mean(0), atol=1e-6)
            assert np.allclose(b["classes"][c]["std"], mine.std(0), atol=1e-5)
        # class specificity: the between-class share of the variance (numpy, by definition)
        between = sum(PER_CLASS * ((s[y == int(c)].mean(0) - s.mean(0)) ** 2).sum()
                      for c in CLASSES)
        assert b["class_specificity"] == pytest.approx(between / ((s - s.mean(0)) ** 2).sum(),
                                                       abs=1e-6)
        assert b["saturation"]["high"] == pytest.approx((s >= 0.95).mean(), abs=1e-8)
        assert b["saturation"]["low"] == pytest.approx((s <= 0.05).mean(), abs=1e-8)


@pytest.mark.parametrize("fused", [True, False])
def test_recording_leaves_logits_bit_identical(trained: tuple[Path, str], fused: bool) -> None:
    from sedsl.analysis import excite
    from sedsl.analysis.data import open_source

    net = sedsl.load(SPEC)
    model = net.to_torch(fused=fused)
    model.load_state_dict(torch.load(trained[0] / "se" / "model.pt", weights_only=True))
    model.eval()
    data = open_source("sklearn:digits", (1, 8, 8)).val
    x, y = data.batch(range(64))
    units = excite.units(net.graph)
    stats = excite.GateStats(units, 10)
    with torch.no_grad():
        before = model(x)
        with excite.hooks(model, units, lambda k, s: stats.add(k, s, y)):
            during = model(x)
    assert int(stats.sums[0][0].sum()) != 0  # the hooks did record
    assert torch.equal(before, during)


def test_fused_and_plain_give_the_same_json(trained: tuple[Path, str], tmp_path: Path,
                                            excited: tuple[Path, dict[str, Any]]) -> None:
    ok("excite", SPEC, "--weights", trained[0] / "se" / "model.pt", "--data", "sklearn:digits",
       "--split", "all", "--per-class", str(PER_CLASS), "--classes", ",".join(CLASSES),
       "--no-fuse", "-o", tmp_path)
    plain = json.loads((tmp_path / "excite.json").read_text())
    fused = excited[1]
    assert fused["lowering"] == "fused" and plain["lowering"] == "plain"
    assert plain["top1"] == fused["top1"]
    for a, b in zip(plain["blocks"], fused["blocks"], strict=True):
        assert np.allclose(a["mean"], b["mean"], atol=1e-6)
        for c in CLASSES:
            assert np.allclose(a["classes"][c]["std"], b["classes"][c]["std"], atol=1e-6)


def test_triton_kernels_record_the_same_gates(trained: tuple[Path, str], tmp_path: Path,
                                              excited: tuple[Path, dict[str, Any]]) -> None:
    """The fused op's own s (its Triton path, run by the interpreter) gives the same JSON."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "sedsl.cli", "excite", str(SPEC), "--weights",
                    str(trained[0] / "se" / "model.pt"), "--data", "sklearn:digits",
                    "--split", "all", "--per-class", "1", "--classes", "0,3",
                    "-o", str(tmp_path / "t")], env=env, check=True, capture_output=True)
    ok("excite", SPEC, "--weights", trained[0] / "se" / "model.pt", "--data", "sklearn:digits",
       "--split", "all", "--per-class", "1", "--classes", "0,3", "--no-fuse",
       "-o", tmp_path / "p")
    triton = json.loads((tmp_path / "t" / "excite.json").read_text())
    plain = json.loads((tmp_path / "p" / "excite.json").read_text())
    for a, b in zip(triton["blocks"], plain["blocks"], strict=True):
        assert np.allclose(a["mean"], b["mean"], atol=1e-5)
    assert triton["top1"] == plain["top1"]


def test_figures_are_written(excited: tuple[Path, dict[str, Any]]) -> None:
    pytest.importorskip("matplotlib")
    out, _ = excited
    # the last block of each stage (conv2..conv4) and the last three: 4 distinct blocks
    drawn = sorted(p.name for p in out.glob("gates_*.svg"))
    assert drawn == [f"gates_{b}.se.svg" for b in
                     ("conv2.block2", "conv3.block2", "conv4.block1", "conv4.block2")]
    assert (out / "depth.svg").read_text().lstrip().startswith("<?xml")


# --- ablation -----------------------------------------------------------------------------------


def test_ablation_savings_equal_the_cost_of_the_variant(trained: tuple[Path, str],
                                                        excited: tuple[Path, dict[str, Any]]
                                                        ) -> None:
    from sedsl.pytorch.flops import fvcore_flops

    _, doc = excited
    net = sedsl.load(SPEC)
    full = json.loads(ok("cost", SPEC, "--json"))
    state = net.to_torch(fused=False).state_dict()
    full_flops = fvcore_flops(net.to_torch(fused=False), (1, 8, 8))
    assert [r["stage"] for r in doc["ablation"]] == ["conv2", "conv3", "conv4"]
    for row in doc["ablation"]:
        variant = json.loads(ok("cost", row["variant"], "--json"))
        assert row["params_saved"] == full["se"]["params"] - variant["se"]["params"]
        assert row["flops_saved"] == full["se"]["flops"] - variant["se"]["flops"]
        # torch's count of the SE tensors in that stage, and fvcore's count of the two models
        se_numel = sum(v.numel() for k, v in state.items()
                       if k.startswith(row["stage"] + ".") and ".se." in k)
        assert row["params_saved"] == se_numel
        small = sedsl.load(row["variant"]).to_torch(fused=False)
        assert row["flops_saved"] == full_flops - fvcore_flops(small, (1, 8, 8))


def test_folded_model_equals_the_mean_gate_model(trained: tuple[Path, str],
                                                 excited: tuple[Path, dict[str, Any]]) -> None:
    _, doc = excited
    weights = trained[0] / "se" / "model.pt"
    x, _ = digits_samples()
    means = {b["name"]: torch.tensor(b["mean"]) for b in doc["blocks"]}
    for row in doc["ablation"]:
        model = plain_model(weights)
        variant = sedsl.load(row["variant"]).to_torch(fused=False).eval()
        for name, module in model.named_modules():
            if name.startswith(row["stage"] + ".") and name.endswith(".se.gate"):
                m = means[name.removesuffix(".gate")]
                module.register_forward_hook(
                    lambda _m, _i, out, m=m: m.view(1, -1, 1, 1).expand_as(out).to(out.dtype))
        variant.load_state_dict(torch.load(row["folded"], weights_only=True))
        with torch.no_grad():
            assert torch.allclose(variant(x), model(x), atol=1e-4, rtol=1e-4)


def test_identity_ablation_is_the_variant_with_the_same_weights(
        trained: tuple[Path, str], excited: tuple[Path, dict[str, Any]]) -> None:
    _, doc = excited
    weights = torch.load(trained[0] / "se" / "model.pt", weights_only=True)
    x, y = digits_samples()
    for row in doc["ablation"]:
        variant = sedsl.load(row["variant"]).to_torch(fused=False).eval()
        variant.load_state_dict({k: v for k, v in weights.items() if k in variant.state_dict()})
        with torch.no_grad():
            acc = float((variant(x).argmax(1).numpy() == y).mean())
        assert row["identity_top1"] == pytest.approx(acc)


# --- torchrun -----------------------------------------------------------------------------------


def torchrun(n: int, args: list[str], port: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
           f"--master_port={port}", "-m", "sedsl.cli", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def test_two_process_torchrun_equals_one_process(trained: tuple[Path, str], tmp_path: Path,
                                                 excited: tuple[Path, dict[str, Any]]) -> None:
    """The same samples in 2 gloo processes (a batch each): the sums reduce to the same JSON."""
    torchrun(2, ["excite", str(SPEC), "--weights", str(trained[0] / "se" / "model.pt"),
                 "--data", "sklearn:digits", "--split", "all", "--per-class", str(PER_CLASS),
                 "--classes", ",".join(CLASSES), "--ablate", "stage", "-o", str(tmp_path)], 29612)
    two = json.loads((tmp_path / "excite.json").read_text())
    one = dict(excited[1])
    for doc in (one, two):
        doc["ablation"] = [{**r, "variant": None, "folded": None} for r in doc["ablation"]]
    assert {k: v for k, v in two.items() if k != "blocks"} == \
        {k: v for k, v in one.items() if k != "blocks"}
    for a, b in zip(one["blocks"], two["blocks"], strict=True):
        # equal up to the last bits a conv may round differently with another thread count
        assert a["name"] == b["name"] and a["classes"].keys() == b["classes"].keys()
        assert np.allclose(a["mean"], b["mean"], atol=1e-7)
        for c in a["classes"]:
            assert a["classes"][c]["n"] == b["classes"][c]["n"]
            assert np.allclose(a["classes"][c]["mean"], b["classes"][c]["mean"], atol=1e-7)
            assert np.allclose(a["classes"][c]["std"], b["classes"][c]["std"], atol=1e-6)


# --- bad input ----------------------------------------------------------------------------------


def error_of(*args: Any) -> str:
    result = sedsl_cli(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return str(result.output)


def test_weights_of_another_spec_name_the_keys(trained: tuple[Path, str], tmp_path: Path) -> None:
    message = error_of("excite", SPEC, "--set", "width=8", "--weights",
                       trained[0] / "se" / "model.pt", "--data", "sklearn:digits", "-o", tmp_path)
    assert "mis-shaped" in message and "stem.conv1.weight (16, 1, 3, 3)" in message
    # the base network's weights lack the SE blocks' tensors
    message = error_of("excite", SPEC, "--weights", trained[0] / "base" / "model.pt",
                       "--data", "sklearn:digits", "-o", tmp_path)
    assert re.search(r"24 missing: conv2\.block1\.se\.fc1\.weight", message)


def test_per_class_larger_than_a_class(trained: tuple[Path, str], tmp_path: Path) -> None:
    message = error_of("excite", SPEC, "--weights", trained[0] / "se" / "model.pt", "--data",
                       "sklearn:digits", "--per-class", "100", "-o", tmp_path)
    assert "--per-class 100 but class `0` has" in message


def image(path: Path, size: tuple[int, int] = (12, 10), value: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_image_folder_matches_torchvision(tmp_path: Path) -> None:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from sedsl.analysis.data import Prep, image_folder

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            image(tmp_path / c / f"{i}.png", (12 + 5 * i, 10 + 3 * i), value=i)
    mine = image_folder(tmp_path, (3, 8, 8), Prep())
    theirs = ImageFolder(str(tmp_path), transforms.Compose([
        transforms.Resize(9), transforms.CenterCrop(8), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    assert mine.classes == theirs.classes and mine.labels == theirs.targets
    for i in range(len(theirs)):
        assert torch.allclose(mine.load(i), theirs[i][0], atol=1e-6)


def test_bad_image_folders(tmp_path: Path) -> None:
    from sedsl.analysis.data import Prep, image_folder
    from sedsl.errors import DataError

    (tmp_path / "a").mkdir()
    image(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match=r"the class folder .*b is empty"):
        image_folder(tmp_path, (3, 8, 8), Prep())
    os.mkfifo(tmp_path / "b" / "pipe.png")  # Image.open would block on it
    with time_budget(5.0), pytest.raises(DataError, match=r"pipe\.png is not an image: not a "
                                         "regular file"):
        image_folder(tmp_path, (3, 8, 8), Prep())
    (tmp_path / "b" / "pipe.png").unlink()
    (tmp_path / "b" / "notes.txt").write_text("not a picture")
    with pytest.raises(DataError, match=r"notes\.txt is not an image"):
        image_folder(tmp_path, (3, 8, 8), Prep())


def test_train_device(tmp_path: Path) -> None:
    """--device: auto (here, without a GPU, the CPU) trains like cpu; a device this machine
    lacks or cannot train on is a clean error."""
    args = ["train", SPEC, "--data", "sklearn:digits", "--epochs", "1", "-o"]
    ok(*args, tmp_path / "cpu", "--device", "cpu")
    if not torch.cuda.is_available():
        ok(*args, tmp_path / "auto")
        rows = [(tmp_path / d / "metrics.csv").read_text().split("\n")[1].split(",")[:4]
                for d in ("cpu", "auto")]
        assert rows[0] == rows[1]  # the same losses: the same device, seed and data order
    for device, message in (("meta", "training runs on cpu or cuda"),
                            ("tpu9", "unknown device"),
                            *([] if torch.cuda.is_available() else [("cuda", "no CUDA device")])):
        result = sedsl_cli(*args, tmp_path / device, "--device", device)
        assert result.exit_code == 1 and message in result.output, result.output
