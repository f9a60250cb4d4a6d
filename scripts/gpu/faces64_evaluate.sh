#!/bin/bash
# faces64 evaluation, network part, on the GPU machine (payload from scripts/gpu/pack_faces64.py, carried as .fm64):
# run from the repository root as `bash .fm64/run_gpu.sh`.
# Unpacks the trimmed diffusers 0.42.1 and the xz-compressed faces64 weights, checks their SHA-256, then runs
# scripts/evaluate_face_model.py --stage generate into $OUT/facemodel64_gen (generated.json, generated_*.npz, log.txt).
# Back on the CPU machine: --stage score --generated <that folder> --out results/facemodel64 (YuNet, FR, figures).
P=$(dirname "$0")
G=${OUT:-/tmp/out}/facemodel64_gen
mkdir -p "$G"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
python3 - "$P" <<'PY' || exit 3
import lzma, pathlib, shutil, sys, zipfile
p = pathlib.Path(sys.argv[1])
zipfile.ZipFile(p / "diffusers-0.42.1-trimmed.zip").extractall("/tmp/site")
m = pathlib.Path("/tmp/faces64")
shutil.copytree(p / "faces64", m, dirs_exist_ok=True)
for f in list(m.rglob("*.xz")):
    with lzma.open(f) as src, open(f.with_suffix(""), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    f.unlink()
PY
(cd /tmp/faces64 && sha256sum -c --quiet SHA256SUMS) || { echo "faces64 weights damaged"; exit 4; }
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, diffusers.__file__)"
set -o pipefail
timeout -s TERM "${FM64_LIMIT_S:-420}" python3 scripts/evaluate_face_model.py --stage generate --model /tmp/faces64 \
    --model-label ../shared/models/faces64 --inputs "${FM64_INPUTS:-$P/inputs_faces64.npz}" --out "$G" \
    --device cuda "$@" 2>&1 | tee "$G/log.txt"
rc=$?
ls -la "$G"
exit $rc
