"""Build .fm64/, the one-call payload of the faces64 evaluation for an upload limit of 64 MiB.

The faces64 model (52 MiB in fp16) does not fit beside the repository, the diffusers wheel and the data; this
packs it smaller: the weights xz-compressed (46 MiB) with the SHA-256 of the originals, diffusers without its
pipelines (2 MiB; the evaluation needs only its models and schedulers), and the evaluation's inputs (z's
prior and the FRLL crops, written by ``evaluate_face_model.py --stage prepare``).  Then on the GPU machine
``bash .fm64/run_gpu.sh`` (a copy of scripts/gpu/faces64_evaluate.sh) runs the network stage.

    python scripts/gpu/pack_faces64.py --z-codes faces64_z_codes.npz   # codes: evaluate_face_model.py --save-z-codes
"""
from __future__ import annotations

import argparse
import hashlib
import lzma
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = ("diffusers/pipelines/", "diffusers/modular_pipelines/", "diffusers/commands/")


def pack_diffusers(out: Path) -> None:
    import diffusers

    package = Path(diffusers.__file__).parent
    info = next(package.parent.glob(f"diffusers-{diffusers.__version__}.dist-info"))
    with zipfile.ZipFile(out / f"diffusers-{diffusers.__version__}-trimmed.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for folder in (package, info):
            for path in sorted(folder.rglob("*")):
                name = path.relative_to(package.parent).as_posix()
                if path.is_file() and "__pycache__" not in name and not name.startswith(SKIP):
                    z.write(path, name)


def pack_model(model: Path, out: Path) -> None:
    target = out / "faces64"
    sums = []
    for path in sorted(p for p in model.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")):
        name = path.relative_to(model).as_posix()
        sums.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n")
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            with open(path, "rb") as src, lzma.open(target / (name + ".xz"), "wb", preset=9) as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
        else:
            shutil.copy(path, target / name)
    (target / "SHA256SUMS").write_text("".join(sums))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT.parent / "shared" / "models" / "faces64")
    parser.add_argument("--z-codes", type=Path, required=True, help="written by evaluate_face_model.py --save-z-codes")
    parser.add_argument("--out", type=Path, default=ROOT / ".fm64")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    pack_diffusers(args.out)
    pack_model(args.model, args.out)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate_face_model.py"), "--model", str(args.model),
                    "--stage", "prepare", "--inputs", str(args.out / "inputs_faces64.npz"), "--z-codes",
                    str(args.z_codes)], check=True)
    shutil.copy(ROOT / "scripts" / "gpu" / "faces64_evaluate.sh", args.out / "run_gpu.sh")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
