#!/usr/bin/env bash
# One command for a GPU machine lent by the device tool (no network there; its own torch and
# Triton, never reinstalled). From the repository root:
#
#   bench/make_wheelhouse.sh                 # here: sedsl and the pure-Python deps into .whl/
#   device run: bench/gpu_session.sh         # there, with carry [".whl"], timeout_s ~ budget+90
#   bench/gpu_session.sh --dry-run           # here or in CI: CPU, interpreter, tiny shapes
#
# Results land in $OUT (the device tool's folder; build/gpu_session otherwise): gpu_session.json,
# gpu_session.md and log.txt. Extra arguments go to bench/gpu_session.py (--budget SECONDS).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-build/gpu_session}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [[ " $* " == *" --dry-run "* ]]; then
  export TRITON_INTERPRET=1  # before Python starts: triton reads it at import
elif [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
  # sedsl's own wheel and the pure-Python packages the image lacks, never torch or triton
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/sedsl-site .whl/*.whl 2>&1 | tail -5
  export PYTHONPATH="/tmp/sedsl-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # the working tree first, as the tests see it
"$PY" bench/gpu_session.py "$@" 2>&1 | tee "$OUT/log.txt"
