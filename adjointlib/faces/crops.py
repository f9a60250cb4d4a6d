"""Face crop geometry: the canonical crop and the FR crops derived from it differentiably.

Source: ``../shared/models/mobilefacenet/README.md`` (ArcFace 112x112 template, cv2 recipe and
its ``affine_grid``/``grid_sample`` equivalent) and ``../shared/models/dlib_resnet/README.md``
(dlib's 150x150 chip geometry, the YuNet template in that frame, the exact chip recipe).

Coordinates. "Pixel" coordinates put pixel centres at integers (cv2 convention); "unit"
coordinates of an S x S crop are u = (p + 0.5) / S, so the crop covers [0, 1]^2 whatever S is
and ``F.affine_grid(..., align_corners=False)`` coordinates are n = 2u - 1.

The canonical crop (used by the face diffusion model at 32x32 and 64x64, by the UTKFace
training data, by the morph baselines and, through :func:`crop_from_canonical`, by every FR
system) is the square [0.12, 0.92] x [0.20, 1.00] of the ArcFace 112x112 crop in ArcFace unit
coordinates (side 0.8 crop widths, centre (0.52, 0.60)): it sits inside UTKFace's own chips
(4 % of the canonical area falls outside a UTKFace chip on average) while keeping the eyes,
nose, mouth and chin. The FR crops extend beyond it; the missing border is black (−1 on the
[-1, 1] scale), as the README's zero-padded recipe gives on 0-255 pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .align import apply_affine, similarity_transform

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DLIB_YUNET_TEMPLATE_150",
    "DLIB_SP5_TEMPLATE_150",
    "CANONICAL_BOX",
    "CANONICAL_TEMPLATE",
    "CANONICAL_WARP_SIZE",
    "canonical_transform",
    "canonical_crop",
    "resize_crops",
    "unit_affine_to_theta",
    "crop_from_canonical",
    "arcface_crop_cv2",
    "dlib_chip_exact",
    "images_to_tensor",
    "tensor_to_images",
]

#: insightface ``arcface_dst``: YuNet-order 5 points in the 112x112 crop (pixel coordinates).
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
    [41.5493, 92.3655], [70.7299, 92.2041],
])
#: YuNet-order 5 points in dlib's 150x150 chip frame (dlib_resnet README, "Without dlib").
DLIB_YUNET_TEMPLATE_150 = np.array([
    [45.1003, 45.1628], [101.4534, 43.8841], [74.8234, 77.7860],
    [50.9673, 103.2651], [99.1509, 101.9089],
])
#: dlib ``shape_predictor_5_face_landmarks`` points in the 150-px chip, padding 0.25 (README).
DLIB_SP5_TEMPLATE_150 = 150.0 * (0.25 + np.array([
    [0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])) / 1.5
#: Canonical square (left, top, side) in ArcFace unit coordinates.
CANONICAL_BOX = (0.12, 0.20, 0.80)
#: YuNet-order 5-point template of the canonical crop, in unit coordinates.
CANONICAL_TEMPLATE = ((ARCFACE_TEMPLATE_112 + 0.5) / 112.0 - np.array(CANONICAL_BOX[:2])) / CANONICAL_BOX[2]
#: Canonical crops are warped at this size (bilinear), then area-downsampled if smaller.
CANONICAL_WARP_SIZE = 256


def _check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB uint8 image. Source: project convention. Shapes: (H, W, 3) -> same."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
    return image


def canonical_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Similarity map from image pixels to canonical-crop pixels for a face's YuNet landmarks.

    Source: mobilefacenet README, "Alignment" step 2, with :data:`CANONICAL_TEMPLATE`.
    Convention: least-squares similarity from the 5 landmarks to CANONICAL_TEMPLATE·S − 0.5;
    p_crop = M[:, :2] p_image + M[:, 2] (pixel centres at integers).
    Shapes: landmarks (5, 2), YuNet order -> M (2, 3) float64.
    Raises:
        ValueError: ``size`` < 1, or ``landmarks`` is not (5, 2) and finite.
    """
    if int(size) < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    return similarity_transform(landmarks, CANONICAL_TEMPLATE * size - 0.5)


