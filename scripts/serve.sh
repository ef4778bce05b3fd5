#!/usr/bin/env bash
# Install (first time) and start the service on the embedded default: SQLite + in-process worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/llome serve "$@"
