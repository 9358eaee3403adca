"""bench/gpu_session.sh --dry-run: the one-command GPU session runs end to end on this CPU (tiny
shapes, Triton's interpreter), so that a lent GPU finds nothing to fix (issue 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_session_dry_run(tmp_path: Path) -> None:
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_session.sh"), "--dry-run",
                          "--budget", "600"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    doc = json.loads((tmp_path / "gpu_session.json").read_text())
    statuses = {name: s["status"] for name, s in doc["sections"].items()}
    assert set(statuses.values()) == {"ok"}, statuses
    assert doc["dry_run"] and (tmp_path / "gpu_session.md").read_text().startswith("# sedsl GPU")
    rows = doc["sections"]["variants"]["rows"]
    assert {r["variant"] for r in rows} >= {"se", "eca", "cbam", "gc", "coord"}
    fused = {r["variant"] for r in rows if "fused_fwd_ms" in r}
    assert fused == {"se", "eca", "ceca", "ge", "gct",  # the variants that run fused: an op
                     "se_bn", "ese", "ecam", "srm"}, fused  # each, or the generic transform
