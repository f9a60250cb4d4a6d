"""UTKFace chips (training faces for the face diffusion model), re-aligned to the canonical crop.

Source: ``../shared/data/utkface/README.md``; Zhang, Song & Qi, "Age Progression/Regression by
Conditional Adversarial Autoencoder", CVPR 2017. Licence: non-commercial research only; do not
show individual UTKFace faces in published material.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .align import YuNetDetector
from .cache import cached_arrays
from .crops import CANONICAL_TEMPLATE, CANONICAL_WARP_SIZE, canonical_crop
from .paths import cache_dir, utkface_zip

__all__ = ["parse_utkface_name", "read_utkface_image", "UTKFaceAligned", "load_utkface_aligned"]


def parse_utkface_name(name: str) -> dict:
    """Labels encoded in a UTKFace file name ``[age]_[gender]_[race]_[datetime].jpg.chip.jpg``.

    Source: UTKFace README, "File names and labels" (five irregular names exist: race missing,
    no dot before ``jpg``, no extension).
    Convention: gender 0 = male, 1 = female; race 0-4 = White, Black, Asian, Indian, Others;
    a missing or unparsable field is -1. Labels are noisy (README: duplicates disagree).
    Shapes: -> {"age": int, "gender": int, "race": int}.
    """
    fields = name.split(".")[0].split("_")
    labels = [int(f) if f.isdigit() else -1 for f in fields[:3]]
    if len(fields) < 4:  # race missing: age_gender_datetime
        labels = labels[:2] + [-1]
    labels += [-1] * (3 - len(labels))
    return {"age": labels[0], "gender": labels[1], "race": labels[2]}


def read_utkface_image(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """Decode one member of the UTKFace zip.

    Source: UTKFace README, "Reading it in Python". Convention: RGB uint8.
    Shapes: -> (128, 128, 3) uint8.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(archive.read(name))) as img:
        return np.asarray(img.convert("RGB"))


@dataclass(frozen=True)
class UTKFaceAligned:
    """UTKFace chips in the canonical crop, with their labels (faces YuNet missed are dropped).

    Source: UTKFace README. Convention: uint8 RGB; labels as in :func:`parse_utkface_name`.
    Shapes: images (N, S, S, 3) uint8; names, ages, genders, races (N,).
    """

    images: np.ndarray
    names: np.ndarray
    ages: np.ndarray
    genders: np.ndarray
    races: np.ndarray


def _utkface_landmarks(path: Path, limit: int | None, cache: Path) -> dict:
    """YuNet landmarks of the first ``limit`` zip members (all if None), cached.

    Source: UTKFace README, "Notes for use" (YuNet at 128x128, threshold 0.6 finds 999/1000).
    Convention: members in zip order; those without a face are left out.
    Shapes: -> {"names": (N,), "landmarks": (N, 5, 2) float64}.
    """
    key = {"what": "utkface_yunet", "limit": limit, "source": str(path.resolve())}

    def build() -> dict:
        detector, names, points = YuNetDetector(), [], []
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist()[:limit]:
                found = detector.detect(read_utkface_image(archive, name))
                if found is not None:
                    names.append(name)
                    points.append(found[0])
        return {"names": np.array(names), "landmarks": np.array(points).reshape(-1, 5, 2)}

    suffix = "all" if limit is None else str(limit)
    return cached_arrays(cache / f"utkface_landmarks_{suffix}.npz", key, build)


def load_utkface_aligned(size: int = 64, zip_path: str | Path | None = None,
                         limit: int | None = None, cache: str | Path | None = None) -> UTKFaceAligned:
    """UTKFace chips re-aligned to the canonical crop at ``size`` (built once, then cached).

    Source: UTKFace README ("re-align the chips with the same detector and template") and
    :func:`~.crops.canonical_crop`.
    Convention: YuNet landmarks on each 128x128 chip → canonical crop (mirrored border for the
    ~4 % of the square a chip does not cover); ``limit`` takes the first members of the zip
    (for quick tests); the full set takes about a minute the first time and
    23,317·64·64·3 bytes ≈ 290 MB at size 64.
    Shapes: -> UTKFaceAligned with images (N, size, size, 3) uint8.
    Raises:
        ValueError: ``size`` < 8.
        FileNotFoundError: the UTKFace zip (``zip_path``, ``$ADJOINTLIB_UTKFACE`` or the shared default) is missing,
            or, while its landmarks are not cached yet, the YuNet model.
    """
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    path, folder = utkface_zip(zip_path), cache_dir(cache)
    marks = _utkface_landmarks(path, limit, folder)
    key = {"what": "utkface_canonical", "size": size, "limit": limit, "warp": CANONICAL_WARP_SIZE,
           "template": np.round(CANONICAL_TEMPLATE, 8).tolist(), "source": str(path.resolve())}

    def build() -> dict:
        with zipfile.ZipFile(path) as archive:
            images = [canonical_crop(read_utkface_image(archive, str(n)), lm, size)
                      for n, lm in zip(marks["names"], marks["landmarks"])]
        labels = [parse_utkface_name(str(n)) for n in marks["names"]]
        return {
            "images": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
            "names": marks["names"],
            "ages": np.array([lab["age"] for lab in labels], dtype=np.int64),
            "genders": np.array([lab["gender"] for lab in labels], dtype=np.int64),
            "races": np.array([lab["race"] for lab in labels], dtype=np.int64),
        }

    suffix = "all" if limit is None else str(limit)
    arrays = cached_arrays(folder / f"utkface_canonical_{size}_{suffix}.npz", key, build)
    return UTKFaceAligned(**arrays)
