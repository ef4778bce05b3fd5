#!/usr/bin/env bash
# The paper runs on a lent GPU machine, for the device tool's `run` (command
# `bash scripts/device_paper.sh`, carry [".whl"], made by scripts/device_wheels.sh). It resumes
# every unfinished run of `llome bench paper` from the committed docs/paper/runs/, PROCS processes
# sharing the one GPU (each claims its own run), each stopping after the round that ends past
# LIMIT seconds; then it packs what changed into $OUT: paper.tgz (the results tables and the logs)
# and runs-N.tgz (the run folders, four to a file, under the tool's 16 MiB per file). ARGS go to
# every process (e.g. ARGS="--preset ehr_v-32_l-032_m-4_c-4_q-2 --methods marge --seeds 0,1,2"
# for the LLOME rows of issue 17's bracketing instance). Back here:
#   for f in /work/.device/.../*.tgz; do tar xzf "$f"; done   # then commit docs/paper
# Untested on a GPU so far: the first lent task should run it with a short LIMIT (say 120) first.
set -euo pipefail
: "${OUT:?run me through the device tool, which sets OUT}"
PROCS=${PROCS:-8}
LIMIT=${LIMIT:-420}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
mkdir -p logs
for i in $(seq "$PROCS"); do
  python3 -m llome_cli bench paper --device "${DEVICE:-cuda}" --threads 2 --quiet \
    --time-limit "$LIMIT" ${ARGS:-} > "logs/paper-$i.log" 2>&1 &
  sleep 2  # let each claim its run before the next looks
done
wait || true
tail -n 3 logs/*.log
python3 -m llome_cli bench paper --summary ${ARGS:-} > logs/summary.txt 2>&1 || true
tar czf "$OUT/paper.tgz" docs/paper/*.csv logs
runs=(docs/paper/runs/*/*/)
for ((k = 0; k < ${#runs[@]}; k += 4)); do
  tar czf "$OUT/runs-$((k / 4)).tgz" "${runs[@]:k:4}"
done
ls -la "$OUT"
