"""Shared fixtures: the repository's spec folder and compiled specs (compiled once per run)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest

import sedsl

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
# Inductor's on-disk caches per checkout, not the shared /tmp/torchinductor_<user>: their keys
# cover the traced forward graph, not a custom op's autograd, so a checkout whose op backward
# differs would reuse another's compiled backward. Set before torch reads it; child processes
# inherit it.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / "build" / "torchinductor"))


@cache
def compiled(name: str, **overrides: object) -> sedsl.Network:
    return sedsl.load(SPECS / name, **overrides)


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A scratch folder that can `use` the block library."""
    return tmp_path