def canonical_crop(image: np.ndarray, landmarks: np.ndarray, size: int = 64) -> np.ndarray:
    """The canonical aligned face crop of an image.

    Source: mobilefacenet README, "Alignment" step 3 (``cv2.warpAffine``, bilinear).
    Convention: warp at max(size, 256) with bilinear sampling and mirrored borders
    (``BORDER_REFLECT_101``, for the few UTKFace chips that do not cover the square), then
    ``cv2.INTER_AREA`` down to ``size`` (anti-aliased); RGB uint8 in and out.
    Shapes: image (H, W, 3) uint8, landmarks (5, 2) -> (size, size, 3) uint8.
    """
    import cv2

    image = _check_image(image)
    work = max(int(size), CANONICAL_WARP_SIZE)
    matrix = canonical_transform(landmarks, work)
    crop = cv2.warpAffine(image, matrix, (work, work), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop


def resize_crops(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a batch of canonical crops (area interpolation when shrinking, as canonical_crop).

    Source: OpenCV ``cv2.resize`` (``INTER_AREA`` to shrink, ``INTER_LINEAR`` to enlarge).
    Convention: the unit frame is preserved (pixel edges map to pixel edges), so a resized
    canonical crop is the canonical crop at the new size up to resampling.
    Shapes: (N, S, S, 3) uint8 -> (N, size, size, 3) uint8.
    Raises:
        ValueError: ``images`` is not an (N, S, S, 3) uint8 array.
    """
    import cv2

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, S, S, 3) uint8, got {images.shape} {images.dtype}")
    if images.shape[1] == size:
        return images.copy()
    mode = cv2.INTER_AREA if size < images.shape[1] else cv2.INTER_LINEAR
    out = [cv2.resize(im, (size, size), interpolation=mode) for im in images]
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def unit_affine_to_theta(matrix: np.ndarray) -> torch.Tensor:
    """``affine_grid`` theta for an affine map between unit coordinates (output → input).

    Source: mobilefacenet README, "Differentiable equivalent" (written in unit coordinates,
    where A_in and B_out reduce to n = 2u − 1).
    Convention: if u_in = A u_out + t then theta = [A | A·(1, 1) + 2t − 1], for
    ``F.affine_grid(theta, size, align_corners=False)``.
    Shapes: (2, 3) -> (2, 3) float64 tensor.
    Raises:
        ValueError: ``matrix`` is not (2, 3).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    a, t = matrix[:, :2], matrix[:, 2]
    return torch.from_numpy(np.concatenate([a, (a.sum(1) + 2.0 * t - 1.0)[:, None]], axis=1))


def crop_from_canonical(x: torch.Tensor, template: np.ndarray, size: int, fill: float = -1.0) -> torch.Tensor:
    """Differentiably resample canonical crops into an FR system's crop frame.

    Source: mobilefacenet README, "Differentiable equivalent" (``affine_grid``/``grid_sample``,
    bilinear, zero padding of 0-255 pixels, align_corners=False).
    Convention: the FR frame is fixed by its 5-point ``template`` (pixels of a size x size crop);
    the map FR-unit → canonical-unit is the least-squares similarity from
    (template + 0.5)/size to :data:`CANONICAL_TEMPLATE`; outside the canonical square the crop
    takes the value ``fill`` (−1 = black for images in [-1, 1]), computed as
    grid_sample(x − fill) + fill; any canonical resolution and floating dtype.
    Shapes: x (N, C, S, S) -> (N, C, size, size).
    Raises:
        ValueError: ``x`` is not a floating (N, C, S, S) tensor, or ``template`` is not (5, 2) and finite.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2] or not x.is_floating_point():
        raise ValueError(f"x must be a floating (N, C, S, S) tensor, got {tuple(x.shape)} {x.dtype}")
    unit_map = similarity_transform((np.asarray(template) + 0.5) / size, CANONICAL_TEMPLATE)
    theta = unit_affine_to_theta(unit_map).to(x).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def arcface_crop_cv2(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Reference (non-differentiable) ArcFace 112x112 crop straight from the image.

    Source: mobilefacenet README, "Alignment" steps 1-3 (this reproduces
    ``verify_001_03_112.png`` from FRLL 001_03 and its YuNet landmarks).
    Convention: M = similarity(landmarks → ARCFACE_TEMPLATE_112); ``cv2.warpAffine``
    bilinear, constant zero border.
    Shapes: image (H, W, 3) uint8, landmarks (5, 2) -> (112, 112, 3) uint8.
    """
    import cv2

    image = _check_image(image)
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE_112)
    return cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def dlib_chip_exact(image: np.ndarray, sp5_landmarks: np.ndarray) -> np.ndarray:
    """dlib's 150x150 face chip (padding 0.25) from its 5-point shape, bit-exact.

    Source: dlib_resnet README, "Chip geometry" (dlib ``get_face_chip_details(shape, 150,
    0.25)`` + ``extract_image_chip``), valid while the chip scale s <= 1.99.
    Convention: T = similarity(q_i → l_i), s = |(a, b)|, θ = atan2(b, a), c = T(75, 75);
    chip pixel (u, v) samples the image at c + k R(θ) (u − 74.5, v − 74.5), k = (150 s − 1)/149,
    bilinear in float64 (outside pixels are 0), then truncation to uint8.
    Shapes: image (H, W, 3) uint8, sp5_landmarks (5, 2) in dlib order -> (150, 150, 3) uint8.
    Raises:
        ValueError: ``image`` is not (H, W, 3) uint8, ``sp5_landmarks`` is not (5, 2) and finite, or the chip scale
            s exceeds 1.99 (dlib would use its image pyramid: downscale the image first).
    """
    image = _check_image(image)
    t = similarity_transform(DLIB_SP5_TEMPLATE_150, sp5_landmarks)
    s, theta = np.hypot(t[0, 0], t[1, 0]), np.arctan2(t[1, 0], t[0, 0])
    if s > 299.0 / 150.0:
        raise ValueError(f"chip scale {s:.3f} > 1.99: dlib would use its image pyramid; downscale the image first")
    centre = apply_affine(t, np.array([[75.0, 75.0]]))[0]
    k = (150.0 * s - 1.0) / 149.0
    rot = k * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    u, v = np.meshgrid(np.arange(150.0) - 74.5, np.arange(150.0) - 74.5)
    xy = np.stack([u, v], -1) @ rot.T + centre
    padded = np.zeros((image.shape[0] + 2, image.shape[1] + 2, 3))
    padded[1:-1, 1:-1] = image
    x = np.clip(xy[..., 0] + 1.0, 0.0, image.shape[1])
    y = np.clip(xy[..., 1] + 1.0, 0.0, image.shape[0])
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, image.shape[1] + 1), np.minimum(y0 + 1, image.shape[0] + 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    value = ((1 - fy) * ((1 - fx) * padded[y0, x0] + fx * padded[y0, x1])
             + fy * ((1 - fx) * padded[y1, x0] + fx * padded[y1, x1]))
    return value.astype(np.uint8)


def images_to_tensor(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 RGB images to the project's image tensors.

    Source: project convention (diffusion models and FR wrappers take images in [-1, 1]).
    Convention: x = p / 127.5 − 1, channels first.
    Shapes: (N, H, W, 3) or (H, W, 3) uint8 -> (N, 3, H, W) in [-1, 1].
    Raises:
        ValueError: ``images`` is not an (N, H, W, 3) or (H, W, 3) uint8 array.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[-1] != 3 or images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3) uint8, got {images.shape} {images.dtype}")
    x = torch.from_numpy(np.array(images.reshape((-1,) + images.shape[-3:])))
    return x.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """The project's image tensors back to uint8 RGB images (for display and saving).

    Source: project convention. Convention: p = round(clip((x + 1) · 127.5, 0, 255)).
    Shapes: (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8.
    Raises:
        ValueError: ``x`` is not (N, 3, H, W).
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be (N, 3, H, W), got {tuple(x.shape)}")
    p = ((x.detach().to(torch.float64).cpu() + 1.0) * 127.5).clamp(0, 255).round()
    return p.permute(0, 2, 3, 1).numpy().astype(np.uint8)
