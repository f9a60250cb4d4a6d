"""Fetch every public face asset from its original source and lay it out as ``../shared`` is laid out.

``python -m adjointlib.faces.fetch --dest DATA`` downloads, verifies (SHA-256), processes and writes

* ``DATA/data/frll/`` — FRLL (DeBruine & Jones 2017, CC BY 4.0) from GitHub debruine/webmorphR.stim
  at commit fa8b78f: photos resized 1350 → 600 px (Lanczos, JPEG q92, metadata dropped), templates
  scaled by 4/9, ``landmarks_5pt.csv`` (YuNet rows computed here; the ``dlib_sp5`` rows, which need
  dlib, are the ones recorded with the shared copy and shipped in ``adjointlib/faces/data``), and the FR
  models' verification crops of photo 001_03 with their expected vectors (shipped here too);
* ``DATA/data/utkface/`` — UTKFace chips (non-commercial research only) from GitHub
  mattans/AgeProgression at commit 2d937c6: byte-identical duplicates dropped, 200 → 128 px (Lanczos,
  JPEG q85), one uncompressed zip with fixed timestamps, ``duplicates.csv``;
* ``DATA/models/mobilefacenet/`` — MobileFaceNet weights (Apache-2.0), foamliu/MobileFaceNet, unchanged;
* ``DATA/models/dlib_resnet/`` — dlib's face ResNet (CC0) from the PyPI sdist face-recognition-models
  0.3.0, converted to PyTorch by :mod:`adjointlib.faces.dlib_dat` (no dlib needed);
* ``DATA/models/yunet/`` — YuNet (MIT) from the OpenCV model zoo, unchanged.

Then ``ADJOINTLIB_SHARED=DATA`` makes every loader read from there. Source of the processing:
the READMEs of ``../shared`` (``data/frll``, ``data/utkface``, ``models/*``). Every downloaded file
is checked against the SHA-256 of the original recorded in ``adjointlib/faces/data/fetch_sources.sha256``
(a mismatch stops the command); every written file is compared with the SHA-256 of the shared copy
(``adjointlib/faces/data/fetch_outputs.sha256``): with the library versions the shared copy was made
with (Pillow 13.0.0, opencv-python-headless 5.0.0.93, torch 2.13.0) all are identical; with others
the JPEG encoder, YuNet or ``torch.save`` may write different bytes, which is reported (and is an
error with ``--strict``). The 64 px face model (``models/faces64``) and the verification crops are
this project's own files, not public assets, and are not fetched.

``--mirror DIR`` reads every URL ``https://HOST/PATH`` from ``DIR/HOST/PATH`` instead of the network
(an offline copy; ``tests/test_fetch.py`` builds one from ``../shared``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import shutil
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["ASSETS", "Asset", "ChecksumError", "Fetcher", "fetch", "main", "sha256_of", "utkface_tree_digest"]

FRLL_COMMIT = "fa8b78fda2d659bb74ce62fcd99c4407551d2a77"
UTKFACE_COMMIT = "2d937c615a3d10408db0ea795842e569bc9eedb0"
MOBILEFACENET_COMMIT = "a6cc9032a659b615f477833e1a70b5e7931bcccc"
OPENCV_ZOO_COMMIT = "966be4cb6eefc2a4f586ed0581bf4bbaa2533070"
YUNET_COPY_COMMIT = "d876a822bbb20180b9ed7850c1d3229d72883067"

URLS = {
    "frll": f"https://raw.githubusercontent.com/debruine/webmorphR.stim/{FRLL_COMMIT}/{{path}}",
    "utkface": f"https://codeload.github.com/mattans/AgeProgression/tar.gz/{UTKFACE_COMMIT}",
    "mobilefacenet": f"https://raw.githubusercontent.com/foamliu/MobileFaceNet/{MOBILEFACENET_COMMIT}/{{path}}",
    "face_recognition_models": ("https://files.pythonhosted.org/packages/source/f/face_recognition_models/"
                                "face_recognition_models-0.3.0.tar.gz"),
    "yunet": ["https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
              "face_detection_yunet_2026may.onnx",
              f"https://raw.githubusercontent.com/RuDr8A/RealTime-PPE-Compliance/{YUNET_COPY_COMMIT}/"
              "face_detection_yunet_2026may.onnx"],
    "yunet_licence": (f"https://raw.githubusercontent.com/opencv/opencv_zoo/{OPENCV_ZOO_COMMIT}/"
                      "models/face_detection_yunet/LICENSE"),
}

#: Header that the shared copy puts above the OpenCV zoo's YuNet LICENSE (text unchanged below it).
YUNET_LICENCE_HEADER = (
    "face_detection_yunet_2026may.onnx: the YuNet face detector by Shiqi Yu and contributors\n"
    "(training code: ShiqiYu/libfacedetection.train; paper: Wu, Peng & Yu, \"YuNet: A Tiny\n"
    "Millisecond-level Face Detector\", Machine Intelligence Research, 2023), distributed in the\n"
    "OpenCV model zoo (opencv/opencv_zoo, models/face_detection_yunet/). The licence text of that\n"
    "folder's LICENSE file follows unchanged.\n\n"
    + "-" * 89 + "\n\n"
)
FRLL_SIZE = 600
FRLL_JPEG_QUALITY = 92
UTKFACE_SIZE = 128
UTKFACE_JPEG_QUALITY = 85
UTKFACE_MEMBER_DIR = "data/UTKFace/unlabeled/"
ZIP_DATE = (2017, 1, 1, 0, 0, 0)


class ChecksumError(RuntimeError):
    """A downloaded file's SHA-256 differs from the original's recorded one (or, with ``strict``, an output's)."""


@dataclass(frozen=True)
class Asset:
    """One public asset: where it comes from, its licence, its size, and the folder it fills.

    Source: ``../shared/README.md`` ("Licences at a glance", index sizes) and the asset's README.
    Convention: ``folder`` is relative to the destination (the ``../shared`` layout).
    """

    key: str
    title: str
    licence: str
    download_size: str
    size: str
    folder: str
    source: str


ASSETS = (
    Asset("frll", "FRLL — Face Research Lab London set (102 people, neutral + smiling)",
          "CC BY 4.0 — credit DeBruine & Jones (2017), doi:10.6084/m9.figshare.5047666.v5, name the licence "
          "and say the images were changed (resized)", "96 MB (308 files)", "10 MB", "data/frll",
          "GitHub debruine/webmorphR.stim @ fa8b78f"),
    Asset("utkface", "UTKFace aligned chips (23,317 after de-duplication, 128 px)",
          "non-commercial research only (UTKFace licence claim; copyright stays with the photos' owners); "
          "do not show individual UTKFace faces in published material", "≈ 250 MB (archive of that repository)",
          "91 MB", "data/utkface", "GitHub mattans/AgeProgression @ 2d937c6 (data/UTKFace/unlabeled)"),
    Asset("mobilefacenet", "MobileFaceNet face-recognition weights",
          "Apache-2.0 (foamliu/MobileFaceNet); trained on MS-Celeb-1M-derived data: research/teaching use",
          "4.1 MB", "4.2 MB", "models/mobilefacenet", "GitHub foamliu/MobileFaceNet @ a6cc903"),
    Asset("dlib_resnet", "dlib face-recognition ResNet, converted to PyTorch here",
          "CC0 1.0 / public domain (Davis King)", "100 MB (the sdist)",
          "22.5 MB", "models/dlib_resnet", "PyPI face-recognition-models 0.3.0"),
    Asset("yunet", "YuNet face detector (ONNX)",
          "MIT, Copyright (c) 2020 Shiqi Yu — keep the notice with copies", "0.23 MB", "0.23 MB",
          "models/yunet", "OpenCV model zoo (opencv/opencv_zoo)"),
)


def sha256_of(data: bytes | Path) -> str:
    """SHA-256 hex digest of bytes or of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    if isinstance(data, (bytes, bytearray, memoryview)):
        h.update(data)
    else:
        with open(data, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def utkface_tree_digest(members: dict[str, bytes]) -> str:
    """One SHA-256 for a folder of files: the SHA-256 of ``"<sha256>  <name>\\n"`` lines in name order.

    Source: project convention (the UTKFace source is one archive of 23,707 files whose archive
    bytes GitHub does not promise to keep stable, so its members are checked instead).
    Shapes: {name: bytes} -> hex digest.
    """
    lines = "".join(f"{sha256_of(members[name])}  {name}\n" for name in sorted(members))
    return sha256_of(lines.encode())


def _read_sums(name: str) -> dict[str, str]:
    """{key: sha256} from a ``sha256sum``-style file shipped in ``adjointlib/faces/data``."""
    text = resources.files("adjointlib.faces").joinpath("data", name).read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            digest, key = line.split(None, 1)
            out[key.strip()] = digest
    return out


def _jpeg(img, quality: int) -> bytes:
    """Baseline JPEG bytes of a Pillow image with no metadata (no EXIF, no comment)."""
    img.info.clear()  # Pillow would otherwise copy the source's JPEG comment
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, **({"optimize": True} if quality == FRLL_JPEG_QUALITY else {}))
    return out.getvalue()


def _pixels_sha256(path: Path) -> str:
    """SHA-256 of an image's decoded RGB pixels (row-major uint8), independent of the PNG encoder."""
    from PIL import Image

    with Image.open(path) as img:
        return sha256_of(np.ascontiguousarray(np.asarray(img.convert("RGB"))).tobytes())


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Fetcher:
    """Downloads with verification, processes, writes, and reports.

    Source: module docstring. Convention: ``dest`` gets the ``../shared`` layout; ``downloads``
    (default ``dest/.downloads``) holds the raw downloads (``pooch`` keeps and re-uses them when
    their hash still matches); ``mirror`` replaces the network by a local copy
    (``DIR/HOST/PATH``); ``source_sha256`` overrides entries of the recorded original checksums
    (for a mirror of something other than the originals); ``log`` receives progress lines.
    Raises (methods): ChecksumError for a download whose SHA-256 differs from the original's.
    """

    def __init__(self, dest: str | Path, downloads: str | Path | None = None, mirror: str | Path | None = None,
                 source_sha256: dict[str, str] | None = None, strict: bool = False,
                 log: Callable[[str], None] = print) -> None:
        self.dest = Path(dest).expanduser()
        self.downloads = Path(downloads).expanduser() if downloads else self.dest / ".downloads"
        self.mirror = Path(mirror).expanduser() if mirror else None
        self.sources = {**_read_sums("fetch_sources.sha256"), **(source_sha256 or {})}
        self.expected = _read_sums("fetch_outputs.sha256")
        self.strict, self.log = strict, log
        self.report: dict[str, dict] = {}

    # -- downloading ------------------------------------------------------------------------------
    def _get(self, urls: str | list[str], key: str | None, name: str) -> Path:
        """Download ``urls`` (the first that works) to ``downloads/name`` and check its SHA-256 against ``key``.

        Raises:
            KeyError: ``key`` has no recorded SHA-256.
            ChecksumError: every URL answered, and what came back differs from the original's SHA-256.
            OSError: no URL could be downloaded (the message lists each URL's error).
        """
        urls = [urls] if isinstance(urls, str) else list(urls)
        expected = self.sources.get(key) if key else None
        if key and expected is None:
            raise KeyError(f"no recorded SHA-256 for {key}")
        target = self.downloads / name
        target.parent.mkdir(parents=True, exist_ok=True)
        errors, mismatches = [], []
        for url in urls:
            try:
                if self.mirror is not None:
                    local = self.mirror / url.split("://", 1)[1]
                    if not local.is_file():
                        raise FileNotFoundError(f"{local} (mirror of {url})")
                    shutil.copyfile(local, target)
                else:
                    self._pooch(url, target)
            except OSError as error:  # requests' errors derive from OSError too
                errors.append(f"{url}: {error}")
                continue
            got = sha256_of(target) if expected is not None else None
            if got == expected:
                return target
            target.unlink(missing_ok=True)  # never keep (or re-use) a file that is not the original
            mismatches.append(f"{url} gave SHA-256 {got}")
        if mismatches:
            raise ChecksumError(f"{name}: differs from the original's SHA-256 {expected} ({key}): "
                                + "; ".join(mismatches))
        raise OSError("could not download " + name + ":\n  " + "\n  ".join(errors))

    def _pooch(self, url: str, target: Path) -> Path:
        """``pooch.retrieve`` into ``target`` (re-using a file already there), three tries, a bar for large files.

        Raises:
            ImportError: pooch is not installed.
            OSError: the third try failed too.
        """
        try:
            import pooch
        except ImportError as error:
            raise ImportError("fetching needs pooch: pip install 'adjointlib[faces]' (or pip install pooch)") from error
        pooch.get_logger().setLevel("WARNING")  # no "SHA256 hash of downloaded file" line per file
        for attempt in range(3):
            try:
                return Path(pooch.retrieve(url, known_hash=None, fname=target.name, path=target.parent,
                                           progressbar=target.name.endswith(".gz")))
            except Exception as error:  # noqa: BLE001  requests/urllib errors, HTTP errors: retry, then give up
                if attempt == 2:
                    raise OSError(f"{type(error).__name__}: {error}") from error
        raise AssertionError("unreachable")

    # -- writing and checking outputs ----------------------------------------------------------------
    def _write(self, rel: str, data: bytes) -> None:
        path = self.dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    def _check_outputs(self, asset: Asset, rels: list[str]) -> dict:
        same, differ, unknown = [], [], []
        for rel in rels:
            ref, got = self.expected.get(rel), None
            if ref is not None:
                got = sha256_of(self.dest / rel)
            elif f"pixels:{rel}" in self.expected:  # an image compared by its decoded RGB pixels
                ref, got = self.expected[f"pixels:{rel}"], _pixels_sha256(self.dest / rel)
            if ref is None:
                unknown.append(rel)
            elif got == ref:
                same.append(rel)
            else:
                differ.append(rel)
        result = {"files": len(rels), "identical_to_reference": len(same), "identical": same, "differ": differ,
                  "no_reference": unknown}
        msg = f"  {asset.key}: {len(rels)} files written; {len(same)} identical to the reference copy"
        if differ:
            msg += (f"; {len(differ)} differ (first: {differ[0]}) — expected with other Pillow/OpenCV/torch "
                    "versions than those the reference was made with")
        self.log(msg)
        if differ and self.strict:
            raise ChecksumError(f"{asset.key}: {len(differ)} written files differ from the reference copy "
                                f"(first: {differ[0]}); run without --strict to accept them")
        return result

    def _done(self, asset: Asset) -> bool:
        rels = [k for k in self.expected if k.startswith(asset.folder + "/")]
        if asset.key == "frll":  # the verification files are made from FRLL
            rels += [k for k in self.expected if "/verify_001_03" in k and not k.startswith("pixels:")]
        return bool(rels) and all((self.dest / r).is_file() and sha256_of(self.dest / r) == self.expected[r]
                                  for r in rels)

    # -- assets --------------------------------------------------------------------------------------
    def frll(self) -> list[str]:
        """FRLL: download 308 files, resize, rescale templates, compute YuNet landmarks, make the verification files.

        Raises:
            RuntimeError: YuNet finds no face in a processed photo.
        """
        from PIL import Image

        from .align import YuNetDetector
        from .frll import FRLL_EXPRESSIONS, rescale_tem_text

        def get(path: str) -> bytes:
            return self._get(URLS["frll"].format(path=path), f"webmorphR.stim/{path}", f"frll/{path}").read_bytes()

        out = "data/frll"
        written = []
        for src, rel in (("LICENSE.md", "LICENSE.md"), ("data-raw/london_info.csv", "london_info.csv")):
            self._write(f"{out}/{rel}", get(src))
            written.append(f"{out}/{rel}")
        with open(self.dest / out / "london_info.csv", newline="") as f:
            ids = sorted(r["face_id"].zfill(3) for r in csv.DictReader(f))
        detector = YuNetDetector(self._yunet_model())
        rows = []
        dlib_rows = _dlib_sp5_rows()
        for n, face_id in enumerate(ids):
            for expression, (folder, pose) in FRLL_EXPRESSIONS.items():
                name = f"{folder}/{face_id}_{pose}"
                with Image.open(io.BytesIO(get(f"inst/{name}.jpg"))) as src:
                    width = src.width
                    img = src.convert("RGB").resize((FRLL_SIZE, FRLL_SIZE), Image.LANCZOS)
                self._write(f"{out}/{name}.jpg", _jpeg(img, FRLL_JPEG_QUALITY))
                written.append(f"{out}/{name}.jpg")
                if expression == "neutral":
                    text = get(f"inst/{name}.tem").decode()
                    self._write(f"{out}/{name}.tem", rescale_tem_text(text, FRLL_SIZE / width).encode())
                    written.append(f"{out}/{name}.tem")
                with Image.open(self.dest / out / f"{name}.jpg") as saved:  # landmarks of the file as written
                    found = detector.detect(np.asarray(saved.convert("RGB")))
                if found is None:
                    raise RuntimeError(f"YuNet found no face in {name}.jpg")
                xy = ",".join(f"{v:.4f}" for v in found[0].ravel())
                rows.append(f"{name}.jpg,yunet,{xy},{found[1]:.4f}")
                if f"{name}.jpg" in dlib_rows:
                    rows.append(dlib_rows[f"{name}.jpg"])
            if (n + 1) % 20 == 0:
                self.log(f"  frll: {n + 1}/{len(ids)} people")
        header = "image,source," + ",".join(f"x{i},y{i}" for i in range(5)) + ",score"
        self._write(f"{out}/landmarks_5pt.csv", ("\n".join([header] + rows) + "\n").encode())
        written.append(f"{out}/landmarks_5pt.csv")
        return written + self._verification_files()

    def _verification_files(self) -> list[str]:
        """The FR models' verification inputs (crops of FRLL 001_03) and expected outputs, as in ``../shared``.

        Source: ``../shared/models/mobilefacenet/README.md`` and ``../shared/models/dlib_resnet/README.md``
        ("Verification vector"): the ArcFace 112 px crop from the YuNet landmarks (``arcface_crop_cv2``) and
        dlib's 150 px chip from the dlib landmarks (``dlib_chip_exact``, bit-exact); the expected vectors
        (the dlib one from dlib's C++) are this project's reference numbers, shipped in
        ``adjointlib/faces/data``.
        """
        from PIL import Image

        from .crops import arcface_crop_cv2, dlib_chip_exact
        from .frll import load_frll_image, load_frll_landmarks_5pt

        frll = self.dest / "data/frll"
        image = load_frll_image("001", "neutral", frll)
        crops = {"mobilefacenet": ("verify_001_03_112.png",
                                   arcface_crop_cv2(image, load_frll_landmarks_5pt(frll)[("001", "neutral")])),
                 "dlib_resnet": ("verify_001_03_chip150.png",
                                 dlib_chip_exact(image, load_frll_landmarks_5pt(frll, "dlib_sp5")[("001", "neutral")]))}
        written = []
        for model, (name, crop) in crops.items():
            out = io.BytesIO()
            Image.fromarray(crop).save(out, "PNG")
            self._write(f"models/{model}/{name}", out.getvalue())
            data = resources.files("adjointlib.faces").joinpath("data", f"verify_{model}_001_03.json").read_bytes()
            self._write(f"models/{model}/verify_001_03.json", data)
            written += [f"models/{model}/{name}", f"models/{model}/verify_001_03.json"]
        return written

    def utkface(self) -> list[str]:
        """UTKFace: one archive of the source repository; its chips de-duplicated, resized, zipped.

        Raises:
            ChecksumError: the archive's files under ``data/UTKFace/unlabeled/`` are not the originals.
        """
        from PIL import Image

        archive = self._get(URLS["utkface"], None, f"utkface/AgeProgression-{UTKFACE_COMMIT[:7]}.tar.gz")
        members: dict[str, bytes] = {}
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                parts = info.name.split("/", 1)
                if info.isfile() and len(parts) == 2 and parts[1].startswith(UTKFACE_MEMBER_DIR):
                    name = parts[1][len(UTKFACE_MEMBER_DIR):]
                    if name and "/" not in name:
                        members[name] = tar.extractfile(info).read()
        key = f"AgeProgression/{UTKFACE_MEMBER_DIR}"
        got, expected = utkface_tree_digest(members), self.sources[key]
        if got != expected:
            raise ChecksumError(f"UTKFace: the {len(members)} files under {UTKFACE_MEMBER_DIR} hash to {got}, "
                                f"not to the original's {expected}")
        self.log(f"  utkface: {len(members)} source files verified; de-duplicating and resizing")
        groups: dict[bytes, list[str]] = {}
        for name in sorted(members):
            groups.setdefault(hashlib.sha256(members[name]).digest(), []).append(name)
        kept, dupes = [], []
        for names in groups.values():
            kept.append(names[0])
            dupes += [(names[0], other, _git_blob_sha1(members[other])) for other in names[1:]]
        out = self.dest / "data/utkface"
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "utkface_128.zip.part"
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name in sorted(kept):
                with Image.open(io.BytesIO(members[name])) as src:
                    img = src.convert("RGB").resize((UTKFACE_SIZE, UTKFACE_SIZE), Image.LANCZOS)
                # The shared copy cut the one source name with a space ("24_0_1_20170116220224657 .jpg.chip.jpg")
                # at that space; its README lists the result among the irregular names. Kept for identical bytes.
                info = zipfile.ZipInfo(name.split(" ")[0], date_time=ZIP_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, _jpeg(img, UTKFACE_JPEG_QUALITY))
        tmp.replace(out / "utkface_128.zip")
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["kept_name", "dropped_identical_name", "git_blob_sha1"])
        writer.writerows(sorted(dupes))
        self._write("data/utkface/duplicates.csv", text.getvalue().encode())
        self.log(f"  utkface: {len(kept)} chips kept, {len(dupes)} duplicates dropped")
        return ["data/utkface/utkface_128.zip", "data/utkface/duplicates.csv"]

    def mobilefacenet(self) -> list[str]:
        """MobileFaceNet: the weights and the repository's LICENSE, unchanged."""
        out = "models/mobilefacenet"
        for path, rel in (("weights/mobilefacenet.pt", "mobilefacenet.pt"), ("LICENSE", "LICENSE")):
            src = self._get(URLS["mobilefacenet"].format(path=path), f"MobileFaceNet/{path}", f"mobilefacenet/{rel}")
            self._write(f"{out}/{rel}", src.read_bytes())
        return [f"{out}/mobilefacenet.pt", f"{out}/LICENSE"]

    def dlib_resnet(self) -> list[str]:
        """dlib ResNet: the PyPI sdist, its ``.dat`` (checked), converted by :mod:`.dlib_dat`; the CC0 LICENSE.

        Raises:
            ChecksumError: the sdist lacks the ``.dat`` or the LICENSE, or either differs from the original.
        """
        from .dlib_dat import convert_dlib_resnet

        sdist = self._get(URLS["face_recognition_models"], "face_recognition_models-0.3.0.tar.gz",
                          "dlib_resnet/face_recognition_models-0.3.0.tar.gz")
        root = "face_recognition_models-0.3.0/"
        wanted = {root + "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat": "dat",
                  root + "LICENSE": "LICENSE"}
        found = {}
        with tarfile.open(sdist, "r:*") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    found[wanted[info.name]] = tar.extractfile(info).read()
        for what, key in (("dat", "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"),
                          ("LICENSE", "face_recognition_models-0.3.0/LICENSE")):
            if what not in found:
                raise ChecksumError(f"{sdist.name} has no {key}")
            if sha256_of(found[what]) != self.sources[key]:
                raise ChecksumError(f"{key}: SHA-256 {sha256_of(found[what])} differs from the original's "
                                    f"{self.sources[key]}")
        dat = self.downloads / "dlib_resnet" / "dlib_face_recognition_resnet_model_v1.dat"
        dat.write_bytes(found["dat"])
        out = "models/dlib_resnet"
        convert_dlib_resnet(dat, self.dest / out / "dlib_face_recognition_resnet_model_v1.pth")
        self._write(f"{out}/LICENSE", found["LICENSE"])
        return [f"{out}/dlib_face_recognition_resnet_model_v1.pth", f"{out}/LICENSE"]

    def yunet(self) -> list[str]:
        """YuNet: the ONNX model unchanged; the zoo's LICENSE under an attribution header."""
        out = "models/yunet"
        onnx = self._get(URLS["yunet"], "opencv_zoo/models/face_detection_yunet/face_detection_yunet_2026may.onnx",
                         "yunet/face_detection_yunet_2026may.onnx")
        licence = self._get(URLS["yunet_licence"], "opencv_zoo/models/face_detection_yunet/LICENSE", "yunet/LICENSE")
        self._write(f"{out}/face_detection_yunet_2026may.onnx", onnx.read_bytes())
        self._write(f"{out}/LICENSE", YUNET_LICENCE_HEADER.encode() + licence.read_bytes())
        return [f"{out}/face_detection_yunet_2026may.onnx", f"{out}/LICENSE"]

    def _yunet_model(self) -> Path:
        path = self.dest / "models/yunet/face_detection_yunet_2026may.onnx"
        if not path.is_file():
            self.yunet()
        return path

    # -- driver --------------------------------------------------------------------------------------
    def run(self, keys: list[str] | None = None, keep_downloads: bool = False) -> dict:
        """Fetch the assets named in ``keys`` (default: all), YuNet first (FRLL's landmarks need it)."""
        order = ["yunet", "mobilefacenet", "dlib_resnet", "frll", "utkface"]
        keys = order if not keys else [k for k in order if k in keys]
        by_key = {a.key: a for a in ASSETS}
        self.dest.mkdir(parents=True, exist_ok=True)
        for key in keys:
            asset = by_key[key]
            self.log(f"\n{asset.title}\n  source: {asset.source}\n  licence: {asset.licence}\n"
                     f"  download: {asset.download_size}; on disk: {asset.size} in {self.dest / asset.folder}")
            if self._done(asset):
                self.log(f"  {key}: already there and identical to the reference copy; skipped")
                self.report[key] = {"skipped": True}
                continue
            self.report[key] = self._check_outputs(asset, getattr(self, key)())
        if not keep_downloads and self.downloads.exists() and self.downloads.parent == self.dest:
            shutil.rmtree(self.downloads)
        self.log(f"\nDone. Use it with:  export ADJOINTLIB_SHARED={self.dest.resolve()}")
        return self.report


