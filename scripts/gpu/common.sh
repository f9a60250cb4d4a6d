# Sourced by the GPU run scripts: install the carried wheels, point the data paths at .gpu/, log to $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
export ADJOINTLIB_SHARED=$PWD/.gpu/shared ADJOINTLIB_CACHE=/tmp/adjointlib-cache
mkdir -p "$ADJOINTLIB_CACHE" "${OUT:=/tmp/out}"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/log.txt") || true
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/log.txt"
