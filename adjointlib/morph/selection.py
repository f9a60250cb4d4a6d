"""Which FRLL pairs a morph experiment uses, and in which order.

The committed list (``adjointlib/faces/data/frll_morph_pairs.csv``, SYN-MAD-style: the 250 most similar
same-gender pairs of each gender under the dlib ResNet) is the population.  The headline set is a seeded random
sample of it, stratified by gender; the most similar pairs of each gender are a labelled subset
(``order="similar"``), not the headline: a third of them already match each other unmorphed.
"""
from __future__ import annotations

from collections import Counter
from itertools import chain, zip_longest

import numpy as np

__all__ = ["PAIR_ORDERS", "select_pairs", "identity_reuse"]

#: "random": a seeded random permutation of each gender's pairs; "similar": the list's order
#: (most similar first).
PAIR_ORDERS = ("random", "similar")


def select_pairs(pairs: list[dict], count: int | None = None, *, order: str = "random",
                 seed: int = 0) -> list[dict]:
    """The first ``count // 2`` pairs of each gender in ``order``, interleaved female, male, female, ...

    order "random": each gender's pairs in a random permutation drawn with ``numpy.random.default_rng(seed)``
    (genders in sorted order, one permutation each, drawn from the same generator), i.e. a stratified
    random sample without replacement; "similar": the list's own order (the most similar pairs first).
    Interleaving makes every selection a prefix of the larger ones (for the same order and seed), so a run
    extended from 64 to 500 pairs keeps the pairs it has.  count None: every pair of the list (genders
    interleaved while both last).  Shapes: list of pair dicts (``load_morph_pairs``) ->
    list of pair dicts.
    Raises:
        ValueError: ``order`` is not one of ``PAIR_ORDERS``; ``count`` is odd or below 2, or larger than twice the
            smaller gender's share of ``pairs``.
    """
    if order not in PAIR_ORDERS:
        raise ValueError(f"order must be one of {PAIR_ORDERS}, got {order!r}")
    genders = sorted({p["gender"] for p in pairs})
    by_gender = [[p for p in pairs if p["gender"] == gender] for gender in genders]
    if order == "random":
        rng = np.random.default_rng(seed)
        by_gender = [[group[i] for i in rng.permutation(len(group))] for group in by_gender]
    if count is None:
        return [p for p in chain.from_iterable(zip_longest(*by_gender)) if p is not None]
    if count < 2 or count % 2:
        raise ValueError(f"pairs must be an even number >= 2 (half per gender), got {count}")
    if any(len(group) < count // 2 for group in by_gender):
        raise ValueError(f"count={count}: the list has only {[len(g) for g in by_gender]} pairs per gender")
    return [pair for group in zip(*(g[: count // 2] for g in by_gender)) for pair in group]


def identity_reuse(pairs: list[dict]) -> dict:
    """How often identities recur in a pair set (pairs sharing a person are not independent trials).

    Returns n_pairs, n_identities (distinct people), max_uses (largest number of pairs one person is
    in), uses (histogram {k: number of people in exactly k pairs}) and pairs_sharing (pairs with at
    least one person who is in another pair of the set).  Shapes: list of pair dicts -> dict.
    """
    uses = Counter(chain.from_iterable((p["id_a"], p["id_b"]) for p in pairs))
    return {"n_pairs": len(pairs), "n_identities": len(uses), "max_uses": max(uses.values(), default=0),
            "uses": dict(sorted(Counter(uses.values()).items())),
            "pairs_sharing": sum(uses[p["id_a"]] > 1 or uses[p["id_b"]] > 1 for p in pairs)}
