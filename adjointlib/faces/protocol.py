"""Verification arithmetic: thresholds at a fixed false-match rate, TAR, and MMPMR.

Source: ``../shared/reference/paper-notes.md`` §8.5 (paper eq. 5.2, Scherhag et al. 2017,
"Biometric systems under morphing attacks: assessment of morphing techniques and vulnerability
reporting"); ISO/IEC 19795-1 terms (FMR, FNMR, TAR = 1 − FNMR).

Every score here is a *similarity* (higher = more alike; distances enter negated) and a
comparison is a match iff score > δ (strict, as in eq. 5.2).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "threshold_at_fmr",
    "match_rate",
    "split_genuine_impostor",
    "mmpmr",
]


def _scores(x: np.ndarray, name: str, ndim: int = 1) -> np.ndarray:
    """Validate a score array as finite float64. Source: project convention. Shapes: any -> same."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be non-empty and finite")
    return x


def threshold_at_fmr(impostor: np.ndarray, fmr: float = 1e-3) -> float:
    """Decision threshold δ at a target false-match rate, from impostor similarity scores.

    Source: paper-notes §8.5 ("δ is the FR system's threshold for a 0.1 % false-match rate");
    the empirical ISO/IEC 19795-1 estimate.
    Convention: with the n impostor scores sorted in decreasing order s_(1) >= ... >= s_(n) and
    k = floor(fmr · n), δ = s_(k+1); then #{s > δ} <= k, i.e. the empirical FMR is <= fmr
    (= k / n when there are no ties at δ).
    Shapes: impostor (n,) -> float.
    Raises:
        ValueError: ``impostor`` is not a non-empty finite 1-D array, or ``fmr`` is outside [0, 1).
    """
    impostor = _scores(impostor, "impostor")
    if not 0.0 <= fmr < 1.0:
        raise ValueError(f"fmr must be in [0, 1), got {fmr}")
    k = int(np.floor(fmr * impostor.size + 1e-9))
    return float(np.sort(impostor)[::-1][k])


def match_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of comparisons accepted as matches, #{s > δ} / n.

    Source: ISO/IEC 19795-1. Convention: on genuine scores this is the TAR (= 1 − FNMR), on
    impostor scores the FMR.
    Shapes: scores (n,) -> float.
    """
    return float(np.mean(_scores(scores, "scores") > threshold))


def split_genuine_impostor(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All genuine and impostor scores of a symmetric all-vs-all comparison matrix.

    Source: FRLL README, "Naming" (genuine = same person, impostor = different people).
    Convention: each unordered pair of distinct images counted once (upper triangle, i < j);
    genuine iff labels[i] == labels[j].
    Shapes: scores (N, N), labels (N,) -> genuine (G,), impostor (I,), G + I = N(N−1)/2.
    Raises:
        ValueError: ``scores`` is not a non-empty finite square (N, N) array, or ``labels`` is not (N,).
    """
    scores = _scores(scores, "scores", ndim=2)
    labels = np.asarray(labels)
    if scores.shape[0] != scores.shape[1] or labels.shape != (scores.shape[0],):
        raise ValueError(f"need a square (N, N) score matrix and (N,) labels, got {scores.shape}, {labels.shape}")
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    return scores[i, j][same], scores[i, j][~same]


def mmpmr(contributor_scores: np.ndarray, threshold: float) -> float:
    """Mated Morph Presentation Match Rate, paper eq. 5.2.

    Source: paper-notes §8.5, eq. (5.2); Scherhag et al. (2017).
    Convention: M(δ) = (1/M) Σ_m 1{ min_n S_m^n > δ }, where S_m^n is the similarity of morph m
    to (another image of) its n-th contributing subject; a morph counts only if it matches
    every contributor.
    Shapes: contributor_scores (M, N_m) -> float in [0, 1].
    """
    contributor_scores = _scores(contributor_scores, "contributor_scores", ndim=2)
    return float(np.mean(contributor_scores.min(axis=1) > threshold))
