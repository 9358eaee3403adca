"""The Triton kernels under Triton's interpreter (no GPU needed).

TRITON_INTERPRET=1 has to be set before triton is imported, and this process may already have
imported it, so the cases (kernels_interpret_cases.py) run in a pytest process of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).with_name("kernels_interpret_cases.py")


def test_triton_kernels_under_interpreter() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", str(CASES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    report = run.stdout[-8000:] + run.stderr[-4000:]
    assert run.returncode == 0, report
    assert " passed" in run.stdout and " skipped" not in run.stdout, report
