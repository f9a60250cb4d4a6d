"""A compact training set for a machine without the UTKFace zip (e.g. a GPU machine with an upload limit):

    python -m adjointlib.facemodel.pack --size 64 --out packs/utkface64.zip      # here, from ../shared
    python -m adjointlib.facemodel.train --config faces64 --pack packs/utkface64.zip --out runs/faces64   # there

A pack is a zip (stored, not deflated) of the canonical crops as JPEG files ``images/<index>.jpg`` plus
``pack.json`` (size, count, JPEG quality, source).  JPEG at quality 90 keeps the 23,306 aligned UTKFace chips
at 64 px in 46 MiB (uint8 arrays: 286 MB; PNG, extrapolated from 500 crops: about 164 MiB) with a mean
absolute error of 2.1 grey levels (both measured on the full set).  The pack holds UTKFace-derived images: non-commercial research use only, like UTKFace itself.
"""
from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path

__all__ = ["write_pack", "read_pack", "PACK_META"]

PACK_META = "pack.json"
LICENCE = "UTKFace-derived canonical face crops: non-commercial research use only (UTKFace licence)"


def write_pack(images: np.ndarray, path, quality: int = 90, source: str = "") -> Path:
    """Write ``images`` (N, S, S, 3) uint8 as a JPEG pack at ``path``, atomically (temporary file, then rename).

    Raises:
        ValueError: ``images`` is not an (N, S, S, 3) uint8 array, or ``quality`` is outside 1..100.
    """
    from PIL import Image

    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, S, S, 3) uint8, got {images.shape} {images.dtype}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"size": int(images.shape[1]), "count": len(images), "quality": quality, "source": source,
            "licence": LICENCE}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(PACK_META, json.dumps(meta, indent=2))
        for index, image in enumerate(tqdm(images, desc=f"packing {len(images)} faces", leave=False)):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
            archive.writestr(f"images/{index:06d}.jpg", buffer.getvalue())
    return path


def read_pack(path) -> np.ndarray:
    """The images of a pack written by ``write_pack``: (N, S, S, 3) uint8, in pack order.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``path`` is not a training pack (no pack.json), holds another number of images than pack.json
            says (a truncated upload), or images of another size than pack.json's.
        zipfile.BadZipFile: ``path`` is not a zip file.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training pack at {path}; write one with python -m adjointlib.facemodel.pack")
    with zipfile.ZipFile(path) as archive:
        if PACK_META not in archive.namelist():
            raise ValueError(f"{path} is not a training pack ({PACK_META} missing)")
        meta = json.loads(archive.read(PACK_META))
        names = sorted(n for n in archive.namelist() if n.startswith("images/"))
        if len(names) != meta["count"]:
            raise ValueError(f"{path}: {len(names)} images but pack.json says {meta['count']} (truncated upload?)")
        images = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB")) for n in names])
    if images.shape[1:] != (meta["size"], meta["size"], 3):
        raise ValueError(f"{path}: images of shape {images.shape[1:]}, pack.json says size {meta['size']}")
    return images


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Pack the aligned UTKFace training crops as JPEGs in one zip.")
    parser.add_argument("--size", type=int, required=True, help="crop size (the model's image_size)")
    parser.add_argument("--out", required=True, help="pack file to write (.zip)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--data", default=None, help="UTKFace zip (default: ../shared/data/utkface/utkface_128.zip)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N UTKFace images")
    args = parser.parse_args(argv)
    from ..faces.utkface import load_utkface_aligned

    images = load_utkface_aligned(args.size, zip_path=args.data, limit=args.limit).images
    path = write_pack(images, args.out, args.quality, source=f"UTKFace aligned to the canonical crop at {args.size} px")
    print(json.dumps({"pack": str(path), "images": len(images), "MiB": round(path.stat().st_size / 2**20, 1)}))


if __name__ == "__main__":
    main()
