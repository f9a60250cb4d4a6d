#!/usr/bin/env bash
# GPU run (device tool, carry .gpu/shared and .gpu/whl): faces64 morph rows on the first PAIRS pairs of the random
# order, batch BATCH, from the faces64 model that an earlier call on the same warm machine unpacked to
# ${FACES64:-/tmp/faces64} (the faces64 evaluation's payload, see README.md); starts no batch after BUDGET_S s,
# stops hard at HARD_S s; returns the run folders as one tar.
# Merge here: tar -xzf <files_at>/faces64_runs.tar.gz && python scripts/run_morph_experiments.py tables --experiment faces64
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
ls "${FACES64:=/tmp/faces64}"/unet/*.safetensors || { echo "no faces64 model at $FACES64"; exit 5; }
timeout "${HARD_S:-150}" python3 scripts/run_morph_experiments.py run --experiment faces64 --model "$FACES64" \
    --rows "${ROWS:-dim,adjointdeis1_ode,checkpoint}" --pairs "${PAIRS:-64}" --batch-size "${BATCH:-32}" \
    --device "${DEVICE:-cuda}" --budget-s "${BUDGET_S:-110}" 2>&1 | tee -a "$OUT/log.txt" \
    || echo "run FAILED or stopped (finished batches are kept)" | tee -a "$OUT/log.txt"
tar -czf "$OUT/faces64_runs.tar.gz" results/morphs/faces64/runs
ls -la "$OUT"
