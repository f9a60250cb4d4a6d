"""``python -m adjointlib.faces.fetch`` offline: a mirror of the original sources built from ``../shared``.

The mirror serves, at the fetcher's real URLs (``--mirror DIR`` reads ``https://HOST/PATH`` from
``DIR/HOST/PATH``):

* the files whose originals are byte-identical to the shared copy (MobileFaceNet weights and LICENSE,
  the YuNet model, FRLL's ``london_info.csv`` and ``LICENSE.md``), the zoo's YuNet LICENSE (the shared
  LICENSE without its header) and dlib's CC0 LICENSE — all checked against the ORIGINALS' SHA-256;
* dlib's ``.dat`` written by :func:`adjointlib.faces.dlib_dat.write_dlib_dat` from the shared
  PyTorch weights: it has the published file's SHA-256, so the fetcher's check of the ``.dat`` is the
  real one, and converting it must give the shared ``.pth`` byte for byte (and its verification
  vector); only the sdist around it is synthetic;
* stand-ins where the originals are not in ``../shared`` (the 1350 px FRLL photos and templates: the
  shared 600 px files; UTKFace: 40 shared chips upscaled to 200 px plus two byte-identical copies),
  whose recorded checksums the test replaces by the stand-ins' own.
"""
import csv
import hashlib
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from adjointlib.faces import dlib_dat, fetch as fetch_module
from adjointlib.faces.fetch import (
    FRLL_COMMIT, MOBILEFACENET_COMMIT, OPENCV_ZOO_COMMIT, UTKFACE_COMMIT, UTKFACE_MEMBER_DIR, URLS,
    YUNET_LICENCE_HEADER, ChecksumError, fetch, sha256_of, utkface_tree_digest,
)
from adjointlib.faces.paths import shared_dir


def _shared():
    try:
        return shared_dir()
    except FileNotFoundError:
        return None


SHARED = _shared()
pytestmark = pytest.mark.skipif(SHARED is None, reason="../shared (or $ADJOINTLIB_SHARED) is absent: the offline "
                                                       "mirror is built from it")
DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
PTH = "models/dlib_resnet/dlib_face_recognition_resnet_model_v1.pth"
N_UTK = 40


