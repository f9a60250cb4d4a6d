"""Classic morphing baselines: pixel blend and landmark (Delaunay) morph in the canonical frame.

Source: the landmark morph is what Webmorph does (DeBruine, webmorph.org; webmorphR
``avg``/``trans``): average the two 189-point templates, warp each face piecewise-affinely
onto the average with a Delaunay triangulation, then blend. Paper-notes §8.7 lists Webmorph
as the landmark-based baseline of Table 1.
"""

from __future__ import annotations

import numpy as np

import hashlib
import json
from pathlib import Path

from .align import apply_affine, invert_affine, similarity_transform
from .aligned import load_frll_aligned
from .cache import cached_arrays
from .crops import CANONICAL_TEMPLATE, CANONICAL_WARP_SIZE, _check_image, resize_crops
from .frll import load_frll_image, load_frll_landmarks_5pt, load_frll_tem
from .paths import cache_dir, frll_dir

__all__ = ["BASELINES", "pixel_blend", "delaunay_triangles", "landmark_morph", "frll_baseline_morphs"]

#: Names of the classic baselines, for :func:`frll_baseline_morphs`.
BASELINES = ("pixel_blend", "landmark_morph")

# Corners and edge midpoints of a frame far around the canonical square (unit coordinates),
# appended to the templates so the triangulation covers the whole crop.
_FRAME = np.array([[-2.0, -2.0], [0.5, -2.0], [3.0, -2.0], [3.0, 0.5], [3.0, 3.0], [0.5, 3.0],
                   [-2.0, 3.0], [-2.0, 0.5]])


