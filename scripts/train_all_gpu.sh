#!/usr/bin/env bash
# The batch that produced models/shakespeare/ and models/tasks/ on one NVIDIA H200:
# every run side by side on the one GPU, each with a time budget, then one archive.
#   OUT=/tmp/out bash scripts/train_all_gpu.sh        (results in $OUT/results.tar.gz)
set -u
OUT=${OUT:-/tmp/minimamba_gpu}
W=$(mktemp -d)
mkdir -p "$W/models/tasks" "$W/logs"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
B=${BUDGET:-190}   # seconds of training per run
run() { local name=$1; shift; python3 "$@" --no-progress > "$W/logs/$name.log" 2>&1 & }
SH="scripts/train_shakespeare.py --preset gpu --budget-seconds $B --max-seconds $((B + 25))"
run shakespeare $SH --out "$W/models/shakespeare"
run shakespeare_deep $SH --d-model 192 --n-layer 6 --out "$W/models/shakespeare_deep"
T="scripts/train_tasks.py --budget-seconds $B --max-seconds $((B + 25))"
run sc_s6 $T --task selective_copying --seqlen 256 --n-tokens 8 --out "$W/models/tasks/sc_s6"
run sc_lti $T --task selective_copying --seqlen 256 --n-tokens 8 --lti --stop-at 2 --out "$W/models/tasks/sc_lti"
run ih_s6 $T --task induction_heads --seqlen 256 --stop-at 2 --out "$W/models/tasks/ih_s6"
run ih_lti $T --task induction_heads --seqlen 256 --lti --stop-at 2 --out "$W/models/tasks/ih_lti"
run ih_s6_64 $T --task induction_heads --seqlen 64 --stop-at 2 --out "$W/models/tasks/ih_s6_64"
wait
mkdir -p "$OUT"
tar -czf "$OUT/results.tar.gz" -C "$W" models logs
tail -n 4 "$W"/logs/*.log
