#!/usr/bin/env bash
# The memory gate of your project: profile the configurations you train (fake engine: exact byte
# counts, deterministic, no GPU) and compare them with the baseline committed beside this script.
# The build fails (exit 1) when a saved-activation, peak-activation or peak figure grows by more than
# the tolerance. Extra arguments go to `memprof check` (e.g. --markdown "$GITHUB_STEP_SUMMARY").
#
# Write or refresh the baseline after an intended change, and commit it:
#     REFRESH=1 bash examples/ci_memory_gate/memory-gate.sh
set -euo pipefail

BACKBONE=${BACKBONE:-bert-base}         # a registered backbone, or your model's config.json
METHODS=${METHODS:-lora,meft1}          # the fine-tuning methods you use
SEQ_LENS=${SEQ_LENS:-128,512}
BATCH_SIZES=${BATCH_SIZES:-8}
BASELINE=${BASELINE:-$(dirname "$0")/baseline.json}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
memprof compare --backbone "$BACKBONE" --methods "$METHODS" --seq-lens "$SEQ_LENS" \
    --batch-sizes "$BATCH_SIZES" --engine fake --no-report --out "$out" --quiet >/dev/null  # results.json alone

if [ "${REFRESH:-0}" = 1 ]; then
    memprof baseline "$out" --out "$BASELINE"
else
    # the fake engine is deterministic: any growth is real, so the tolerance is tiny
    memprof check "$out" --baseline "$BASELINE" --tolerance 0.1% "$@"
fi
