#!/usr/bin/env bash
# Wheels for the GPU machine (Python 3.12, x86-64, no network): sedsl from this working tree and
# the pure-Python packages its image lacks. Torch, Triton, timm, numpy and friends are there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip wheel -q --no-deps -w .whl .
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl \
  lark==1.2.2 yacs termcolor
python3 -m pip wheel -q --no-deps -w .whl fvcore==0.1.5.post20221221 iopath==0.1.10
ls -la .whl
