"""Whether Triton runs its interpreter: read by the op's switch and by the launchers' autotune
space (a single config there), so neither imports the other."""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True when TRITON_INTERPRET asks for Triton's interpreter (read the way triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y")
