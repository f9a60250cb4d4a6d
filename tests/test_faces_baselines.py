"""Classic morph baselines: pixel blend arithmetic, Delaunay triangulation, landmark morph."""
import numpy as np
import pytest

from adjointlib.faces.align import apply_affine
from adjointlib.faces.baselines import delaunay_triangles, landmark_morph, pixel_blend
from adjointlib.faces.crops import CANONICAL_TEMPLATE, canonical_crop
from adjointlib.faces.paths import frll_dir

try:
    frll_dir()
    _FRLL = None
except FileNotFoundError as err:
    _FRLL = str(err)
needs_frll = pytest.mark.skipif(_FRLL is not None, reason=f"FRLL absent: {_FRLL}")


def _textured_face(seed=0, size=300):
    """A smooth random RGB image, its 5 'landmarks' and a 40-point 'template' around them."""
    import cv2

    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)), (0, 0), 4.0)
    image = np.clip((image - image.mean()) * 8 + 128, 0, 255).astype(np.uint8)
    to_image = np.array([[1.1, -0.1, 100.0], [0.1, 1.1, 90.0]])
    landmarks = apply_affine(to_image, CANONICAL_TEMPLATE * 100)
    points = apply_affine(to_image, rng.uniform(-0.2, 1.2, (40, 2)) * 100)
    return image, points, landmarks


def test_pixel_blend_is_the_rounded_weighted_mean():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = np.full((2, 4, 4, 3), 200, np.uint8)
    assert (pixel_blend(a, b) == 100).all()
    assert (pixel_blend(a, b, alpha=0.25) == 50).all()
    np.testing.assert_array_equal(pixel_blend(a, b, alpha=0.0), a)
    with pytest.raises(ValueError):
        pixel_blend(a, b[:1])
    with pytest.raises(ValueError):
        pixel_blend(a, b, alpha=1.5)


def test_delaunay_of_a_square_with_its_centre():
    points = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]], dtype=float)
    tris = delaunay_triangles(points)
    assert len(tris) == 4 and all(4 in t for t in tris)
    area = sum(abs(np.linalg.det(np.c_[points[t], np.ones(3)])) / 2 for t in tris)
    assert area == pytest.approx(1.0)
    with pytest.raises(ValueError):
        delaunay_triangles(points[:2])


def test_landmark_morph_of_a_face_with_itself_is_its_canonical_crop():
    image, points, landmarks = _textured_face()
    morph = landmark_morph(image, points, landmarks, image, points, landmarks, size=64)
    crop = canonical_crop(image, landmarks, 64)
    assert morph.shape == (64, 64, 3)
    assert np.abs(morph.astype(int) - crop).max() <= 2  # remap vs warpAffine rounding only


def test_landmark_morph_endpoints_are_the_warped_contributors():
    a, pa, la = _textured_face(0)
    b, pb, lb = _textured_face(1)
    pb = pb + np.random.default_rng(2).normal(scale=3.0, size=pb.shape)  # different shape
    at_a = landmark_morph(a, pa, la, b, pb, lb, size=64, alpha=0.0)
    assert np.abs(at_a.astype(int) - canonical_crop(a, la, 64)).max() <= 2
    mid = landmark_morph(a, pa, la, b, pb, lb, size=64)
    assert 0 < np.abs(mid.astype(int) - at_a).mean()
    with pytest.raises(ValueError, match="same points"):
        landmark_morph(a, pa, la, b, pb[:-1], lb)


@needs_frll
def test_frll_baseline_morphs_shapes_and_cache(tmp_path):
    from adjointlib.faces.baselines import frll_baseline_morphs

    pairs = [{"id_a": "001", "id_b": "002"}, {"id_a": "003", "id_b": "005"}]
    morphs = frll_baseline_morphs("landmark_morph", pairs, size=64, cache=tmp_path)
    assert morphs.shape == (2, 64, 64, 3) and morphs.dtype == np.uint8
    assert len(list(tmp_path.glob("frll_landmark_morph_*_256.npz"))) == 1
    np.testing.assert_array_equal(frll_baseline_morphs("landmark_morph", pairs, 64, cache=tmp_path), morphs)
    with pytest.raises(ValueError, match="method"):
        frll_baseline_morphs("gan", pairs)
