#!/usr/bin/env bash
# One device call: benchmarks/sd15_unet_memory_time.py at Stable Diffusion 1.5's UNet size (859.5 M parameters,
# random weights, 64x64 latents, batch 1, 77x768 prompt embeddings) on the GPU (issue 15 item 4).  Needs .gpu/whl
# (scripts/gpu/prepare.sh, or only its pip download line: the GPU image has torch, not diffusers).  Writes into $OUT:
#   sd15_cuda_float32.json   adjoint, backprop, checkpoint, reversible at N = 10 and 50, float32 with TF32 off,
#                            with the script's verdicts (checkpoint = backprop to round-off; adjoint and reversible
#                            gaps to backprop shrinking as 1/N from N = 10 to 50)
#   sd15_cuda_bfloat16.json  the four at N = 50 in bf16 (weights and states; the reversible method refuses it)
#   sd15_cuda_theta.json     N = 50, float32, the gradient also w.r.t. all 859.5 M parameters θ (if time is left)
#   log.txt                  everything printed, the tables included
#   run(command="bash scripts/gpu/sd15_check.sh", carry=[".gpu/whl"], timeout_s=540)
# Estimated 4-5 min on an H200 (forward 677 GFLOP, ~20-30 ms in IEEE float32; 12-25 s per measurement, most of it
# the fresh process's start); TOTAL_S (default 420) bounds it: each run gets what is left of it as its budget, and
# every JSON is rewritten after each measurement, so a run stopped from outside keeps what finished.
source "$(dirname "$0")/common.sh"
TOTAL_S=${TOTAL_S:-420}
START=$SECONDS
budget() {  # seconds for the next run: what is left of TOTAL_S, at most $1
    local left=$(( TOTAL_S - (SECONDS - START) ))
    left=$(( left < $1 ? left : $1 ))
    echo $(( left > 0 ? left : 0 ))
}
bench() {  # the benchmark's exit status (1: incomplete or a failed verdict) does not stop the next run
    python3 benchmarks/sd15_unet_memory_time.py --size sd15 --device cuda "$@" 2>&1 | tee -a "$OUT/log.txt" || true
}
bench --steps 10 50 --budget-s "$(budget 240)" --stage-timeout-s 120 --out "$OUT/sd15_cuda_float32.json"
bench --steps 50 --dtype bfloat16 --budget-s "$(budget 100)" --stage-timeout-s 60 --out "$OUT/sd15_cuda_bfloat16.json"
bench --steps 50 --theta --budget-s "$(budget 150)" --stage-timeout-s 90 --out "$OUT/sd15_cuda_theta.json"
echo "sd15_check: $(( SECONDS - START )) s" | tee -a "$OUT/log.txt"
