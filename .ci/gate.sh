#!/usr/bin/env bash
# The memory-regression gate: profile the gated configurations with the fake engine (exact byte
# counts, no GPU) and compare them with the committed baseline. Extra arguments go to
# `memprof check` (e.g. --markdown "$GITHUB_STEP_SUMMARY").
#
# Refresh the baseline after an intended change:  REFRESH=1 bash .ci/gate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BACKBONES=(bert-base bart-base opt-125m)
SEQ_LENS=128,512
BATCH_SIZES=8
BASELINE=reports/baseline/baseline.json
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$out"' EXIT

# One compare per backbone, all at once, each in one process (--jobs 1): three processes keep two
# cores busy to the end, and each pays its imports and first model build once instead of once per
# worker. The gate reads results.json alone (--no-report: no plots to draw).
pids=()
for backbone in "${BACKBONES[@]}"; do
    # --methods all: every registered method once (an alias, meft = meft1, would profile the same thing twice)
    memprof compare --backbone "$backbone" --methods all --seq-lens "$SEQ_LENS" \
        --batch-sizes "$BATCH_SIZES" --engine fake --jobs 1 --no-report --out "$out/$backbone" --quiet >/dev/null &
    pids+=("$!")
done
for pid in "${pids[@]}"; do
    wait "$pid"  # a compare that failed fails the gate (set -e)
done

if [ "${REFRESH:-0}" = 1 ]; then
    memprof baseline "$out"/*/ --out "$BASELINE"
else
    # The fake engine is deterministic: any growth is real, so the tolerance is tiny.
    memprof check "$out"/*/ --baseline "$BASELINE" --tolerance 0.1% "$@"
fi
