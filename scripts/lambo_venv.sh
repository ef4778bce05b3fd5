#!/usr/bin/env bash
# Build a throwaway venv with the authors' LaMBO-2 (pytorch-cortex), for `llome bench lambo`.
# cortex pins lightning==1.9.5 and pulls wandb, hydra and s3fs, so it never enters the project's
# own environment. cortex itself goes in with --no-deps, then what its LaMBO-2 path imports;
# torch==2.13.0 is requested first and again in the same command as the rest, so pip keeps the
# CPU wheel rather than a CUDA one. torchvision and wandb are not needed and not installed.
# Usage: scripts/lambo_venv.sh [VENV_DIR]   (default .lambo-venv, git-ignored; prints the python path)
set -euo pipefail
VENV=${1:-${LAMBO_VENV:-.lambo-venv}}
PY=${PYTHON:-python3}
export WANDB_MODE=disabled
if [ ! -f "$VENV/.lambo-ok" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.13.0 >&2
  "$VENV/bin/pip" install -q --no-deps pytorch-cortex==0.0.4 >&2
  # pip warns that lightning 1.9.5 wants fsspec<2025; the LaMBO-2 import works anyway.
  # transformers 5 ignores the vocab_file of cortex's BertTokenizerFast subclass, and pandas 3's
  # Arrow strings cannot reshape as cortex's tokenizer transform does: stay on 4.x and 2.x.
  "$VENV/bin/pip" install -q botorch pytorch-warmup tabulate omegaconf hydra-core tqdm \
    cachetools edlib "transformers<5" "pandas<3" lightning==1.9.5 pytorch-lightning==1.9.5 universal-pathlib \
    pyarrow boto3 s3fs torch==2.13.0 >&2
  # `import lightning` (1.9.5) imports lightning.app, which breaks with the newest lightning-cloud
  # (no AppinstancesIdBody) and needs pkg_resources (gone from setuptools 81; torch wants >= 77).
  "$VENV/bin/pip" install -q --no-deps lightning-cloud==0.5.27 >&2
  "$VENV/bin/pip" install -q "setuptools>=77,<81" >&2
  "$VENV/bin/python" -W ignore -c "import lightning; from cortex.model.tree import SequenceModelTree; from cortex.optim.generative import LaMBO" >&2
  touch "$VENV/.lambo-ok"
fi
echo "$VENV/bin/python"
