"""FRLL (Face Research Lab London Set): images, 189-point templates, 5-point landmarks, info.

Source: ``../shared/data/frll/README.md``. Data: DeBruine, L., & Jones, B. (2017). Face
Research Lab London Set (Version 5). figshare. doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0.
The shared copy was resized to 600x600 (templates scaled by 4/9); anything that shows the
images must carry :data:`FRLL_ATTRIBUTION`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .paths import frll_dir

__all__ = [
    "FRLL_ATTRIBUTION",
    "FRLL_EXPRESSIONS",
    "FRLL_SOURCE_URL",
    "Template",
    "read_tem",
    "rescale_tem_text",
    "load_frll_info",
    "frll_image_path",
    "load_frll_image",
    "load_frll_tem",
    "load_frll_landmarks_5pt",
    "download_frll",
]

#: Attribution line required by CC BY 4.0 whenever FRLL images (or morphs of them) are shown.
FRLL_ATTRIBUTION = (
    "Face images: DeBruine, L. & Jones, B. (2017), Face Research Lab London Set, "
    "doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0; resized, aligned, cropped and morphed here."
)
#: expression -> (folder, pose suffix) of the FRLL file names ``NNN_<suffix>.jpg``.
FRLL_EXPRESSIONS = {"neutral": ("neutral_front", "03"), "smiling": ("smiling_front", "08")}
#: Public source of the files (GitHub repository debruine/webmorphR.stim, CC BY 4.0).
FRLL_SOURCE_URL = "https://raw.githubusercontent.com/debruine/webmorphR.stim/{ref}/{path}"


@dataclass(frozen=True)
class Template:
    """A Psychomorph/WebMorph ``.tem`` template: landmark points and the line definitions.

    Source: FRLL README, "``.tem`` format". Convention: (x, y) pixels, origin top-left;
    points 0 and 1 are the eye centres (image-left first); lines hold 0-based point indices.
    Shapes: points (189, 2) float64; lines: tuple of int arrays.
    """

    points: np.ndarray
    lines: tuple[np.ndarray, ...]


def read_tem(path: str | Path) -> Template:
    """Parse a ``.tem`` file.

    Source: FRLL README, "``.tem`` format": line 1 = number of points; then one ``x<TAB>y``
    line per point; then the number of lines and, per line, a flag line, a point count and the
    point indices.
    Convention: coordinates in pixels of the image the template belongs to.
    Shapes: -> Template with points (K, 2) (K = 189 for FRLL).
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``path`` is not a valid .tem template (a missing or malformed count, point or line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Template file not found: {path}")
    rows = path.read_text().split("\n")
    try:
        n = int(rows[0])
        points = np.array([[float(v) for v in rows[1 + i].split()] for i in range(n)])
        n_lines, lines, pos = int(rows[1 + n]), [], 2 + n
        for _ in range(n_lines):
            count = int(rows[pos + 1])
            lines.append(np.array(rows[pos + 2].split(), dtype=np.int64))
            if len(lines[-1]) != count:
                raise ValueError(f"line {len(lines)} lists {len(lines[-1])} points, header says {count}")
            pos += 3
    except (ValueError, IndexError) as err:
        raise ValueError(f"{path} is not a valid .tem template: {err}") from err
    if points.shape != (n, 2):
        raise ValueError(f"{path}: expected {n} points of 2 coordinates, got {points.shape}")
    return Template(points=points, lines=tuple(lines))


def rescale_tem_text(text: str, factor: float) -> str:
    """Multiply every point of a ``.tem`` file's text by ``factor`` (line definitions unchanged).

    Source: FRLL README, "What was changed" item 2 (factor 600/1350 = 4/9, three decimals).
    Convention: points written as ``x<TAB>y`` with 3 decimals; all other lines copied.
    Shapes: text -> text.
    """
    rows = text.split("\n")
    n = int(rows[0])
    for i in range(1, n + 1):
        x, y = (float(v) * factor for v in rows[i].split())
        rows[i] = f"{x:.3f}\t{y:.3f}"
    return "\n".join(rows)


def load_frll_info(root: str | Path | None = None) -> list[dict]:
    """The 102 FRLL people from ``london_info.csv``.

    Source: FRLL README, "Demographics" (self-reported; two ages are ``NA``).
    Convention: dicts with ``id`` (3-digit string), ``age`` (int or None), ``gender``
    ("female"/"male"), ``ethnicity``; sorted by id.
    Shapes: -> list of 102 dicts.
    Raises:
        FileNotFoundError: the FRLL folder (``root``) or its london_info.csv is missing.
    """
    path = frll_dir(root) / "london_info.csv"
    if not path.is_file():
        raise FileNotFoundError(f"FRLL info file not found: {path}")
    with path.open(newline="") as f:
        rows = [
            {"id": r["face_id"].zfill(3), "age": None if r["face_age"] == "NA" else int(r["face_age"]),
             "gender": r["face_gender"], "ethnicity": r["face_eth"]}
            for r in csv.DictReader(f)
        ]
    return sorted(rows, key=lambda r: r["id"])


def frll_image_path(face_id: str, expression: str, root: str | Path | None = None) -> Path:
    """Path of an FRLL photo, ``neutral_front/NNN_03.jpg`` or ``smiling_front/NNN_08.jpg``.

    Source: FRLL README, "Naming". Convention: ``face_id`` is the 3-digit id of london_info.
    Shapes: none (returns a path).
    Raises:
        ValueError: ``expression`` is not a key of ``FRLL_EXPRESSIONS`` ("neutral", "smiling").
        FileNotFoundError: the FRLL folder (``root``) is missing (the photo itself is not checked).
    """
    if expression not in FRLL_EXPRESSIONS:
        raise ValueError(f"expression must be one of {sorted(FRLL_EXPRESSIONS)}, got {expression!r}")
    folder, pose = FRLL_EXPRESSIONS[expression]
    return frll_dir(root) / folder / f"{str(face_id).zfill(3)}_{pose}.jpg"


def load_frll_image(face_id: str, expression: str, root: str | Path | None = None) -> np.ndarray:
    """Read one FRLL photo as RGB.

    Source: FRLL README (600x600 RGB JPEG). Convention: uint8 RGB, pixel (row, column).
    Shapes: -> (600, 600, 3) uint8.
    Raises:
        ValueError: ``expression`` is not a key of ``FRLL_EXPRESSIONS`` ("neutral", "smiling").
        FileNotFoundError: the FRLL folder (``root``) or the photo of ``face_id`` is missing.
    """
    from PIL import Image

    path = frll_image_path(face_id, expression, root)
    if not path.is_file():
        raise FileNotFoundError(f"FRLL image not found: {path}")
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def load_frll_tem(face_id: str, root: str | Path | None = None) -> Template:
    """The 189-point template of a neutral FRLL photo (the smiling photos have none).

    Source: FRLL README, "Files" and "``.tem`` format".
    Convention: pixel coordinates of the 600x600 neutral image.
    Shapes: -> Template with points (189, 2).
    """
    return read_tem(frll_dir(root) / "neutral_front" / f"{str(face_id).zfill(3)}_03.tem")


def load_frll_landmarks_5pt(root: str | Path | None = None, source: str = "yunet") -> dict:
    """5-point landmarks of every FRLL photo from ``landmarks_5pt.csv``.

    Source: FRLL README, "``landmarks_5pt.csv``". Convention: ``source="yunet"`` gives YuNet
    order (image-left eye, image-right eye, nose tip, image-left and image-right mouth
    corner); ``"dlib_sp5"`` gives dlib's 5-point shape (for :func:`~.crops.dlib_chip_exact`).
    Shapes: -> {(id, expression): (5, 2) float64}.
    Raises:
        ValueError: ``source`` is neither "yunet" nor "dlib_sp5".
        FileNotFoundError: the FRLL folder (``root``) or its landmarks_5pt.csv is missing.
    """
    if source not in ("yunet", "dlib_sp5"):
        raise ValueError(f"source must be 'yunet' or 'dlib_sp5', got {source!r}")
    path = frll_dir(root) / "landmarks_5pt.csv"
    if not path.is_file():
        raise FileNotFoundError(f"FRLL landmark file not found: {path} (download_frll writes it)")
    expression_of = {folder: name for name, (folder, _) in FRLL_EXPRESSIONS.items()}
    out = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["source"] == source:
                folder, name = r["image"].split("/")
                xy = [float(r[f"{c}{i}"]) for i in range(5) for c in "xy"]
                out[(name[:3], expression_of[folder])] = np.array(xy).reshape(5, 2)
    return out


def download_frll(dest: str | Path, ref: str = "HEAD", size: int = 600) -> Path:
    """Download FRLL from its public source and lay it out like ``../shared/data/frll``.

    Source: FRLL README, "Source and citation" and "What was changed" (debruine/webmorphR.stim,
    files ``data-raw/london_info.csv``, ``LICENSE.md``, ``inst/neutral_front/NNN_03.{jpg,tem}``,
    ``inst/smiling_front/NNN_08.jpg``; the shared copy used commit ``fa8b78f``).
    Convention: images resized 1350 → ``size`` with Lanczos, JPEG quality 92; templates scaled
    by size/1350; ``landmarks_5pt.csv`` gets YuNet rows only (the ``dlib_sp5`` rows need dlib).
    Needs internet access (not exercised by the tests). Point ``$ADJOINTLIB_FRLL`` at ``dest``.
    Shapes: none (returns ``dest``).
    Raises:
        RuntimeError: YuNet finds no face in a downloaded photo.
        urllib.error.URLError: a file cannot be fetched (no internet access; HTTPError for an unknown ``ref``).
        FileNotFoundError: the YuNet model is missing (``YuNetDetector``).
    """
    import io
    import urllib.request

    from PIL import Image

    from .align import YuNetDetector

    dest = Path(dest)

    def fetch(path: str) -> bytes:
        with urllib.request.urlopen(FRLL_SOURCE_URL.format(ref=ref, path=path), timeout=60) as r:
            return r.read()

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "london_info.csv").write_bytes(fetch("data-raw/london_info.csv"))
    (dest / "LICENSE.md").write_bytes(fetch("LICENSE.md"))
    detector, rows = YuNetDetector(), []
    for person in load_frll_info(dest):
        for expression, (folder, pose) in FRLL_EXPRESSIONS.items():
            name = f"{folder}/{person['id']}_{pose}"
            (dest / folder).mkdir(exist_ok=True)
            img = Image.open(io.BytesIO(fetch(f"inst/{name}.jpg"))).convert("RGB")
            factor = size / img.width
            img = img.resize((size, size), Image.LANCZOS)
            img.save(dest / f"{name}.jpg", quality=92, optimize=True)
            if expression == "neutral":
                text = fetch(f"inst/{name}.tem").decode()
                (dest / f"{name}.tem").write_text(rescale_tem_text(text, factor))
            found = detector.detect(np.asarray(img))
            if found is None:
                raise RuntimeError(f"YuNet found no face in {name}.jpg")
            xy = ",".join(f"{v:.4f}" for v in found[0].ravel())
            rows.append(f"{name}.jpg,yunet,{xy},{found[1]:.4f}")
    header = "image,source," + ",".join(f"x{i},y{i}" for i in range(5)) + ",score"
    (dest / "landmarks_5pt.csv").write_text("\n".join([header] + rows) + "\n")
    return dest
