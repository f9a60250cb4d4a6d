#!/usr/bin/env bash
# GPU run 2 (device tool, carry .gpu/faces64; .gpu/shared and .gpu/whl left on the warm machine by run 1, or
# carried again where they fit): evaluate faces64 into results/facemodel64, then the faces64 morph rows on
# the first 64 random pairs, batch 32, until BUDGET_S; returns both as tars.
# Merge here: tar -xzf <files_at>/faces64.tar.gz && python scripts/run_morph_experiments.py tables --experiment faces64
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
started=$(date +%s)
python3 scripts/evaluate_face_model.py --model .gpu/faces64 --loss-log .gpu/faces64/loss_log.csv \
    --out results/facemodel64 --device "${DEVICE:-cuda}" --batch 256 ${EVAL_ARGS:-} 2>&1 | tee -a "$OUT/log.txt" || echo "evaluation FAILED" | tee -a "$OUT/log.txt"
left=$(( ${BUDGET_S:-480} - ($(date +%s) - started) ))
python3 scripts/run_morph_experiments.py run --experiment faces64 --model .gpu/faces64 \
    --rows "${ROWS:-dim,adjointdeis1_ode,checkpoint}" --pairs "${PAIRS:-64}" --batch-size "${BATCH:-32}" \
    --device "${DEVICE:-cuda}" --budget-s "$left" 2>&1 | tee -a "$OUT/log.txt" \
    || echo "run FAILED (finished batches are kept)" | tee -a "$OUT/log.txt"
tar -czf "$OUT/faces64.tar.gz" results/facemodel64 results/morphs/faces64/runs
ls -la "$OUT"
