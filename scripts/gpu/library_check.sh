#!/usr/bin/env bash
# One device call: benchmarks/gpu_check.py on the GPU (issue 13).  Needs .gpu/whl (scripts/gpu/prepare.sh, or only
# its pip download line).  Writes $OUT/gpu_check_cuda.json and $OUT/log.txt.
#   run(command="bash scripts/gpu/library_check.sh", carry=[".gpu/whl"], timeout_s=480)
source "$(dirname "$0")/common.sh"
python3 benchmarks/gpu_check.py --device cuda --out "$OUT/gpu_check_cuda.json" 2>&1 | tee -a "$OUT/log.txt"
