"""Training under torchrun: 2 processes on the CPU with gloo, a small SE-ResNet built by sedsl
(plain modules, and SE blocks as the fused op torch.ops.sedsl.se_block), wrapped in DDP (small
buckets; and under torch.compile), FSDP2 `fully_shard` per block, activation checkpointing of the
SE blocks and bf16 autocast. Both ranks must hold the same gradients, equal to those of one
process on the whole batch. tests/distributed_worker.py is the rank's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tests.distributed_worker import SCENARIOS


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests/distributed_worker.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_gradients_agree(results: Path, scenario: str) -> None:
    rank0, rank1, single = (torch.load(results / f"{scenario}.{who}.pt")
                            for who in ("rank0", "rank1", "single"))
    assert rank0.keys() == rank1.keys() == single.keys()
    assert any(".se.fc1." in k for k in single)  # the SE blocks' parameters are trained
    bf16 = SCENARIOS[scenario][3]
    for name, g in single.items():
        assert torch.equal(rank0[name], rank1[name]), name  # reduced: the same on every rank
        assert g.abs().max() > 0, name
        # bf16 rounds differently on half and whole batches; fp32 agrees to rounding
        tol = 2e-2 * g.abs().max() if bf16 else 1e-5 * g.abs().max() + 1e-8
        torch.testing.assert_close(rank0[name], g, rtol=0, atol=float(tol), msg=name)
