#!/usr/bin/env bash
# One GPU call that does every stage, each packed as soon as it ends (a later stage's failure or the call's
# time limit loses nothing packed before).  Needs .gpu/shared, .gpu/whl and .gpu/inputs carried and .gpu/faces64
# on the machine (carried by a first, short call: it does not fit in one 64 MiB upload beside the rest).
#   stage 1: faces32 key rows on all 500 random pairs (batch 250) until S1 s, hard stop at H1 s
#   stage 2: faces64 evaluation into results/facemodel64 (hard stop at H2 s)
#   stage 3: faces64 rows on the first 64 random pairs (batch 32) until S3 s, hard stop at H3 s
# Times count from the start of this script.  Merge here: see scripts/gpu/README.md.
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
t0=$(date +%s); left() { echo $(( $1 - ($(date +%s) - t0) )); }
S1=${S1:-240} H1=${H1:-330} H2=${H2:-470} S3=${S3:-500} H3=${H3:-560}
set +e
timeout "$(left "$H1")" python3 scripts/run_morph_experiments.py run --experiment faces32 --rows "${ROWS32:-key}" \
    --pairs 500 --batch-size 250 --device cuda --budget-s "$(left "$S1")" 2>&1 | tee -a "$OUT/log.txt"
tar -czf "$OUT/faces32_runs.tar.gz" results/morphs/faces32/runs
timeout "$(left "$H2")" python3 scripts/evaluate_face_model.py --model .gpu/faces64 --model-label faces64 \
    --loss-log .gpu/faces64/loss_log.csv --z-codes .gpu/inputs/faces64_z_codes.npz --out results/facemodel64 \
    --device cuda --batch 256 2>&1 | tee -a "$OUT/log.txt"
tar -czf "$OUT/facemodel64.tar.gz" results/facemodel64
timeout "$(left "$H3")" python3 scripts/run_morph_experiments.py run --experiment faces64 --model .gpu/faces64 \
    --rows "${ROWS64:-dim,adjointdeis1_ode,checkpoint}" --pairs 64 --batch-size 32 --device cuda \
    --budget-s "$(left "$S3")" 2>&1 | tee -a "$OUT/log.txt"
tar -czf "$OUT/faces64_runs.tar.gz" results/morphs/faces64/runs
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
ls -la "$OUT"
