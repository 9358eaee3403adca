"""Shared fixtures: the repository's spec folder and compiled specs (compiled once per run)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

import sedsl

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"


@cache
def compiled(name: str, **overrides: object) -> sedsl.Network:
    return sedsl.load(SPECS / name, **overrides)


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A scratch folder that can `use` the block library."""
    return tmp_path
