"""A tiny keyed ``.npz`` cache so notebooks and experiments start fast.

Source: project convention (aligned arrays live in :func:`adjointlib.faces.paths.cache_dir`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_path

__all__ = ["cached_arrays"]


def cached_arrays(path: Path, key: dict, build: Callable[[], dict]) -> dict:
    """Load arrays from ``path`` if it was written with the same ``key``, else build and save.

    Source: project convention. Convention: ``key`` is a JSON-serialisable description of
    everything the arrays depend on (geometry, size, source); a changed key rebuilds the file;
    arrays are stored uncompressed with ``np.savez`` and written atomically.
    Shapes: build() -> {name: array}; returns the same dict of arrays.
    """
    key_text = json.dumps(key, sort_keys=True)
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if "_key" in data and str(data["_key"]) == key_text:
                return {k: data[k] for k in data.files if k != "_key"}
    arrays = build()
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez would append .npz to another name
        np.savez(tmp, _key=np.array(key_text), **arrays)
    return arrays
