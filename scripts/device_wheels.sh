#!/usr/bin/env bash
# Wheels a lent GPU machine (the device tool's nvidia-h200 image: Python 3.12 with torch,
# transformers, accelerate, pandas, pyarrow and matplotlib, no network) lacks for
# `llome bench paper`, at the versions this project is tested with, into .whl/ (git-ignored,
# about 18 MB: carry it). Run here, where PyPI is reachable; scripts/device_paper.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.24.0 \
  tokenizers==0.23.3
ls -1 .whl
