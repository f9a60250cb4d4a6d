#!/usr/bin/env bash
# GPU run 1 (device tool, carry .gpu/shared and .gpu/whl): the key rows of the faces32 experiment on all 500
# pairs, batch 250, starting no batch after BUDGET_S s and stopping hard at HARD_S s (finished batches are
# kept either way); returns the run folders as one tar.
# Resumable: the same command on a machine that holds earlier batches (or after unpacking them) goes on.
# Merge here: tar -xzf <files_at>/faces32_runs.tar.gz && python scripts/run_morph_experiments.py tables
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
timeout "${HARD_S:-400}" python3 scripts/run_morph_experiments.py run --experiment faces32 --rows "${ROWS:-key}" --pairs "${PAIRS:-500}" \
    --batch-size "${BATCH:-250}" --device "${DEVICE:-cuda}" --budget-s "${BUDGET_S:-420}" 2>&1 | tee -a "$OUT/log.txt" \
    || echo "run FAILED (finished batches are kept)" | tee -a "$OUT/log.txt"
tar -czf "$OUT/faces32_runs.tar.gz" results/morphs/faces32/runs
ls -la "$OUT"
