#!/usr/bin/env bash
# Install (first time) and run the default test suite, including the integration tests against
# the real Postgres (127.0.0.1:5432) and Redis (127.0.0.1:6379) of this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
exec .venv/bin/python -m pytest -m "not slow and not gpu" "$@"
