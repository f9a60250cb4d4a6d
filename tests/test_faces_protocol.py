"""Threshold, TAR/FMR and MMPMR arithmetic on hand-made score matrices (no data needed)."""
import numpy as np
import pytest

from adjointlib.faces.pairs import load_morph_pairs, save_morph_pairs, select_morph_pairs
from adjointlib.faces.protocol import match_rate, mmpmr, split_genuine_impostor, threshold_at_fmr


def test_threshold_is_the_k_plus_first_largest_impostor_score():
    impostor = np.linspace(0.1, 1.0, 10)  # 0.1, 0.2, ..., 1.0
    assert threshold_at_fmr(impostor, 0.1) == pytest.approx(0.9)  # k = 1: only 1.0 > 0.9
    assert threshold_at_fmr(impostor, 0.25) == pytest.approx(0.8)  # k = floor(2.5) = 2
    assert threshold_at_fmr(impostor, 0.05) == pytest.approx(1.0)  # k = 0: nothing above
    assert match_rate(impostor, threshold_at_fmr(impostor, 0.1)) == pytest.approx(0.1)


def test_threshold_never_exceeds_the_target_fmr_even_with_ties():
    impostor = np.array([0.5] * 10 + [0.2] * 90)
    delta = threshold_at_fmr(impostor, 0.05)  # k = 5 falls inside the tie at 0.5
    assert delta == 0.5 and match_rate(impostor, delta) == 0.0
    rng = np.random.default_rng(0)
    for n in (999, 1000, 20604):
        scores = rng.normal(size=n)
        delta = threshold_at_fmr(scores, 1e-3)
        assert match_rate(scores, delta) <= 1e-3
        assert (scores > delta).sum() == int(np.floor(1e-3 * n))


def test_threshold_rejects_bad_input():
    with pytest.raises(ValueError):
        threshold_at_fmr(np.array([]), 1e-3)
    with pytest.raises(ValueError):
        threshold_at_fmr(np.array([0.1, np.nan]), 1e-3)
    with pytest.raises(ValueError):
        threshold_at_fmr(np.ones(4), 1.5)
    with pytest.raises(ValueError):
        threshold_at_fmr(np.ones((2, 2)), 1e-3)


def test_split_genuine_impostor_counts_each_unordered_pair_once():
    labels = np.array(["a", "b", "c", "a", "b", "c"])  # 3 people, 2 photos each
    scores = np.arange(36, dtype=float).reshape(6, 6)
    scores = scores + scores.T
    genuine, impostor = split_genuine_impostor(scores, labels)
    assert sorted(genuine) == sorted([scores[0, 3], scores[1, 4], scores[2, 5]])
    assert len(impostor) == 15 - 3
    # FRLL sizes: 102 people x 2 photos -> 102 genuine, C(204, 2) - 102 impostor comparisons
    ids = np.repeat(np.arange(102), 2)
    g, i = split_genuine_impostor(np.zeros((204, 204)), ids)
    assert (len(g), len(i)) == (102, 20604)
    with pytest.raises(ValueError):
        split_genuine_impostor(np.zeros((3, 4)), labels[:3])


def test_mmpmr_counts_a_morph_only_if_it_matches_every_contributor():
    scores = np.array([
        [0.9, 0.8],  # matches both
        [0.9, 0.3],  # only a
        [0.2, 0.9],  # only b
        [0.6, 0.6],  # both, barely
        [0.5, 0.7],  # equal to the threshold is not a match (strict >)
    ])
    assert mmpmr(scores, 0.5) == pytest.approx(2 / 5)
    assert mmpmr(scores, 0.1) == 1.0
    assert mmpmr(scores, 0.95) == 0.0
    # three contributors: the minimum decides
    assert mmpmr(np.array([[0.9, 0.9, 0.4], [0.9, 0.9, 0.9]]), 0.5) == 0.5
    with pytest.raises(ValueError):
        mmpmr(np.array([0.9, 0.8]), 0.5)


def test_pair_selection_takes_the_most_similar_same_gender_pairs(tmp_path):
    ids = np.array(["001", "002", "003", "004", "005"])
    genders = np.array(["f", "f", "f", "m", "m"])
    sim = np.array([
        [0, 5, 1, 9, 9],
        [5, 0, 3, 9, 9],
        [1, 3, 0, 9, 9],
        [9, 9, 9, 0, 2],
        [9, 9, 9, 2, 0],
    ], dtype=float)
    pairs = select_morph_pairs(sim, ids, genders, per_gender=2, selector="toy")
    assert [(p["gender"], p["id_a"], p["id_b"]) for p in pairs] == [
        ("f", "001", "002"), ("f", "002", "003"), ("m", "004", "005")]  # m has only one pair
    assert [p["pair"] for p in pairs] == [0, 1, 2]
    path = save_morph_pairs(pairs, tmp_path / "pairs.csv")
    assert load_morph_pairs(path) == pairs
    with pytest.raises(ValueError):
        select_morph_pairs(sim + np.triu(np.ones((5, 5))), ids, genders)
    with pytest.raises(FileNotFoundError, match="build_morph_pairs"):
        load_morph_pairs(tmp_path / "missing.csv")


def test_committed_pair_list_is_well_formed():
    pairs = load_morph_pairs()
    assert [p["pair"] for p in pairs] == list(range(len(pairs)))
    assert len({(p["id_a"], p["id_b"]) for p in pairs}) == len(pairs)
    assert all(p["id_a"] < p["id_b"] for p in pairs)
    for gender in ("female", "male"):
        rows = [p for p in pairs if p["gender"] == gender]
        assert len(rows) == 250
        sims = [p["similarity"] for p in rows]
        assert sims == sorted(sims, reverse=True)
