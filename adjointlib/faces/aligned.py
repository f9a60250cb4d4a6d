"""FRLL faces in the canonical crop, cached as uint8 arrays.

Source: ``../shared/data/frll/README.md`` (images, YuNet landmarks) and :mod:`.crops`
(canonical geometry). FRLL: DeBruine & Jones (2017), doi:10.6084/m9.figshare.5047666.v5,
CC BY 4.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import cached_arrays
from .crops import CANONICAL_TEMPLATE, CANONICAL_WARP_SIZE, canonical_crop
from .frll import load_frll_image, load_frll_info, load_frll_landmarks_5pt
from .paths import cache_dir, frll_dir

__all__ = ["FRLLAligned", "load_frll_aligned"]


@dataclass(frozen=True)
class FRLLAligned:
    """Canonical crops of all FRLL photos, one row per person (sorted by id).

    Source: FRLL README (102 people, neutral ``_03`` and smiling ``_08`` photos).
    Convention: uint8 RGB; ``neutral[i]`` and ``smiling[i]`` show person ``ids[i]``.
    Shapes: ids (102,), genders (102,), neutral and smiling (102, S, S, 3) uint8.
    """

    ids: np.ndarray
    genders: np.ndarray
    neutral: np.ndarray
    smiling: np.ndarray


def load_frll_aligned(size: int = 64, root: str | Path | None = None,
                      cache: str | Path | None = None) -> FRLLAligned:
    """All 204 FRLL photos aligned to the canonical crop at ``size`` (built once, then cached).

    Source: :func:`~.crops.canonical_crop` on the YuNet rows of ``landmarks_5pt.csv``.
    Convention: cached in ``cache_dir(cache)/frll_canonical_<size>.npz``, keyed by the crop
    geometry and the data folder; the first call takes a few seconds.
    Shapes: -> FRLLAligned with (102, size, size, 3) uint8 arrays.
    Raises:
        ValueError: ``size`` < 8.
        FileNotFoundError: the FRLL folder (``root``, ``$ADJOINTLIB_FRLL`` or the shared default) or a file of it
            is missing.
    """
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    folder = frll_dir(root)
    key = {"what": "frll_canonical", "size": size, "warp": CANONICAL_WARP_SIZE,
           "template": np.round(CANONICAL_TEMPLATE, 8).tolist(), "source": str(folder.resolve())}

    def build() -> dict:
        info = load_frll_info(folder)
        landmarks = load_frll_landmarks_5pt(folder, "yunet")
        out = {"ids": np.array([p["id"] for p in info]), "genders": np.array([p["gender"] for p in info])}
        for expression in ("neutral", "smiling"):
            out[expression] = np.stack([
                canonical_crop(load_frll_image(p["id"], expression, folder),
                               landmarks[(p["id"], expression)], size)
                for p in info
            ])
        return out

    arrays = cached_arrays(cache_dir(cache) / f"frll_canonical_{size}.npz", key, build)
    return FRLLAligned(**arrays)
