#!/usr/bin/env bash
# The GPU batches that produced models/shakespeare/ and models/tasks/, as they were run.
# Every run of a stage goes side by side with the others, each with a time budget (steps
# chosen by timing 10 steps; --max-seconds is a hard cap), then one archive of the outputs:
#   STAGE=1 OUT=/tmp/out bash scripts/train_all_gpu.sh   # one H200, from scratch
#   STAGE=2 OUT=/tmp/out bash scripts/train_all_gpu.sh   # two H200s; continues stage 1's task
#                                                        # models from models/tasks/ (--init)
# Results: $OUT/results.tar.gz (models/, logs/). Which folders were shipped: notebook 09.
set -u
OUT=${OUT:-/tmp/minimamba_gpu}
W=$(mktemp -d)
mkdir -p "$W/models/tasks" "$W/logs"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
run() { local name=$1; shift; python3 "$@" --no-progress > "$W/logs/$name.log" 2>&1 & }
if [ "${STAGE:-1}" = 1 ]; then
  B=${BUDGET:-170}
  SH="scripts/train_shakespeare.py --preset gpu --budget-seconds $B --max-seconds $((B + 25))"
  T="scripts/train_tasks.py --budget-seconds $B --max-seconds $((B + 25))"
  run shakespeare $SH --out "$W/models/shakespeare"
  run shakespeare_deep $SH --d-model 192 --n-layer 6 --out "$W/models/shakespeare_deep"
  run sc_s6 $T --task selective_copying --seqlen 256 --n-tokens 8 --out "$W/models/tasks/sc_s6"
  run sc_lti $T --task selective_copying --seqlen 256 --n-tokens 8 --lti --stop-at 2 --out "$W/models/tasks/sc_lti"
  run ih_s6 $T --task induction_heads --seqlen 256 --stop-at 2 --out "$W/models/tasks/ih_s6"
  run ih_lti $T --task induction_heads --seqlen 256 --lti --stop-at 2 --out "$W/models/tasks/ih_lti"
  run ih_s6_64 $T --task induction_heads --seqlen 64 --stop-at 2 --out "$W/models/tasks/ih_s6_64"
else
  B=${BUDGET:-110}
  T="scripts/train_tasks.py --budget-seconds $B --max-seconds $((B + 15)) --batch-size 256"
  CUDA_VISIBLE_DEVICES=0 run shakespeare scripts/train_shakespeare.py --preset gpu --budget-seconds $B \
      --max-seconds $((B + 15)) --out "$W/models/shakespeare"
  CUDA_VISIBLE_DEVICES=0 run ih_s6 $T --task induction_heads --seqlen 256 --stop-at 2 --warmup 20 \
      --init models/tasks/ih_s6 --out "$W/models/tasks/ih_s6"
  CUDA_VISIBLE_DEVICES=1 run sc_s6 $T --task selective_copying --seqlen 256 --n-tokens 8 --warmup 20 \
      --init models/tasks/sc_s6 --out "$W/models/tasks/sc_s6"
  CUDA_VISIBLE_DEVICES=1 run sc_s6_64 $T --task selective_copying --seqlen 64 --n-tokens 8 \
      --out "$W/models/tasks/sc_s6_64"
  CUDA_VISIBLE_DEVICES=1 run sc_lti_64 $T --task selective_copying --seqlen 64 --n-tokens 8 --lti \
      --stop-at 2 --out "$W/models/tasks/sc_lti_64"
fi
wait
mkdir -p "$OUT"
tar -czf "$OUT/results.tar.gz" -C "$W" models logs
tail -n 3 "$W"/logs/*.log
