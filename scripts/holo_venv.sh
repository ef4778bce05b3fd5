#!/usr/bin/env bash
# Build a throwaway venv with the authors' pytorch-holo, for parity fixtures and the speed benchmark.
# holo pins numpy<2 and pulls wandb/hydra, so it never enters the project's own environment:
# botorch, pooch and pandas are what its Ehrlich and GA import; holo itself goes in with --no-deps.
# Usage: scripts/holo_venv.sh [VENV_DIR]   (default /tmp/holo-venv; prints the python path)
set -euo pipefail
VENV=${1:-${HOLO_VENV:-/tmp/holo-venv}}
PY=${PYTHON:-python3}
export WANDB_MODE=disabled
if [ ! -f "$VENV/.holo-ok" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # torch first and pinned: the CPU wheel on these machines (botorch would otherwise pull CUDA torch).
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q botorch pooch pandas torch==2.13.0
  "$VENV/bin/pip" install -q --no-deps pytorch-holo==0.0.5
  "$VENV/bin/python" -c "from holo.test_functions.closed_form import Ehrlich; from holo.optim import DiscreteEvolution" >&2
  touch "$VENV/.holo-ok"
fi
echo "$VENV/bin/python"
