#!/usr/bin/env bash
# The house's habits, checked before the tests: ruff (lint and format) everywhere, mypy on the
# typed layers (llome_core and api) and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy llome_core api benchmarks
