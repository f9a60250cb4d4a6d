"""Faces for the AdjointDEIS morphing showcase: data, alignment, FR systems, MMPMR protocol.

Source: ``../shared/README.md`` (data and model package) and ``../shared/reference/paper-notes.md``
§8 (the paper's face-morphing experiment). Module map:

* :mod:`.paths` — where data, weights and caches are (argument > env var > ``<repo>/../shared`` in a
  checkout; caches in the user cache folder);
* :mod:`.frll`, :mod:`.utkface` — loaders; :mod:`.aligned` — cached canonical FRLL crops;
* :mod:`.align`, :mod:`.crops` — YuNet landmarks, similarity transforms, the canonical crop and
  the differentiable FR crops derived from it;
* :mod:`.mobilefacenet`, :mod:`.dlib_resnet`, :mod:`.registry` — FR networks and their registry;
* :mod:`.protocol`, :mod:`.evaluate`, :mod:`.pairs` — thresholds, TAR, MMPMR, the pair list;
* :mod:`.statistics` — Clopper–Pearson intervals, exact McNemar, margins, FMR at low resolution;
* :mod:`.baselines` — pixel blend and landmark (Delaunay) morphs.

FRLL images: DeBruine & Jones (2017), doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0.
"""

from .align import YuNetDetector, apply_affine, invert_affine, similarity_transform
from .aligned import FRLLAligned, load_frll_aligned
from .baselines import BASELINES, delaunay_triangles, frll_baseline_morphs, landmark_morph, pixel_blend
from .crops import (
    ARCFACE_TEMPLATE_112,
    CANONICAL_BOX,
    CANONICAL_TEMPLATE,
    CANONICAL_WARP_SIZE,
    DLIB_SP5_TEMPLATE_150,
    DLIB_YUNET_TEMPLATE_150,
    arcface_crop_cv2,
    canonical_crop,
    canonical_transform,
    crop_from_canonical,
    dlib_chip_exact,
    images_to_tensor,
    resize_crops,
    tensor_to_images,
    unit_affine_to_theta,
)
from .dlib_resnet import DlibResNet, load_dlib_resnet
from .evaluate import (
    EVAL_SIZE,
    BonaFideResult,
    embed_images,
    evaluate_frll_baselines,
    frll_bona_fide,
    morph_contributor_scores,
    morph_mmpmr,
)
from .frll import (
    FRLL_ATTRIBUTION,
    Template,
    download_frll,
    load_frll_image,
    load_frll_info,
    load_frll_landmarks_5pt,
    load_frll_tem,
    read_tem,
)
from .mobilefacenet import MobileFaceNet, load_mobilefacenet
from .pairs import load_morph_pairs, save_morph_pairs, select_morph_pairs
from .paths import cache_dir, frll_dir, shared_dir, utkface_zip
from .protocol import match_rate, mmpmr, split_genuine_impostor, threshold_at_fmr
from .registry import FaceRecognizer, available_fr_systems, get_fr_system, register_fr_system
from .statistics import fmr_at_resolution, holm_adjust, margin_summary, mcnemar_exact, mmpmr_interval
from .utkface import UTKFaceAligned, load_utkface_aligned, parse_utkface_name

__all__ = [
    "ARCFACE_TEMPLATE_112", "BASELINES", "BonaFideResult", "CANONICAL_BOX", "CANONICAL_TEMPLATE",
    "CANONICAL_WARP_SIZE", "DLIB_SP5_TEMPLATE_150", "DLIB_YUNET_TEMPLATE_150", "DlibResNet",
    "EVAL_SIZE", "FRLLAligned", "FRLL_ATTRIBUTION", "FaceRecognizer", "MobileFaceNet", "Template",
    "UTKFaceAligned", "YuNetDetector", "apply_affine", "arcface_crop_cv2", "available_fr_systems",
    "cache_dir", "canonical_crop", "canonical_transform", "crop_from_canonical", "delaunay_triangles",
    "dlib_chip_exact", "download_frll", "embed_images", "evaluate_frll_baselines", "fmr_at_resolution",
    "frll_baseline_morphs", "frll_bona_fide", "frll_dir", "get_fr_system", "images_to_tensor",
    "invert_affine", "landmark_morph",
    "load_dlib_resnet", "load_frll_aligned", "load_frll_image", "load_frll_info",
    "load_frll_landmarks_5pt", "load_frll_tem", "load_mobilefacenet", "load_morph_pairs",
    "load_utkface_aligned", "margin_summary", "match_rate", "mcnemar_exact", "holm_adjust", "mmpmr", "mmpmr_interval",
    "morph_contributor_scores", "morph_mmpmr",
    "parse_utkface_name", "pixel_blend", "read_tem", "register_fr_system", "resize_crops",
    "save_morph_pairs", "select_morph_pairs", "shared_dir", "similarity_transform",
    "split_genuine_impostor", "tensor_to_images", "threshold_at_fmr", "unit_affine_to_theta",
    "utkface_zip",
]
