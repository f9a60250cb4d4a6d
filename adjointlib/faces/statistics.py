"""Statistics for a morph-attack table: MMPMR intervals, paired tests, margins, FMR at low resolution.

Source: Clopper & Pearson (1934), "The use of confidence or fiducial limits illustrated in the
case of the binomial", Biometrika 26(4); McNemar (1947), "Note on the sampling error of the
difference between correlated proportions or percentages", Psychometrika 12(2), in its exact
(conditional binomial) form; ISO/IEC 19795-1 terms (FMR, impostor comparison). Computations use
:mod:`scipy.stats` (``binomtest``) rather than hand-written formulas.

Every score here is a *similarity* (higher = more alike; distances enter negated) and a
comparison is a match iff score > δ (strict, as in :mod:`.protocol`).
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from scipy import stats

from .evaluate import BonaFideResult, embed_images
from .protocol import _scores, match_rate
from .registry import FaceRecognizer

__all__ = [
    "mmpmr_interval",
    "mcnemar_exact",
    "holm_adjust",
    "margin_summary",
    "fmr_at_resolution",
]


def _count(x, name: str) -> int:
    """Validate a non-negative integer count. Source: project convention. Shapes: scalar -> int."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if x < 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return int(x)


def mmpmr_interval(accepted: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) confidence interval for an MMPMR (or any rate) of accepted/n.

    Source: Clopper & Pearson (1934); ``scipy.stats.binomtest(accepted, n).proportion_ci(
    confidence_level, method="exact")``.
    Convention: the central interval from beta quantiles, low = B(α/2; k, n − k + 1) and
    high = B(1 − α/2; k + 1, n − k), with α = 1 − confidence, low = 0 when k = 0 and high = 1
    when k = n; conservative (coverage >= confidence). It always contains k / n.
    Shapes: scalars -> (low, high) floats in [0, 1].
    Raises: TypeError if ``accepted`` or ``n`` is not an integer; ValueError if n < 1,
    accepted ∉ [0, n] or confidence ∉ (0, 1).
    """
    accepted, n = _count(accepted, "accepted"), _count(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if accepted > n:
        raise ValueError(f"accepted must be <= n, got accepted={accepted}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ci = stats.binomtest(accepted, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _outcomes(x: np.ndarray, name: str) -> np.ndarray:
    """Validate a 1-D boolean outcome array. Source: project convention. Shapes: (n,) -> (n,)."""
    x = np.asarray(x)
    if x.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean array (True = accepted), got dtype {x.dtype}")
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    return x


def mcnemar_exact(accepted_a: np.ndarray, accepted_b: np.ndarray) -> dict:
    """Exact McNemar test: do two rows (attacks or systems) accept different fractions of the same pairs?

    Source: McNemar (1947), exact conditional form: given the d = b01 + b10 discordant pairs,
    b01 ~ Binomial(d, 1/2) under H0 (equal acceptance rates);
    ``scipy.stats.binomtest(b01, d, 0.5, alternative="two-sided")``.
    Convention: outcome i of both arrays refers to the same morph pair; b01 = #{a rejected,
    b accepted}, b10 = #{a accepted, b rejected}; two-sided p = min(1, 2 · P(X <= min(b01, b10)))
    (scipy's rule, identical for p = 1/2); p = 1 when there are no discordant pairs. Symmetric:
    swapping a and b swaps b01 and b10 and leaves p unchanged.
    Shapes: accepted_a (n,), accepted_b (n,) bool -> dict with b01, b10, discordant,
    accepted_a, accepted_b, n (ints) and p_value (float).
    Raises: TypeError if an argument is not boolean; ValueError if one is not non-empty 1-D or
    the two shapes differ (the message names the argument).
    """
    a, b = _outcomes(accepted_a, "accepted_a"), _outcomes(accepted_b, "accepted_b")
    if a.shape != b.shape:
        raise ValueError(f"accepted_b must have the shape of accepted_a {a.shape}, got {b.shape}")
    b01, b10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    d = b01 + b10
    p = 1.0 if d == 0 else float(stats.binomtest(b01, d, 0.5, alternative="two-sided").pvalue)
    return {"b01": b01, "b10": b10, "discordant": d, "accepted_a": int(a.sum()),
            "accepted_b": int(b.sum()), "n": int(a.size), "p_value": min(p, 1.0)}


def holm_adjust(p_values) -> list[float]:
    """Holm's step-down adjusted p-values of a family of tests, in the order given.

    Source: Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6(2).
    Convention: with the m p-values sorted ascending p_(1) <= ... <= p_(m),
    p̃_(k) = max_{j <= k} min(1, (m − j + 1) p_(j)); rejecting where p̃ < α controls the family-wise error at α.
    (scipy offers only the Benjamini–Hochberg false-discovery adjustment.)
    Shapes: (m,) -> list of m floats in [0, 1].
    Raises:
        ValueError: ``p_values`` is not 1-D, or holds a value outside [0, 1] or NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError(f"p_values must be a 1-D array of probabilities, got {p_values!r}")
    adjusted = np.empty_like(p)
    adjusted[np.argsort(p, kind="stable")] = np.maximum.accumulate(
        np.minimum(1.0, (len(p) - np.arange(len(p))) * np.sort(p, kind="stable")))
    return adjusted.tolist()


def margin_summary(contributor_scores: np.ndarray, threshold: float, band: float = 0.01) -> dict:
    """Distribution of the MMPMR decision margins min_n S_m^n − δ of a set of morphs.

    Source: paper eq. 5.2 (paper-notes §8.5): morph m is accepted iff min_n S_m^n > δ, so its
    margin is r_m = min_n S_m^n − δ (accepted iff r_m > 0).
    Convention: quartiles by ``numpy.quantile`` (linear interpolation); ``n_near`` counts
    |r_m| <= ``band``, the decisions that a small change of score or threshold could flip.
    ``band`` is in the system's score units (cosine for MobileFaceNet, negated Euclidean
    distance for dlib), so n_near is not comparable across systems.
    Shapes: contributor_scores (M, N_m) -> dict with n, accepted, n_near (ints) and median,
    q1, q3, min, max, band (floats).
    Raises: ValueError if contributor_scores is not a non-empty finite 2-D array, or
    threshold / band is not finite (band must be >= 0).
    """
    scores = _scores(contributor_scores, "contributor_scores", ndim=2)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if not (np.isfinite(band) and band >= 0):
        raise ValueError(f"band must be finite and >= 0, got {band}")
    r = scores.min(axis=1) - float(threshold)
    q1, median, q3 = np.quantile(r, [0.25, 0.5, 0.75])
    return {"n": int(r.size), "accepted": int(np.sum(r > 0)), "median": float(median),
            "q1": float(q1), "q3": float(q3), "min": float(r.min()), "max": float(r.max()),
            "band": float(band), "n_near": int(np.sum(np.abs(r) <= band))}


def fmr_at_resolution(system: FaceRecognizer, probes_small: np.ndarray, references: BonaFideResult,
                      ids: np.ndarray, confidence: float = 0.95, batch_size: int = 16) -> dict:
    """False-match rate of S px neutral probes against other people's full-resolution photos, at δ.

    Source: ISO/IEC 19795-1 (FMR = false matches / impostor comparisons); the impostor analogue
    of ``tar_ref_<size>`` in :func:`~.evaluate.evaluate_frll_baselines`; interval by
    :func:`mmpmr_interval` (Clopper & Pearson 1934).
    Convention: probe i (``probes_small[i]``, a neutral canonical crop of person ``ids[i]`` at
    the morph resolution S) is compared with the neutral *and* smiling reference photo of every
    row j with ids[j] != ids[i] (``references.neutral[j]``, ``references.smiling[j]``, usually
    at :data:`~.evaluate.EVAL_SIZE`), each ordered (probe, reference) comparison counted once;
    with 102 distinct people that is 102 × 2 × 101 = 20,604 comparisons (small neutral vs
    large neutral of j and small neutral of j vs large neutral of i are both counted; no
    smiling-vs-smiling comparisons, unlike the 20,604 of :func:`~.evaluate.frll_bona_fide`).
    Scores are ``system.similarity_matrix`` (the rule that set δ); false match iff score >
    ``references.threshold`` (strict). The result also carries the reference FMR for comparison.
    The interval treats the comparisons as independent trials; they are not (each person is in
    4 × 101 of them), so it is narrower than an interval resampled by person would be.
    Shapes: probes_small (N, S, S, 3) uint8, references with (N, D) embeddings, ids (N,) ->
    dict with system, probe_size, n_probes, n_impostor, false_matches (ints), fmr, fmr_low,
    fmr_high, threshold, fmr_target, fmr_reference, confidence (floats).
    Raises: ValueError if probes_small is not (N, S, S, 3) uint8, ids is not (N,), the
    reference embeddings do not have N rows, or no impostor comparison exists.
    """
    probes = np.asarray(probes_small)
    if probes.ndim != 4 or probes.shape[3] != 3 or probes.shape[1] != probes.shape[2] or len(probes) == 0:
        raise ValueError(f"probes_small must be (N, S, S, 3) canonical crops, got shape {probes.shape}")
    if probes.dtype != np.uint8:
        raise ValueError(f"probes_small must be uint8, got dtype {probes.dtype}")
    ids = np.asarray(ids)
    if ids.shape != (len(probes),):
        raise ValueError(f"ids must be ({len(probes)},) like probes_small, got shape {ids.shape}")
    for name in ("neutral", "smiling"):
        rows = getattr(references, name)
        if rows.ndim != 2 or rows.shape[0] != len(probes):
            raise ValueError(f"references.{name} must have {len(probes)} rows like probes_small, "
                             f"got shape {tuple(rows.shape)}")
    emb = embed_images(system, probes, batch_size)
    refs = torch.cat([references.neutral, references.smiling]).to(emb)
    scores = system.similarity_matrix(emb, refs).cpu().numpy()                # (N, 2N)
    other = ids[:, None] != np.concatenate([ids, ids])[None, :]
    impostor = scores[other]
    if impostor.size == 0:
        raise ValueError("ids holds a single identity: there is no impostor comparison")
    false_matches = int(np.sum(impostor > references.threshold))
    low, high = mmpmr_interval(false_matches, int(impostor.size), confidence)
    return {"system": references.system, "probe_size": int(probes.shape[1]), "n_probes": int(len(probes)),
            "n_impostor": int(impostor.size), "false_matches": false_matches,
            "fmr": match_rate(impostor, references.threshold), "fmr_low": low, "fmr_high": high,
            "threshold": float(references.threshold), "fmr_target": float(references.fmr_target),
            "fmr_reference": float(references.fmr), "confidence": float(confidence)}
