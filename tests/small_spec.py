"""A small SE-ResNet (two stages, three bottlenecks, 32x32 input) for tests that trace, export or
train whole networks in seconds."""

from __future__ import annotations

from pathlib import Path

TINY = """\
use "lib/resnet.se"

network tiny_se_resnet(classes = 10) {
  input 3x32x32
  stem  = stem7x7(16)
  conv2 = bottleneck(8) * 2
  conv3 = bottleneck(16, stride = 2)
  head  = classifier(classes)
}

se {
  ratio = 4
  at residual.end in conv2..conv3
}
"""


def write_tiny(folder: Path) -> Path:
    """The spec as a file in `folder`."""
    path = folder / "tiny.se"
    path.write_text(TINY)
    return path
