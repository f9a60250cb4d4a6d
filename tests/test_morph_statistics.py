"""Morph-table statistics: Clopper–Pearson, exact McNemar, margins, FMR at low resolution (no data)."""
import numpy as np
import pytest
import torch

from adjointlib.faces.evaluate import BonaFideResult
from adjointlib.faces.statistics import fmr_at_resolution, holm_adjust, margin_summary, mcnemar_exact, mmpmr_interval


def test_clopper_pearson_matches_known_values():
    low, high = mmpmr_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.3085, abs=1e-4)  # 1 - 0.025**(1/10)
    assert high == pytest.approx(1 - 0.025 ** 0.1, rel=1e-9)
    assert mmpmr_interval(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    low, high = mmpmr_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.025 ** 0.1, rel=1e-9)
    # a one-sided 97.5 % bound for k = 0 is the "rule of three"-like 3.69 / n for large n
    assert mmpmr_interval(0, 20604)[1] == pytest.approx(-np.log(0.025) / 20604, rel=1e-3)
    # wider at higher confidence
    assert mmpmr_interval(5, 10, 0.99)[0] < 0.1871 and mmpmr_interval(5, 10, 0.99)[1] > 0.8129


@pytest.mark.parametrize("n", [1, 7, 100, 20604])
def test_clopper_pearson_contains_the_estimate_and_is_bounded(n):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        low, high = mmpmr_interval(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0


def test_clopper_pearson_rejects_bad_input():
    with pytest.raises(ValueError, match="accepted"):
        mmpmr_interval(11, 10)
    with pytest.raises(ValueError, match="n must"):
        mmpmr_interval(0, 0)
    with pytest.raises(ValueError, match="accepted"):
        mmpmr_interval(-1, 10)
    with pytest.raises(ValueError, match="confidence"):
        mmpmr_interval(1, 10, 1.0)
    with pytest.raises(TypeError, match="accepted"):
        mmpmr_interval(0.5, 10)


def _paired(b00, b01, b10, b11):
    a = np.array([False] * b00 + [False] * b01 + [True] * b10 + [True] * b11)
    b = np.array([False] * b00 + [True] * b01 + [False] * b10 + [True] * b11)
    return a, b


def test_mcnemar_exact_matches_a_hand_computation():
    a, b = _paired(10, 1, 6, 20)
    out = mcnemar_exact(a, b)
    assert (out["b01"], out["b10"], out["discordant"], out["n"]) == (1, 6, 7, 37)
    assert (out["accepted_a"], out["accepted_b"]) == (26, 21)
    # P(X <= 1 | X ~ Bin(7, 1/2)) = (1 + 7) / 128, doubled
    assert out["p_value"] == pytest.approx(2 * 8 / 128, rel=1e-12) == pytest.approx(0.125)
    # 0 vs 5 discordant: 2 / 32
    assert mcnemar_exact(*_paired(3, 0, 5, 3))["p_value"] == pytest.approx(0.0625)
    # balanced discordance and no discordance are both p = 1
    assert mcnemar_exact(*_paired(2, 3, 3, 2))["p_value"] == pytest.approx(1.0)
    out = mcnemar_exact(*_paired(4, 0, 0, 5))
    assert out["discordant"] == 0 and out["p_value"] == 1.0


def test_mcnemar_exact_is_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.4, rng.random(200) < 0.5
    ab, ba = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert (ab["b01"], ab["b10"]) == (ba["b10"], ba["b01"])
    assert ab["p_value"] == pytest.approx(ba["p_value"], rel=1e-12)
    assert 0.0 < ab["p_value"] <= 1.0


def test_mcnemar_exact_names_the_bad_argument():
    a = np.ones(5, dtype=bool)
    with pytest.raises(ValueError, match="accepted_b"):
        mcnemar_exact(a, np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="accepted_a"):
        mcnemar_exact(np.ones((5, 1), dtype=bool), a)
    with pytest.raises(TypeError, match="accepted_b"):
        mcnemar_exact(a, np.ones(5))
    with pytest.raises(ValueError, match="accepted_a"):
        mcnemar_exact(np.array([], dtype=bool), np.array([], dtype=bool))


def test_margin_summary_on_a_hand_made_array():
    scores = np.array([
        [0.90, 0.70],  # min 0.70 -> margin +0.20
        [0.505, 0.80],  # +0.005 (near)
        [0.60, 0.495],  # -0.005 (near)
        [0.30, 0.90],  # -0.20
        [0.55, 0.62],  # +0.05
    ])
    out = margin_summary(scores, 0.5)
    margins = np.array([0.20, 0.005, -0.005, -0.20, 0.05])
    assert out["n"] == 5 and out["accepted"] == 3 and out["n_near"] == 2
    assert out["median"] == pytest.approx(0.005)
    assert (out["q1"], out["q3"]) == pytest.approx((-0.005, 0.05))
    assert (out["min"], out["max"]) == pytest.approx((-0.20, 0.20))
    assert out["median"] == pytest.approx(np.median(margins))
    assert margin_summary(scores, 0.5, band=0.1)["n_near"] == 3
    with pytest.raises(ValueError, match="contributor_scores"):
        margin_summary(np.ones(4), 0.5)
    with pytest.raises(ValueError, match="threshold"):
        margin_summary(scores, float("nan"))


class _MeanColourSystem:
    """A fake FR system: the embedding of a crop is its mean RGB colour; cosine similarity."""

    name, metric = "mean_colour", "cosine"

    def __call__(self, x):
        return x.mean(dim=(2, 3))

    def similarity(self, a, b):
        return torch.nn.functional.cosine_similarity(a, b, dim=-1)

    def similarity_matrix(self, a, b):
        return torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T


def _constant_images(colours, size):
    return np.broadcast_to(np.asarray(colours, dtype=np.uint8)[:, None, None, :],
                           (len(colours), size, size, 3)).copy()


def _references(neutral, smiling, threshold):
    embed = lambda c: torch.tensor(np.asarray(c, dtype=np.float64) / 127.5 - 1.0)  # noqa: E731
    return BonaFideResult("mean_colour", np.zeros(3), np.zeros(6), 1e-3, threshold, 1.0, 0.0,
                          embed(neutral), embed(smiling))


def test_fmr_at_resolution_counts_other_peoples_photos_only():
    # 3 people; colours chosen so that in [-1, 1] the embeddings are simple directions
    red, green, blue, white = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    dark_red = (255, 0, 128)  # -> (1, -1, ~0): cosine with red (1, -1, -1) is sqrt(2/3) ≈ 0.816
    ids = np.array(["p1", "p2", "p3"])
    probes = _constant_images([red, green, blue], 8)
    # references: person 1 neutral red (the probe itself, never compared), person 2 smiling is
    # red (an impostor of probe 1 with cos 1), person 3 smiling dark red (cos 0.816 with probe 1)
    refs = _references([red, green, blue], [white, red, dark_red], threshold=0.9)
    out = fmr_at_resolution(_MeanColourSystem(), probes, refs, ids)
    assert out["n_impostor"] == 3 * 2 * 2 and out["n_probes"] == 3 and out["probe_size"] == 8
    # only (probe 1, smiling of person 2) exceeds 0.9; (probe 1, neutral of person 1) = 1 is genuine
    assert out["false_matches"] == 1 and out["fmr"] == pytest.approx(1 / 12)
    assert (out["fmr_low"], out["fmr_high"]) == pytest.approx(mmpmr_interval(1, 12))
    assert out["fmr_low"] <= out["fmr"] <= out["fmr_high"]
    assert out["threshold"] == 0.9 and out["fmr_reference"] == 0.0
    # lowering δ below 0.816 adds (probe 1, smiling of person 3); nothing else is above -1/3
    for threshold, expected in ((0.8, 2), (0.0, 2), (-0.5, 11)):
        refs = _references([red, green, blue], [white, red, dark_red], threshold)
        assert fmr_at_resolution(_MeanColourSystem(), probes, refs, ids)["false_matches"] == expected


def test_fmr_at_resolution_names_the_bad_argument():
    ids = np.array(["p1", "p2"])
    refs = _references([(255, 0, 0), (0, 255, 0)], [(255, 0, 0), (0, 255, 0)], 0.5)
    system = _MeanColourSystem()
    with pytest.raises(ValueError, match="probes_small"):
        fmr_at_resolution(system, np.zeros((2, 8, 8), np.uint8), refs, ids)
    with pytest.raises(ValueError, match="probes_small"):
        fmr_at_resolution(system, np.zeros((2, 8, 8, 3), np.float32), refs, ids)
    with pytest.raises(ValueError, match="ids"):
        fmr_at_resolution(system, np.zeros((2, 8, 8, 3), np.uint8), refs, ids[:1])
    with pytest.raises(ValueError, match="references.neutral"):
        fmr_at_resolution(system, np.zeros((3, 8, 8, 3), np.uint8), refs, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="impostor"):
        fmr_at_resolution(system, np.zeros((2, 8, 8, 3), np.uint8), refs, np.array(["a", "a"]))


def test_holm_adjust_matches_a_hand_computation_and_keeps_the_order():
    # sorted 0.01, 0.02, 0.04, 0.5 -> 4*0.01, max(.04, 3*.02), max(.06, 2*.04), max(.08, 1*.5)
    adjusted = holm_adjust([0.5, 0.01, 0.04, 0.02])
    assert np.allclose(adjusted, [0.5, 0.04, 0.08, 0.06])
    assert holm_adjust([0.9, 0.8]) == [1.0, 1.0]  # capped at 1
    with pytest.raises(ValueError, match="p_values"):
        holm_adjust([0.1, 1.5])
