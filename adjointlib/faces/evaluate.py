"""Scoring FRLL with an FR system: bona fide score distributions, thresholds, morph scores.

Source: ``../shared/reference/paper-notes.md`` §8.4-8.5 (SYN-MAD 2022 on FRLL, MMPMR at
FMR = 0.1 %) with the choices the paper leaves open fixed here:

* δ comes from **all cross-identity comparisons of the 204 FRLL photos** (neutral-neutral,
  neutral-smiling and smiling-smiling: 20,604 impostor scores); the 102 neutral-smiling pairs
  of the same person are the genuine scores.
* A morph made from the *neutral* photos of a and b is compared with the *smiling* photos of
  a and b (never with the images it was made from).
* Every image, bona fide or morph, goes through the same pipeline: canonical crop at
  :data:`EVAL_SIZE` (or the morph's own size) → the system's differentiable crop → embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .aligned import FRLLAligned, load_frll_aligned
from .baselines import BASELINES, frll_baseline_morphs
from .crops import images_to_tensor
from .protocol import match_rate, mmpmr, split_genuine_impostor, threshold_at_fmr
from .registry import FaceRecognizer, get_fr_system

__all__ = ["EVAL_SIZE", "embed_images", "BonaFideResult", "frll_bona_fide", "morph_contributor_scores",
           "morph_mmpmr", "evaluate_frll_baselines"]

#: Canonical-crop size at which FRLL bona fide photos are scored.
EVAL_SIZE = 128


def embed_images(system: FaceRecognizer, images: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """Embeddings of canonical crops given as uint8 images (no gradient).

    Source: :class:`~.registry.FaceRecognizer`. Convention: images → [-1, 1] → system; float32
    network, float64 result.
    Shapes: images (N, S, S, 3) uint8 -> (N, D) float64.
    """
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(system(images_to_tensor(images[start:start + batch_size])).double())
    return torch.cat(out)


@dataclass(frozen=True)
class BonaFideResult:
    """Bona fide verification of one FR system on FRLL.

    Source: paper-notes §8.5 (threshold at FMR), FRLL README (genuine/impostor pairs).
    Convention: similarities (higher = more alike); match iff score > threshold.
    Shapes: genuine (102,), impostor (20604,), embeddings (102, D) each.
    """

    system: str
    genuine: np.ndarray
    impostor: np.ndarray
    fmr_target: float
    threshold: float
    tar: float
    fmr: float
    neutral: torch.Tensor
    smiling: torch.Tensor


def frll_bona_fide(system: FaceRecognizer, aligned: FRLLAligned, fmr: float = 1e-3) -> BonaFideResult:
    """Genuine and impostor scores of all 204 FRLL photos, δ at ``fmr``, and the TAR there.

    Source: paper-notes §8.5 (δ at FMR = 0.1 %); :func:`~.protocol.threshold_at_fmr`.
    Convention: all-vs-all over neutral + smiling photos; genuine = same id (102 pairs),
    impostor = different ids (C(204, 2) − 102 = 20,604 pairs); TAR = #{genuine > δ} / 102.
    Shapes: aligned with (102, S, S, 3) arrays -> BonaFideResult.
    """
    neutral, smiling = embed_images(system, aligned.neutral), embed_images(system, aligned.smiling)
    emb = torch.cat([neutral, smiling])
    scores = system.similarity_matrix(emb, emb).numpy()
    genuine, impostor = split_genuine_impostor(scores, np.concatenate([aligned.ids, aligned.ids]))
    threshold = threshold_at_fmr(impostor, fmr)
    return BonaFideResult(system.name, genuine, impostor, fmr, threshold, match_rate(genuine, threshold),
                          match_rate(impostor, threshold), neutral, smiling)


def morph_contributor_scores(system: FaceRecognizer, morph_embeddings: torch.Tensor,
                             bona_fide: BonaFideResult, aligned: FRLLAligned,
                             pairs: list[dict]) -> np.ndarray:
    """Similarity of each morph to the smiling photos of its two contributors.

    Source: paper-notes §8.5 (S_m^n of eq. 5.2), with the probe choice fixed in this module.
    Convention: morphs were made from the neutral photos of ``pairs[m]["id_a"]`` and
    ``["id_b"]``; column n = similarity to the smiling photo of contributor n.
    Shapes: morph_embeddings (M, D) -> (M, 2).
    Raises:
        ValueError: ``pairs`` and ``morph_embeddings`` differ in length.
        KeyError: a contributor id of ``pairs`` is not among ``aligned.ids``.
    """
    if len(pairs) != len(morph_embeddings):
        raise ValueError(f"{len(pairs)} pairs but {len(morph_embeddings)} morph embeddings")
    row = {face_id: i for i, face_id in enumerate(aligned.ids)}
    cols = []
    for key in ("id_a", "id_b"):
        probes = bona_fide.smiling[[row[p[key]] for p in pairs]]
        cols.append(system.similarity(morph_embeddings.to(probes), probes).numpy())
    return np.stack(cols, axis=1)


def morph_mmpmr(system: FaceRecognizer, morphs: np.ndarray, bona_fide: BonaFideResult,
                aligned: FRLLAligned, pairs: list[dict]) -> tuple[float, np.ndarray]:
    """MMPMR of a set of morphs at the bona fide threshold of ``system``.

    Source: paper eq. 5.2 (paper-notes §8.5) via :func:`~.protocol.mmpmr`.
    Convention: morphs are canonical crops (any size); returns (MMPMR, contributor scores).
    Shapes: morphs (M, S, S, 3) uint8 -> (float, (M, 2)).
    """
    scores = morph_contributor_scores(system, embed_images(system, morphs), bona_fide, aligned, pairs)
    return mmpmr(scores, bona_fide.threshold), scores


def evaluate_frll_baselines(pairs: list[dict], systems: tuple[str, ...] = ("mobilefacenet", "dlib_resnet"),
                            methods: tuple[str, ...] = BASELINES, morph_sizes: tuple[int, ...] = (EVAL_SIZE, 64),
                            fmr: float = 1e-3) -> tuple[list[dict], list[dict]]:
    """The FRLL bona fide table and the baseline MMPMR table, as written to ``results/faces``.

    Source: paper-notes §8.5 (MMPMR at FMR = 0.1 %), with this module's protocol.
    Convention: bona fide photos at :data:`EVAL_SIZE`; ``tar_ref_<s>`` = TAR when the neutral
    (enrolment) photo is the s x s canonical crop, i.e. what resolution alone costs a genuine
    user;
    morphs made at 256, area-resized to each of ``morph_sizes``; probes always at EVAL_SIZE.
    Shapes: M pairs -> (rows per system, rows per method x size x system).
    """
    aligned = load_frll_aligned(EVAL_SIZE)
    bona_rows, morph_rows = [], []
    morphs = {(m, s): frll_baseline_morphs(m, pairs, s) for m in methods for s in morph_sizes}
    for name in systems:
        system = get_fr_system(name)
        bona = frll_bona_fide(system, aligned, fmr)
        row = {"system": name, "metric": system.metric, "eval_size": EVAL_SIZE, "fmr_target": fmr,
               "threshold": bona.threshold, "tar": bona.tar, "fmr": bona.fmr,
               "n_genuine": len(bona.genuine), "n_impostor": len(bona.impostor)}
        for size in morph_sizes:
            if size != EVAL_SIZE:
                small = embed_images(system, load_frll_aligned(size).neutral)
                genuine = system.similarity(small, bona.smiling).numpy()
                row[f"tar_ref_{size}"] = match_rate(genuine, bona.threshold)
        bona_rows.append(row)
        for method in methods:
            for size in morph_sizes:
                value, _ = morph_mmpmr(system, morphs[method, size], bona, aligned, pairs)
                morph_rows.append({"method": method, "morph_size": size, "system": name,
                                   "threshold": bona.threshold, "mmpmr": value,
                                   "accepted": int(round(value * len(pairs))), "n_morphs": len(pairs)})
    return bona_rows, morph_rows
