#!/usr/bin/env bash
# The GPU batches that produced models/shakespeare/ and models/tasks/, as they were run.
# Every run of a stage goes side by side with the others, each with a time budget (steps
# chosen by timing 10 steps; --max-seconds is a hard cap), then one archive of the outputs:
#   STAGE=1 OUT=/tmp/out bash scripts/train_all_gpu.sh   # one H200, from scratch
#   STAGE=2 OUT=/tmp/out bash scripts/train_all_gpu.sh   # two H200s; continues stage 1's task
#                                                        # models from models/tasks/ (--init)
#   STAGE=3 OUT=/tmp/out bash scripts/train_all_gpu.sh   # one GPU: S6 and LTI (per-channel B, C)
#                                                        # with the same steps, then scripts/eval_tasks.py
# Results: $OUT/results.tar.gz (models/, logs/); stage 3: $OUT/tasks_stage3.tar.gz (models/tasks/,
# logs/, eval/tasks_eval.json). Which folders were shipped: notebook 09.
# Stage 3 was run on one H100 on 2026-12-07 (80 s wall): its sc_s6_64, sc_lti_64 and ih_lti ship in
# models/tasks/, with its eval JSON as models/tasks/tasks_eval.json and its logs in models/tasks/logs/.
set -u
OUT=${OUT:-/tmp/minimamba_gpu}
W=$(mktemp -d)
mkdir -p "$W/models/tasks" "$W/logs"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
run() { local name=$1; shift; python3 "$@" --no-progress > "$W/logs/$name.log" 2>&1 & }
if [ "${STAGE:-1}" = 3 ]; then
  # Same budget and schedule for S6 and LTI: fixed --steps, batch 256, default lr and warm-up,
  # seed 0 (same initial weights elsewhere, same batches), no early stop, no time budget.
  # Induction heads LTI: IH_STEPS x 256 >= ih_s6's 602 x 128 + 1081 x 256 = 353,792 sequences.
  # MAXSEC is only a safety net for the wall time; config.json's steps_done says if it cut a run.
  # Tiny CPU check: SC_STEPS=3 IH_STEPS=3 EVAL_SIZE=16 IH_ROWS=4 SC_ROWS=8 FACTORS="1 4" STAGE=3 ...
  T0=$(date +%s)
  SC=${SC_STEPS:-2000} IH=${IH_STEPS:-1400} MAXSEC=${MAXSEC:-250} ES=${EVAL_SIZE:-512}
  T="scripts/train_tasks.py --batch-size 256 --stop-at 2 --seed 0 --eval-size $ES --max-seconds $MAXSEC"
  run sc_s6_64 $T --task selective_copying --seqlen 64 --n-tokens 8 --steps "$SC" \
      --out "$W/models/tasks/sc_s6_64"
  run sc_lti_64 $T --task selective_copying --seqlen 64 --n-tokens 8 --steps "$SC" --lti --lti-bc channel \
      --out "$W/models/tasks/sc_lti_64"
  run ih_lti $T --task induction_heads --seqlen 256 --steps "$IH" --lti --lti-bc channel --extrapolate \
      --out "$W/models/tasks/ih_lti"
  wait
  mkdir -p "$W/shipped" "$W/eval"
  cp -r models/tasks/ih_s6 models/tasks/sc_s6_64 "$W/shipped/"  # the shipped S6 models, for comparison
  REPO=$PWD
  (cd "$W" && python3 "$REPO/scripts/eval_tasks.py" \
      shipped/ih_s6 models/tasks/ih_lti models/tasks/sc_s6_64 models/tasks/sc_lti_64 shipped/sc_s6_64 \
      --out eval/tasks_eval.json --ih-rows "${IH_ROWS:-256}" --sc-rows "${SC_ROWS:-2048}" \
      --factors ${FACTORS:-1 4 16 64}) \
      > "$W/logs/eval.log" 2>&1
  echo "stage 3 wall seconds: $(( $(date +%s) - T0 ))" | tee "$W/logs/wall.txt"
  mkdir -p "$OUT"
  tar -czf "$OUT/tasks_stage3.tar.gz" -C "$W" models logs eval
  tail -n 3 "$W"/logs/*.log
  exit 0
elif [ "${STAGE:-1}" = 1 ]; then
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
