"""sedsl.pytorch.kernels.launch without a GPU: the direct path hands the compiled kernel's
launcher exactly what Triton's own launch path hands it.

A child process (`python tests/test_kernels_launch.py`, printing JSON; the stub driver and the
hook are process-wide) makes Triton target a CUDA device that is not there: the first launch of
each specialisation plants a recording no-op kernel in Triton's cache, so later launches run
Triton's whole host path and then record their launcher arguments. The forward and backward of
an SE block run with the direct path off (every launch through `kernel[grid](...)`) and on;
the launches must match one for one: grid, then every argument after the launch metadata and
hooks (tensors by shape, strides, dtype and storage, integers and constexprs by value).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _install(records: list[tuple[Any, ...]]) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import _stub_driver

    _stub_driver.install(lambda name, *args: records.append((name, *args)))


def _describe(record: tuple[Any, ...]) -> list[Any]:
    """A launch as comparable values: name, grid, and the arguments after the 4 leading
    (grid, stream) and 5 per-kernel (function, metadata, launch metadata, hooks) ones."""
    import torch

    def value(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return ["tensor", list(a.shape), list(a.stride()), str(a.dtype), a.data_ptr() % 16]
        return repr(a)

    name, *args = record
    return [name, args[:3], [value(a) for a in args[9:]]]


def child_main() -> None:
    import torch

    records: list[tuple[Any, ...]] = []
    _install(records)
    from sedsl.pytorch.kernels import launch, triton_se
    from sedsl.pytorch.kernels.reference import for_act_grad

    def block(channels_last: bool, squeeze: str, act: str) -> None:
        gen = torch.Generator().manual_seed(0)
        u = torch.randn(2, 40, 9, 9, generator=gen)
        if channels_last:
            u = u.contiguous(memory_format=torch.channels_last)
        ident = torch.randn_like(u)
        w1, b1 = torch.randn(5, 40, generator=gen), torch.randn(5, generator=gen)
        w2 = torch.randn(40, 5, 1, 1, generator=gen)  # a 1x1 conv weight, as modules pass it
        out, z, s, idx = triton_se.forward(u, w1, b1, w2, None, ident, squeeze, "silu",
                                           "sigmoid", act)
        triton_se.backward(torch.randn_like(out), u, w1, b1, w2, None,
                           *for_act_grad(ident, out, act), z, s, idx, None, None, squeeze, "silu",
                           "sigmoid", act, True)

    runs: dict[str, list[Any]] = {}
    cases = [(False, "avg", "relu"), (True, "max", "hardswish")]
    for mode in ("triton", "direct"):
        launch.DIRECT = mode == "direct"
        for case in cases:
            block(*case)  # first: compile (planted), or the direct path's first call
            records.clear()
            block(*case)
            runs.setdefault(mode, []).extend(_describe(r) for r in records)
    print(json.dumps(runs))


def test_direct_launches_match_triton() -> None:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-6000:]
    runs = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(runs["triton"]) == 16  # 4 forward and 4 backward launches per block
    assert [r[0] for r in runs["direct"]] == [r[0] for r in runs["triton"]]
    for ours, theirs in zip(runs["direct"], runs["triton"], strict=True):
        assert ours == theirs


if __name__ == "__main__":
    child_main()
