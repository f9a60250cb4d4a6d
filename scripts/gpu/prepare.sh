#!/usr/bin/env bash
# Build .gpu/ (git-ignored) for a GPU run through the device tool's 64 MiB upload, from ../shared and PyPI.
#   .gpu/whl      diffusers + importlib_metadata wheels (the GPU image has torch, not diffusers)
#   .gpu/shared   the part of ../shared a morph or evaluation run reads: FRLL, MobileFaceNet, dlib ResNet, YuNet
#   .gpu/faces64  the faces64 model (54 MB): it does not fit beside the rest, so it travels in its own call
#                 and stays on the warm machine for the next call (see scripts/gpu/README.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${ADJOINTLIB_SHARED:-../shared}
chmod -R u+w .gpu 2>/dev/null || true; rm -rf .gpu && mkdir -p .gpu/whl .gpu/shared/data .gpu/shared/models
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
    "diffusers==$(python3 -c 'import diffusers; print(diffusers.__version__)')" importlib_metadata
cp -r "$SHARED/data/frll" .gpu/shared/data/
for m in mobilefacenet dlib_resnet yunet; do cp -r "$SHARED/models/$m" .gpu/shared/models/; done
cp -r "$SHARED/models/faces64" .gpu/faces64 && chmod -R u+w .gpu && rm .gpu/faces64/preview.png
du -sh .gpu/* .gpu/shared/*/*
