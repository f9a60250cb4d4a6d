"""The FRLL morph pair list, built like SYN-MAD 2022 and shipped with the package.

Source: ``../shared/reference/paper-notes.md`` §8.4 (SYN-MAD 2022: the 250 most similar
same-gender pairs per gender under a held-out FR system; the paper used ElasticFace and kept
489 pairs).
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

__all__ = ["MORPH_PAIRS_FIELDS", "default_pairs_path", "select_morph_pairs", "save_morph_pairs",
           "load_morph_pairs"]

#: Columns of ``adjointlib/faces/data/frll_morph_pairs.csv``.
MORPH_PAIRS_FIELDS = ("pair", "gender", "rank_in_gender", "id_a", "id_b", "similarity", "selector")


def default_pairs_path() -> Path:
    """The pair list every experiment uses: ``frll_morph_pairs.csv``, package data of ``adjointlib.faces``.

    Source: project convention. Convention: committed as ``adjointlib/faces/data/frll_morph_pairs.csv``
    (built by ``scripts/build_morph_pairs.py``) and installed with the package; located with
    :mod:`importlib.resources`, so it is found in a checkout and in an installed copy alike.
    Shapes: none (returns a path).
    """
    return Path(resources.files("adjointlib.faces") / "data" / "frll_morph_pairs.csv")


def select_morph_pairs(similarity: np.ndarray, ids: np.ndarray, genders: np.ndarray,
                       per_gender: int = 250, selector: str = "") -> list[dict]:
    """The ``per_gender`` most similar same-gender pairs of each gender.

    Source: paper-notes §8.4 (SYN-MAD 2022 selection on FRLL).
    Convention: ``similarity[i, j]`` compares person i and j (higher = more alike; symmetric);
    each unordered pair once with id_a < id_b; per gender, pairs sorted by decreasing
    similarity (ties by ids) and the first ``per_gender`` kept (fewer if the gender has fewer
    pairs); genders in sorted order; ``pair`` numbers the rows from 0.
    Shapes: similarity (P, P), ids (P,), genders (P,) -> list of dicts (MORPH_PAIRS_FIELDS).
    Raises:
        ValueError: ``similarity`` is not (P, P) or not symmetric, or ``genders`` is not (P,), for P = len(ids);
            ``per_gender`` < 1.
    """
    similarity, ids, genders = np.asarray(similarity, dtype=np.float64), np.asarray(ids), np.asarray(genders)
    n = len(ids)
    if similarity.shape != (n, n) or genders.shape != (n,):
        raise ValueError(f"need similarity (P, P), ids (P,), genders (P,), got {similarity.shape}, "
                         f"{ids.shape}, {genders.shape}")
    if not np.allclose(similarity, similarity.T):
        raise ValueError("similarity must be symmetric")
    if per_gender < 1:
        raise ValueError(f"per_gender must be >= 1, got {per_gender}")
    rows = []
    for gender in sorted(set(genders.tolist())):
        members = sorted(np.flatnonzero(genders == gender), key=lambda i: ids[i])
        cand = [(-similarity[i, j], str(ids[i]), str(ids[j]), similarity[i, j])
                for a, i in enumerate(members) for j in members[a + 1:]]
        for rank, (_, id_a, id_b, s) in enumerate(sorted(cand)[:per_gender]):
            rows.append({"pair": len(rows), "gender": str(gender), "rank_in_gender": rank,
                         "id_a": id_a, "id_b": id_b, "similarity": float(s), "selector": selector})
    return rows


def save_morph_pairs(pairs: list[dict], path: str | Path | None = None) -> Path:
    """Write a pair list as CSV (similarities with 6 decimals), atomically.

    Source: project convention. Convention: columns MORPH_PAIRS_FIELDS; default
    :func:`default_pairs_path`. Shapes: none (returns the path).
    """
    path = Path(path) if path is not None else default_pairs_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MORPH_PAIRS_FIELDS, lineterminator="\n")
        writer.writeheader()
        for p in pairs:
            writer.writerow({**p, "similarity": f"{p['similarity']:.6f}"})
    return path


def load_morph_pairs(path: str | Path | None = None) -> list[dict]:
    """Read a pair list (default: the packaged list, :func:`default_pairs_path`).

    Source: project convention. Convention: ids as 3-digit strings, ``pair`` and
    ``rank_in_gender`` as int, ``similarity`` as float.
    Shapes: -> list of dicts (MORPH_PAIRS_FIELDS).
    Raises:
        FileNotFoundError: no pair list at ``path`` (or at the packaged default).
    """
    path = Path(path) if path is not None else default_pairs_path()
    if not path.is_file():
        raise FileNotFoundError(f"Morph pair list not found: {path} (build it with scripts/build_morph_pairs.py)")
    with path.open(newline="") as f:
        return [{**r, "pair": int(r["pair"]), "rank_in_gender": int(r["rank_in_gender"]),
                 "similarity": float(r["similarity"])} for r in csv.DictReader(f)]