def pixel_blend(a: np.ndarray, b: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Pixel-wise blend of aligned faces, (1 − α)·a + α·b.

    Source: the simplest morph (e.g. Scherhag et al. 2019, "Face recognition systems under
    morphing attacks: a survey", "blending").
    Convention: inputs are canonical crops (so the 5 landmarks already coincide); rounding to
    uint8.
    Shapes: a, b (..., H, W, 3) uint8 -> same shape uint8.
    Raises:
        ValueError: ``a`` and ``b`` are not uint8 (..., H, W, 3) arrays of the same shape, or ``alpha`` is outside
            [0, 1].
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8 or a.shape[-1] != 3:
        raise ValueError(f"a and b must be uint8 (..., H, W, 3) of the same shape, got {a.shape}, {b.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return np.round((1.0 - alpha) * a + alpha * b.astype(np.float64)).astype(np.uint8)


def delaunay_triangles(points: np.ndarray) -> np.ndarray:
    """Delaunay triangulation of 2-D points, as index triples.

    Source: OpenCV ``cv2.Subdiv2D`` (Bowyer-Watson); duplicate points are merged by OpenCV
    and every vertex is mapped back to the first input point at that position.
    Convention: triangles touching OpenCV's virtual outer vertices are dropped.
    Shapes: points (K, 2) -> (T, 3) int64.
    Raises:
        ValueError: ``points`` is not (K, 2) with K >= 3.
    """
    import cv2

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise ValueError(f"points must be (K, 2) with K >= 3, got {points.shape}")
    lo, hi = points.min(0) - 1.0, points.max(0) + 1.0
    subdiv = cv2.Subdiv2D((float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])))
    subdiv.insert([(float(x), float(y)) for x, y in points])
    corners = subdiv.getTriangleList().reshape(-1, 3, 2)
    dist = np.linalg.norm(corners[:, :, None, :] - points[None, None], axis=-1)
    index, nearest = dist.argmin(-1), dist.min(-1)
    tol = 1e-3 * float(np.max(hi - lo))
    return index[(nearest < tol).all(1)].astype(np.int64)


def _rasterise_triangles(points: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """Index of the triangle covering each pixel of a size x size crop.

    Source: ``cv2.fillConvexPoly`` (8 sub-pixel bits, boundary pixels included).
    Convention: ``points`` in unit coordinates, pixel centres at (i + 0.5)/size; a pixel on a
    shared edge takes the last triangle drawn (piecewise-affine maps agree on edges).
    Shapes: points (K, 2), triangles (T, 3) -> (size, size) int32.
    """
    import cv2

    shift = 8
    labels = np.full((size, size), -1, dtype=np.int32)
    vertices = np.round((points * size - 0.5) * (1 << shift)).astype(np.int32)
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(labels, vertices[tri], int(t), lineType=cv2.LINE_8, shift=shift)
    if (labels < 0).any():
        raise RuntimeError(f"{int((labels < 0).sum())} pixels are not covered by the triangulation")
    return labels


def _triangle_affines(target: np.ndarray, source: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Per-triangle affine maps sending each target triangle onto its source triangle.

    Source: piecewise-affine warping (e.g. Goshtasby 1986); each map solves
    [x_s, y_s] = A [x_t, y_t, 1] on the triangle's three vertices.
    Convention: degenerate triangles (collinear vertices) get the pseudo-inverse (least-norm) map.
    Shapes: target (K, 2), source (K, 2), triangles (T, 3) -> (T, 2, 3).
    """
    homog = np.concatenate([target[triangles], np.ones(triangles.shape + (1,))], axis=2)
    return np.swapaxes(np.linalg.pinv(homog) @ source[triangles], 1, 2)


def landmark_morph(image_a: np.ndarray, points_a: np.ndarray, landmarks_a: np.ndarray,
                   image_b: np.ndarray, points_b: np.ndarray, landmarks_b: np.ndarray,
                   size: int = 128, alpha: float = 0.5) -> np.ndarray:
    """Landmark morph of two faces in the canonical crop (Webmorph-style average of two).

    Source: Webmorph/webmorphR morphing (template average → Delaunay piecewise-affine warp →
    colour blend); Scherhag et al. (2019) survey, "landmark-based morphing".
    Convention: each face's template points (e.g. FRLL's 189) are mapped into canonical unit
    coordinates by its 5-point similarity (:func:`~.crops.canonical_transform` geometry); the
    target shape is P = (1 − α)·P_a + α·P_b plus a fixed outer frame; every output pixel is
    located in the triangulation of P and sampled bilinearly (cv2.remap) from the *original*
    images at the corresponding point of each face (one interpolation); colours blended
    (1 − α)·A + α·B; rendered at max(size, 256), then area-resized.
    Shapes: images (H, W, 3) uint8, points (K, 2), landmarks (5, 2) -> (size, size, 3) uint8.
    Raises:
        ValueError: ``image_a`` or ``image_b`` is not (H, W, 3) uint8, ``points_a`` and ``points_b`` differ in
            shape, ``alpha`` is outside [0, 1], or a landmark array is not (5, 2) and finite.
        RuntimeError: the triangulation leaves pixels of the crop uncovered.
    """
    import cv2

    image_a, image_b = _check_image(image_a), _check_image(image_b)
    if np.shape(points_a) != np.shape(points_b):
        raise ValueError(f"templates must have the same points, got {np.shape(points_a)}, {np.shape(points_b)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    to_unit = [similarity_transform(lm, CANONICAL_TEMPLATE) for lm in (landmarks_a, landmarks_b)]
    shapes = [np.vstack([apply_affine(m, p), _FRAME]) for m, p in zip(to_unit, (points_a, points_b))]
    target = (1.0 - alpha) * shapes[0] + alpha * shapes[1]
    triangles = delaunay_triangles(target)

    work = max(int(size), CANONICAL_WARP_SIZE)
    labels = _rasterise_triangles(target, triangles, work).ravel()
    centres = (np.arange(work) + 0.5) / work
    grid = np.stack([*np.meshgrid(centres, centres), np.ones((work, work))], -1)
    grid = grid.reshape(-1, 3)
    out = np.zeros((work * work, 3))
    for image, shape, m, w in zip((image_a, image_b), shapes, to_unit, (1.0 - alpha, alpha)):
        to_image = invert_affine(m)
        maps = to_image[:, :2] @ _triangle_affines(target, shape, triangles)
        maps[:, :, 2] += to_image[:, 2]
        src = np.einsum("pij,pj->pi", maps[labels], grid).astype(np.float32).reshape(work, work, 2)
        warped = cv2.remap(image, src[..., 0], src[..., 1], interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
        out += w * warped.reshape(-1, 3)
    morph = np.round(out).clip(0, 255).astype(np.uint8).reshape(work, work, 3)
    if work != size:
        morph = cv2.resize(morph, (size, size), interpolation=cv2.INTER_AREA)
    return morph


def frll_baseline_morphs(method: str, pairs: list[dict], size: int = 128, root: str | Path | None = None,
                         cache: str | Path | None = None) -> np.ndarray:
    """Baseline morphs of the neutral FRLL photos of every pair, as canonical crops.

    Source: :func:`pixel_blend` and :func:`landmark_morph` (α = 0.5) on FRLL (DeBruine & Jones
    2017, doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0); pairs from :mod:`.pairs`.
    Convention: morphs are made once at 256x256 (cached in ``cache_dir(cache)``, keyed by
    method, pairs and geometry), then area-resized to ``size``.
    Shapes: M pairs -> (M, size, size, 3) uint8.
    Raises:
        ValueError: ``method`` is not one of ``BASELINES``.
        FileNotFoundError: the FRLL folder (``root``) or a file of it is missing.
    """
    if method not in BASELINES:
        raise ValueError(f"method must be one of {BASELINES}, got {method!r}")
    folder, work = frll_dir(root), CANONICAL_WARP_SIZE
    pair_ids = [(p["id_a"], p["id_b"]) for p in pairs]
    digest = hashlib.sha1(json.dumps(pair_ids).encode()).hexdigest()[:12]
    key = {"what": method, "pairs": digest, "size": work, "source": str(folder.resolve()),
           "template": np.round(CANONICAL_TEMPLATE, 8).tolist()}

    def build() -> dict:
        if method == "pixel_blend":
            aligned = load_frll_aligned(work, folder, cache)
            row = {face_id: i for i, face_id in enumerate(aligned.ids)}
            a = aligned.neutral[[row[i] for i, _ in pair_ids]]
            b = aligned.neutral[[row[j] for _, j in pair_ids]]
            return {"morphs": pixel_blend(a, b)}
        landmarks = load_frll_landmarks_5pt(folder, "yunet")
        faces = {i: (load_frll_image(i, "neutral", folder), load_frll_tem(i, folder).points,
                     landmarks[(i, "neutral")]) for i in sorted({x for p in pair_ids for x in p})}
        morphs = [landmark_morph(*faces[i], *faces[j], size=work) for i, j in pair_ids]
        return {"morphs": np.stack(morphs) if morphs else np.zeros((0, work, work, 3), np.uint8)}

    path = cache_dir(cache) / f"frll_{method}_{digest}_{work}.npz"
    return resize_crops(cached_arrays(path, key, build)["morphs"], size)