def _local(mirror, url):
    path = mirror / url.split("://", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _targz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _dat_from_shared() -> bytes:
    sd = torch.load(SHARED / PTH, map_location="cpu", weights_only=True)
    return dlib_dat.write_dlib_dat(dlib_dat.dlib_resnet_network(sd))


def _build_mirror(mirror):
    """The mirror tree and the checksum overrides for the stand-ins (see the module docstring)."""
    from PIL import Image

    overrides = {}
    raw = URLS["frll"]
    for path, src in (("LICENSE.md", "LICENSE.md"), ("data-raw/london_info.csv", "london_info.csv")):
        _local(mirror, raw.format(path=path)).write_bytes((SHARED / "data/frll" / src).read_bytes())
    for folder in ("neutral_front", "smiling_front"):
        for f in sorted((SHARED / "data/frll" / folder).iterdir()):
            if f.suffix in (".jpg", ".tem"):
                key = f"inst/{folder}/{f.name}"
                _local(mirror, raw.format(path=key)).write_bytes(f.read_bytes())
                overrides[f"webmorphR.stim/{key}"] = sha256_of(f)
    mfn = URLS["mobilefacenet"]
    _local(mirror, mfn.format(path="weights/mobilefacenet.pt")).write_bytes(
        (SHARED / "models/mobilefacenet/mobilefacenet.pt").read_bytes())
    _local(mirror, mfn.format(path="LICENSE")).write_bytes((SHARED / "models/mobilefacenet/LICENSE").read_bytes())
    _local(mirror, URLS["yunet"][0]).write_bytes((SHARED / "models/yunet/face_detection_yunet_2026may.onnx").read_bytes())
    licence = (SHARED / "models/yunet/LICENSE").read_bytes()
    assert licence.startswith(YUNET_LICENCE_HEADER.encode())
    _local(mirror, URLS["yunet_licence"]).write_bytes(licence[len(YUNET_LICENCE_HEADER.encode()):])
    root = "face_recognition_models-0.3.0/"
    sdist = _targz({root + "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat": _dat_from_shared(),
                    root + "LICENSE": (SHARED / "models/dlib_resnet/LICENSE").read_bytes()})
    _local(mirror, URLS["face_recognition_models"]).write_bytes(sdist)
    overrides["face_recognition_models-0.3.0.tar.gz"] = sha256_of(sdist)
    members = {}
    with zipfile.ZipFile(SHARED / "data/utkface/utkface_128.zip") as zf:
        for name in zf.namelist()[:N_UTK]:
            with Image.open(io.BytesIO(zf.read(name))) as img:
                out = io.BytesIO()
                img.convert("RGB").resize((200, 200), Image.LANCZOS).save(out, "JPEG", quality=95)
            members[name] = out.getvalue()
    first, second = sorted(members)[:2]
    members["zz_copy_of_first.jpg.chip.jpg"] = members[first]
    members["0_copy_of_second.jpg.chip.jpg"] = members[second]  # sorts first: becomes the kept name
    prefix = f"AgeProgression-{UTKFACE_COMMIT}/"
    _local(mirror, URLS["utkface"]).write_bytes(
        _targz({prefix + "README.md": b"stand-in\n", **{prefix + UTKFACE_MEMBER_DIR + n: b for n, b in members.items()}}))
    overrides[f"AgeProgression/{UTKFACE_MEMBER_DIR}"] = utkface_tree_digest(members)
    return overrides, members


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    base = tmp_path_factory.mktemp("fetch")
    mirror, dest = base / "mirror", base / "data"
    overrides, members = _build_mirror(mirror)
    lines = []
    report = fetch(dest, mirror=mirror, source_sha256=overrides, log=lines.append, keep_downloads=True)
    return dest, report, lines, members


def test_the_dlib_writer_reproduces_the_published_dat_from_the_shared_weights():
    data = _dat_from_shared()
    assert hashlib.sha256(data).hexdigest() == DAT_SHA256  # the sha256 of face-recognition-models 0.3.0's .dat
    net = dlib_dat.read_dlib_dat(data)
    assert dlib_dat.write_dlib_dat(net) == data
    assert len(dlib_dat._layers(net, "con_")) == 29 and net.input.fields["nr"] == 150
    with pytest.raises(ValueError, match="truncated|left"):
        dlib_dat.read_dlib_dat(data[:-5])
    with pytest.raises(ValueError, match="not a dlib"):
        dlib_dat.read_dlib_dat(b"\xff" + data[1:])


def test_real_originals_are_checked_and_unchanged_files_match_the_shared_copy(fetched):
    dest, report, lines, _ = fetched
    for key in ("yunet", "mobilefacenet", "dlib_resnet"):  # served with the originals' exact bytes
        assert report[key]["identical_to_reference"] == report[key]["files"] == 2, report[key]
    assert {"models/mobilefacenet/verify_001_03.json", "models/dlib_resnet/verify_001_03.json"} <= set(
        report["frll"]["identical"])
    assert (dest / ".downloads/dlib_resnet/dlib_face_recognition_resnet_model_v1.dat").is_file()
    assert sha256_of(dest / ".downloads/dlib_resnet/dlib_face_recognition_resnet_model_v1.dat") == DAT_SHA256
    assert sha256_of(dest / PTH) == sha256_of(SHARED / PTH)  # the conversion gives the shared weights bit for bit
    assert report["frll"]["identical_to_reference"] >= 102 + 2 + 2  # templates (scaled by 600/600 here), LICENSE.md,
    # london_info.csv and the verification vectors; the re-encoded stand-in JPEGs (and crops of them) differ
    for rel in ("data/frll/LICENSE.md", "data/frll/london_info.csv", "data/frll/neutral_front/001_03.tem"):
        assert sha256_of(dest / rel) == sha256_of(SHARED / rel)


def test_licences_are_printed_before_each_download(fetched):
    _, _, lines, _ = fetched
    text = "\n".join(lines)
    for asset in fetch_module.ASSETS:
        assert f"licence: {asset.licence}" in text
        assert text.index(f"licence: {asset.licence}") < text.index(f"  {asset.key}: ")
    assert "export ADJOINTLIB_SHARED=" in text


def test_layout_is_what_the_loaders_read(fetched, monkeypatch):
    from adjointlib.faces import (YuNetDetector, load_dlib_resnet, load_frll_image, load_frll_info,
                                  load_frll_landmarks_5pt, load_frll_tem, load_mobilefacenet, utkface_zip)

    dest, _, _, members = fetched
    for name in ("ADJOINTLIB_FRLL", "ADJOINTLIB_UTKFACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADJOINTLIB_SHARED", str(dest))
    expected = fetch_module._read_sums("fetch_outputs.sha256")
    assert all((dest / rel.removeprefix("pixels:")).is_file() for rel in expected if "utkface" not in rel)
    assert len(load_frll_info()) == 102
    assert load_frll_image("001", "neutral").shape == (600, 600, 3)
    assert load_frll_tem("001").points.shape == (189, 2)
    yunet, sp5 = load_frll_landmarks_5pt(), load_frll_landmarks_5pt(source="dlib_sp5")
    assert len(yunet) == len(sp5) == 204
    reference = load_frll_landmarks_5pt(root=SHARED / "data/frll")
    diffs = np.array([np.abs(yunet[k] - reference[k]).max() for k in reference])  # re-encoded JPEGs, same faces
    assert np.percentile(diffs, 95) < 0.5 and diffs.max() < 10.0  # measured: 0.14 px and 6.5 px (one photo)
    YuNetDetector()
    with zipfile.ZipFile(utkface_zip()) as zf:
        names = zf.namelist()
        assert names == sorted(names) and len(names) == N_UTK  # the two byte-identical copies were dropped
        assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (2017, 1, 1, 0, 0, 0) for i in zf.infolist())
        from PIL import Image
        with Image.open(io.BytesIO(zf.read(names[0]))) as img:
            assert img.size == (128, 128) and img.mode == "RGB"
    with open(dest / "data/utkface/duplicates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["dropped_identical_name"] for r in rows} == {"zz_copy_of_first.jpg.chip.jpg", sorted(members)[2]}
    for model in ("mobilefacenet", "dlib_resnet"):
        assert (dest / "models" / model / "verify_001_03.json").is_file()


def test_verification_files_are_remade_exactly_from_the_frll_photo(fetched, tmp_path, monkeypatch):
    """The crops of FRLL 001_03 (from the shared photo, as a real fetch writes it) equal the shared PNGs pixel for
    pixel, and the fetched MobileFaceNet and converted dlib weights reproduce the expected vectors."""
    from PIL import Image

    from adjointlib.faces import load_dlib_resnet, load_mobilefacenet

    dest = fetched[0]
    work = tmp_path / "data"
    (work / "data").mkdir(parents=True)
    (work / "data/frll").symlink_to(SHARED / "data/frll", target_is_directory=True)
    fetch_module.Fetcher(work, log=lambda _: None)._verification_files()
    for name in ("ADJOINTLIB_FRLL", "ADJOINTLIB_UTKFACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADJOINTLIB_SHARED", str(dest))  # weights as fetched
    for model, png, key, tol in (("mobilefacenet", "verify_001_03_112.png", "embedding_raw_128", 1e-4),
                                 ("dlib_resnet", "verify_001_03_chip150.png", "descriptor", 1e-5)):
        with Image.open(work / "models" / model / png) as a, Image.open(SHARED / "models" / model / png) as b:
            chip = np.array(a.convert("RGB"))
            np.testing.assert_array_equal(chip, np.asarray(b.convert("RGB")))
        ref = json.loads((work / "models" / model / "verify_001_03.json").read_text())
        assert ref == json.loads((SHARED / "models" / model / "verify_001_03.json").read_text())
        x = torch.from_numpy(chip).permute(2, 0, 1)[None].float()
        if model == "mobilefacenet":
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            got = load_mobilefacenet()((x / 255 - mean) / std)[0].numpy()
        else:
            got = load_dlib_resnet()(x)[0].numpy()
            assert np.abs(got - np.array(ref["descriptor_dlib_cpp"])).max() < 1e-5  # dlib's own C++ output
        assert np.abs(got - np.array(ref[key])).max() < tol


def test_a_changed_original_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    weights = (SHARED / "models/mobilefacenet/mobilefacenet.pt").read_bytes()
    _local(mirror, URLS["mobilefacenet"].format(path="weights/mobilefacenet.pt")).write_bytes(weights[:-1] + b"\0")
    _local(mirror, URLS["mobilefacenet"].format(path="LICENSE")).write_bytes(b"x")
    with pytest.raises(ChecksumError, match="differs from the original"):
        fetch(tmp_path / "data", ["mobilefacenet"], mirror=mirror, log=lambda _: None)
    assert not (tmp_path / "data/models/mobilefacenet/mobilefacenet.pt").exists()


def test_the_command_line_lists_assets_and_needs_dest(capsys):
    assert fetch_module.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(a.key in out and a.licence in out for a in fetch_module.ASSETS)
    with pytest.raises(SystemExit):
        fetch_module.main([])


def test_recorded_urls_pin_commits():
    assert FRLL_COMMIT in URLS["frll"] and MOBILEFACENET_COMMIT in URLS["mobilefacenet"]
    assert UTKFACE_COMMIT in URLS["utkface"] and OPENCV_ZOO_COMMIT in URLS["yunet_licence"]
    assert all(len(c) == 40 for c in (FRLL_COMMIT, MOBILEFACENET_COMMIT, UTKFACE_COMMIT, OPENCV_ZOO_COMMIT))
    sources = fetch_module._read_sums("fetch_sources.sha256")
    assert sources["face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"] == DAT_SHA256
    assert sum(k.startswith("webmorphR.stim/inst/") for k in sources) == 306


def test_the_download_path_through_pooch_from_a_loopback_server(tmp_path, monkeypatch):
    """The real download code (pooch, no mirror), against an HTTP server on 127.0.0.1 serving original bytes."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    (root / "weights").mkdir(parents=True)
    (root / "weights/mobilefacenet.pt").write_bytes((SHARED / "models/mobilefacenet/mobilefacenet.pt").read_bytes())
    (root / "LICENSE").write_bytes((SHARED / "models/mobilefacenet/LICENSE").read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setitem(URLS, "mobilefacenet", f"http://127.0.0.1:{server.server_port}/{{path}}")
        report = fetch(tmp_path / "data", ["mobilefacenet"], log=lambda _: None)
        assert report["mobilefacenet"]["identical_to_reference"] == 2
        assert not (tmp_path / "data/.downloads").exists()  # raw downloads removed unless keep_downloads
        (root / "LICENSE").write_bytes(b"not the licence")
        with pytest.raises(ChecksumError, match="differs from the original"):
            fetch(tmp_path / "again", ["mobilefacenet"], log=lambda _: None)
        monkeypatch.setitem(URLS, "mobilefacenet", f"http://127.0.0.1:{server.server_port}/missing/{{path}}")
        with pytest.raises(OSError, match="could not download"):
            fetch(tmp_path / "third", ["mobilefacenet"], log=lambda _: None)
    finally:
        server.shutdown()
        thread.join()
