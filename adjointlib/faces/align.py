"""Five-point face alignment: YuNet landmarks and least-squares similarity transforms.

Source: ``../shared/models/mobilefacenet/README.md`` ("Alignment", step 2) and
``../shared/models/yunet/README.md`` (``cv2.FaceDetectorYN`` usage and output layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .paths import model_file

__all__ = [
    "similarity_transform",
    "apply_affine",
    "invert_affine",
    "YuNetDetector",
]


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    """Validate an array of 2-D points and return it as float64.

    Source: project convention. Convention: points are (x, y) pixel coordinates.
    Shapes: (K, 2) -> (K, 2).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape (K, 2), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} contains non-finite values")
    return points


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Source: mobilefacenet README, "Alignment" step 2 (= skimage ``SimilarityTransform.estimate``,
    Umeyama without reflection; also dlib's ``find_similarity_transform``).
    Convention: solve x' = a·x − b·y + t_x, y' = b·x + a·y + t_y in the least-squares sense and
    return M = [[a, −b, t_x], [b, a, t_y]] (apply as ``p' = M[:, :2] @ p + M[:, 2]``).
    Shapes: src (K, 2), dst (K, 2) with K >= 2 -> M (2, 3) float64.
    Raises:
        ValueError: ``src`` or ``dst`` is not (K, 2) or not finite, their shapes differ, or K < 2.
    """
    src, dst = _check_points(src, "src"), _check_points(dst, "dst")
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"src and dst need the same shape (K, 2), K >= 2; got {src.shape}, {dst.shape}")
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    rhs = np.concatenate([dst[:, 0], dst[:, 1]])
    a, b, tx, ty = np.linalg.lstsq(rows, rhs, rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine map to points.

    Source: standard homogeneous-coordinate convention (as ``cv2.transform``).
    Convention: p' = A p + t with ``matrix = [A | t]``.
    Shapes: matrix (2, 3), points (K, 2) -> (K, 2) float64.
    Raises:
        ValueError: ``matrix`` is not (2, 3), or ``points`` is not (K, 2) or not finite.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    return _check_points(points, "points") @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map.

    Source: standard linear algebra. Convention: [A | t]⁻¹ = [A⁻¹ | −A⁻¹ t].
    Shapes: (2, 3) -> (2, 3) float64.
    Raises:
        ValueError: ``matrix`` is not (2, 3).
        numpy.linalg.LinAlgError: its linear part ``matrix[:, :2]`` is singular.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {matrix.shape}")
    inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([inv, -inv @ matrix[:, 2:]], axis=1)


class YuNetDetector:
    """YuNet face detector (OpenCV ``FaceDetectorYN``) returning the best face's five landmarks.

    Source: ``../shared/models/yunet/README.md``; Wu, Peng & Yu, "YuNet", Machine Intelligence
    Research 20(5), 2023. Model MIT-licensed, Copyright (c) 2020 Shiqi Yu.
    Convention: input RGB uint8; landmark order = ArcFace template order (image-left eye,
    image-right eye, nose tip, image-left and image-right mouth corner); score threshold 0.6
    (the model zoo demo's value, used for ``landmarks_5pt.csv``); highest-scoring face wins.
    Not differentiable: landmarks are constants for the crops.
    Shapes: image (H, W, 3) uint8 -> landmarks (5, 2) float64 and a score, or None.
    Raises (constructor):
        FileNotFoundError: no model file at ``model_path`` (default: the shared YuNet model; outside a checkout
            without ``$ADJOINTLIB_SHARED`` the message names what to set).
    """

    def __init__(self, model_path: str | Path | None = None, score_threshold: float = 0.6) -> None:
        import cv2

        path = Path(model_path) if model_path is not None else model_file(
            "yunet", "face_detection_yunet_2026may.onnx")
        if not path.is_file():
            raise FileNotFoundError(f"YuNet model not found at {path}")
        self._cv2 = cv2
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV 5's harmless
        try:  # "setPreferableTarget ... new graph engine" warning (yunet README)
            self._detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold)
        finally:
            cv2.utils.logging.setLogLevel(level)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, float] | None:
        """Five landmarks and confidence of the highest-scoring face, or None if no face.

        Source: yunet README, "Output layout" (columns 4-13 landmarks, 14 score).
        Convention: (x, y) in image pixels, pixel centres at integer coordinates.
        Shapes: image (H, W, 3) uint8 RGB -> ((5, 2) float64, float) or None.
        Raises:
            ValueError: ``image`` is not an (H, W, 3) uint8 array.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        self._detector.setInputSize((w, h))
        _, faces = self._detector.detect(self._cv2.cvtColor(image, self._cv2.COLOR_RGB2BGR))
        if faces is None or len(faces) == 0:
            return None
        best = faces[int(np.argmax(faces[:, 14]))]
        return best[4:14].reshape(5, 2).astype(np.float64), float(best[14])
