"""Alignment: similarity transforms, the canonical crop, the differentiable FR crops, exact
reference crops (verification PNGs)."""
import numpy as np
import pytest
import torch

from adjointlib.faces.align import apply_affine, invert_affine, similarity_transform
from adjointlib.faces.crops import (
    ARCFACE_TEMPLATE_112,
    CANONICAL_TEMPLATE,
    DLIB_YUNET_TEMPLATE_150,
    canonical_crop,
    canonical_transform,
    crop_from_canonical,
    images_to_tensor,
    resize_crops,
    tensor_to_images,
    unit_affine_to_theta,
)
from adjointlib.faces.paths import frll_dir, model_file


def _shared_reason():
    try:
        frll_dir()
        model_file("yunet", "face_detection_yunet_2026may.onnx")
    except FileNotFoundError as err:
        return str(err)
    return None


needs_shared = pytest.mark.skipif(_shared_reason() is not None, reason=f"shared data absent: {_shared_reason()}")


def _similarity(scale, angle, tx, ty):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _blobs(points, size, sigma=1.5):
    """A float64 (size, size) image with Gaussian blobs at pixel coordinates ``points``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) for x, y in points)


def _centroids(image, guesses, radius=5):
    out = []
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float64)
    for gx, gy in guesses:
        w = image * (((xx - gx) ** 2 + (yy - gy) ** 2) < radius**2)
        out.append([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    return np.array(out)


def test_similarity_transform_recovers_a_known_similarity_and_inverts():
    rng = np.random.default_rng(0)
    truth = _similarity(0.41, -0.05, -59.3, -70.1)
    src = rng.uniform(200, 400, size=(5, 2))
    est = similarity_transform(src, apply_affine(truth, src))
    np.testing.assert_allclose(est, truth, atol=1e-10)
    np.testing.assert_allclose(apply_affine(invert_affine(est), apply_affine(est, src)), src, atol=1e-9)
    # with noise it is the least-squares fit: residual orthogonal to the model
    noisy = apply_affine(truth, src) + rng.normal(scale=0.5, size=(5, 2))
    est = similarity_transform(src, noisy)
    assert np.abs(apply_affine(est, src) - noisy).max() < 2.0


def test_similarity_transform_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        similarity_transform(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        similarity_transform(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        invert_affine(np.eye(3))


def test_canonical_template_is_the_arcface_template_in_a_sub_square():
    # same shape as the ArcFace template (pure scale + shift), inside the unit square
    m = similarity_transform((ARCFACE_TEMPLATE_112 + 0.5) / 112, CANONICAL_TEMPLATE)
    np.testing.assert_allclose(m[:, :2], np.eye(2) / 0.8, atol=1e-12)
    assert CANONICAL_TEMPLATE.min() > 0 and CANONICAL_TEMPLATE.max() < 1


def test_canonical_crop_round_trip_puts_landmarks_on_the_template():
    """Synthetic face: five blobs at 'landmark' positions of a rotated, scaled, shifted face."""
    size_in, size = 400, 128
    to_image = _similarity(2.2, 0.2, 60.0, 30.0)  # canonical unit*100 -> image pixels
    landmarks = apply_affine(to_image, CANONICAL_TEMPLATE * 100)
    image = np.clip(255 * _blobs(landmarks, size_in, sigma=4.0), 0, 255).astype(np.uint8)
    image = np.repeat(image[..., None], 3, axis=2)
    crop = canonical_crop(image, landmarks, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    expected = CANONICAL_TEMPLATE * size - 0.5
    found = _centroids(crop[..., 0].astype(np.float64), expected)
    np.testing.assert_allclose(found, expected, atol=0.15)
    # and back: the inverse map sends the template to the landmarks
    back = apply_affine(invert_affine(canonical_transform(landmarks, size)), expected)
    np.testing.assert_allclose(back, landmarks, atol=1e-9)


@pytest.mark.parametrize("template,size", [(ARCFACE_TEMPLATE_112, 112), (DLIB_YUNET_TEMPLATE_150, 150)])
def test_differentiable_fr_crop_maps_the_canonical_template_onto_the_fr_template(template, size):
    s = 160
    canon = _blobs(CANONICAL_TEMPLATE * s - 0.5, s, sigma=2.0)
    x = torch.from_numpy(canon)[None, None].repeat(1, 3, 1, 1)
    crop = crop_from_canonical(x, template, size)[0, 0].numpy()
    # blobs land where the inverse of the fitted FR-unit -> canonical-unit map sends the
    # canonical template (exactly the FR template for ArcFace, a least-squares fit for dlib)
    fr_to_canon = similarity_transform((template + 0.5) / size, CANONICAL_TEMPLATE)
    expected = apply_affine(invert_affine(fr_to_canon), CANONICAL_TEMPLATE) * size - 0.5
    assert np.abs(expected - template).max() < 4.0  # the two templates differ in shape by < 4 px
    np.testing.assert_allclose(_centroids(crop, expected), expected, atol=0.1)
    if size == 112:
        np.testing.assert_allclose(expected, ARCFACE_TEMPLATE_112, atol=1e-9)


def test_differentiable_fr_crop_matches_cv2_warp_and_has_gradients():
    import cv2

    rng = np.random.default_rng(1)
    canon = cv2.GaussianBlur(rng.uniform(0, 1, (96, 96, 3)), (0, 0), 3.0)
    x = torch.from_numpy(canon).permute(2, 0, 1)[None]
    crop = crop_from_canonical(x, ARCFACE_TEMPLATE_112, 112, fill=0.0)[0].permute(1, 2, 0).numpy()
    pixel_map = similarity_transform(CANONICAL_TEMPLATE * 96 - 0.5, ARCFACE_TEMPLATE_112)
    ref = cv2.warpAffine(canon.astype(np.float32), pixel_map, (112, 112), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    assert np.abs(crop - ref).max() < 2e-2  # cv2 quantises positions to 1/32 px
    assert np.abs(crop - ref).mean() < 1e-3

    small = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: crop_from_canonical(t, ARCFACE_TEMPLATE_112, 9), (small,))


def test_theta_of_the_identity_map_is_the_identity():
    theta = unit_affine_to_theta(np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_allclose(theta.numpy(), [[1, 0, 0], [0, 1, 0]])


def test_fr_crop_is_black_outside_the_canonical_square():
    white = torch.ones(1, 3, 64, 64, dtype=torch.float64)
    crop = crop_from_canonical(white, ARCFACE_TEMPLATE_112, 112)
    assert crop[..., 0, 0].eq(-1).all() and crop[..., 60, 56].eq(1).all()  # corner outside, centre inside
    grey = crop_from_canonical(white, ARCFACE_TEMPLATE_112, 112, fill=0.0)
    assert grey[..., 0, 0].eq(0).all()


def test_image_tensor_conversions_round_trip_and_validate():
    images = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = images_to_tensor(images, torch.float64)
    assert x.shape == (2, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(tensor_to_images(x), images)
    assert resize_crops(images, 4).shape == (2, 4, 4, 3)
    with pytest.raises(ValueError, match="uint8"):
        images_to_tensor(images.astype(np.float32))
    with pytest.raises(ValueError):
        crop_from_canonical(torch.zeros(1, 3, 8, 9), ARCFACE_TEMPLATE_112, 112)
    with pytest.raises(ValueError, match="uint8"):
        canonical_crop(np.zeros((10, 10, 3)), CANONICAL_TEMPLATE, 16)


@needs_shared
def test_yunet_reproduces_the_stored_landmarks():
    from adjointlib.faces.align import YuNetDetector
    from adjointlib.faces.frll import load_frll_image, load_frll_landmarks_5pt

    stored = load_frll_landmarks_5pt()
    detector = YuNetDetector()
    for key in (("001", "neutral"), ("002", "smiling")):
        found, score = detector.detect(load_frll_image(*key))
        np.testing.assert_allclose(found, stored[key], atol=2e-3)
        assert 0.9 < score < 1.0
    assert detector.detect(np.zeros((120, 120, 3), np.uint8)) is None


@needs_shared
def test_reference_crops_reproduce_the_verification_pngs():
    from PIL import Image

    from adjointlib.faces.crops import arcface_crop_cv2, dlib_chip_exact
    from adjointlib.faces.frll import load_frll_image, load_frll_landmarks_5pt

    image = load_frll_image("001", "neutral")
    yunet = load_frll_landmarks_5pt()[("001", "neutral")]
    readme_m = [[0.41195174, -0.02264350, -59.25290], [0.02264350, 0.41195174, -70.14226]]
    np.testing.assert_allclose(similarity_transform(yunet, ARCFACE_TEMPLATE_112), readme_m, atol=1e-5)
    png = np.asarray(Image.open(model_file("mobilefacenet", "verify_001_03_112.png")).convert("RGB"))
    assert np.abs(arcface_crop_cv2(image, yunet).astype(int) - png).max() <= 1
    chip = np.asarray(Image.open(model_file("dlib_resnet", "verify_001_03_chip150.png")).convert("RGB"))
    sp5 = load_frll_landmarks_5pt(source="dlib_sp5")[("001", "neutral")]
    np.testing.assert_array_equal(dlib_chip_exact(image, sp5), chip)  # bit-exact, as the README says