def _dlib_sp5_rows() -> dict[str, str]:
    """The ``dlib_sp5`` rows of FRLL's ``landmarks_5pt.csv`` (dlib 19.24, recorded with the shared copy)."""
    text = resources.files("adjointlib.faces").joinpath("data", "frll_landmarks_dlib_sp5.csv").read_text()
    return {line.split(",", 1)[0]: line for line in text.splitlines()[1:] if line}


def fetch(dest: str | Path, assets: list[str] | None = None, **kwargs) -> dict:
    """Fetch the public assets into ``dest`` (see the module docstring); returns the per-asset report.

    Source: module docstring. Convention: keyword arguments go to :class:`Fetcher`
    (``downloads``, ``mirror``, ``source_sha256``, ``strict``, ``log``) except ``keep_downloads``.
    Shapes: none.
    Raises:
        ChecksumError: a download differs from the recorded original (or, with ``strict``, an output
            differs from the reference copy).
        OSError: a file could not be downloaded from any of its URLs.
    """
    keep = kwargs.pop("keep_downloads", False)
    return Fetcher(dest, **kwargs).run(assets, keep_downloads=keep)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m adjointlib.faces.fetch --dest DIR [--only KEY ...] [--mirror DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m adjointlib.faces.fetch",
        description="Download the public face data and weights from their original sources, verify their "
                    "SHA-256, process them as ../shared was processed, and lay them out as ../shared is laid "
                    "out. Then set ADJOINTLIB_SHARED to DEST.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dest", help="folder to fill (it gets the ../shared layout); required")
    parser.add_argument("--only", nargs="+", choices=[a.key for a in ASSETS], help="fetch only these assets")
    parser.add_argument("--downloads", default=None, help="folder for the raw downloads (default: DEST/.downloads, "
                                                          "removed at the end unless --keep-downloads)")
    parser.add_argument("--keep-downloads", action="store_true", help="keep the raw downloads")
    parser.add_argument("--mirror", default=None, help="read https://HOST/PATH from MIRROR/HOST/PATH (offline copy)")
    parser.add_argument("--strict", action="store_true",
                        help="fail when a written file differs from the reference copy's SHA-256")
    parser.add_argument("--list", action="store_true", help="print the assets, sizes and licences, then stop")
    args = parser.parse_args(argv)
    if args.list:
        for a in ASSETS:
            print(f"{a.key:14s} {a.size:>8s} on disk, download {a.download_size}\n{'':15s}{a.licence}\n"
                  f"{'':15s}{a.source}")
        return 0
    if not args.dest:
        parser.error("the following argument is required: --dest")
    try:
        fetch(args.dest, args.only, downloads=args.downloads, mirror=args.mirror, strict=args.strict,
              keep_downloads=args.keep_downloads)
    except (ChecksumError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
