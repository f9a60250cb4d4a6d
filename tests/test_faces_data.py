"""Loaders: paths and their errors, .tem templates, FRLL, UTKFace, the aligned-array cache."""
import numpy as np
import pytest

from adjointlib.faces.cache import cached_arrays
from adjointlib.faces.frll import read_tem, rescale_tem_text
from adjointlib.faces.paths import cache_dir, frll_dir, shared_dir, utkface_zip
from adjointlib.faces.utkface import parse_utkface_name

TEM = "4\n1.0\t2.0\n3.5\t4.5\n10\t20\n7\t8\n2\n0\n2\n0 1\n0\n3\n1 2 3\n"


def _reason(*checks):
    try:
        for check in checks:
            check()
    except FileNotFoundError as err:
        return str(err)
    return None


_FRLL = _reason(frll_dir)
_UTK = _reason(utkface_zip)
needs_frll = pytest.mark.skipif(_FRLL is not None, reason=f"FRLL absent: {_FRLL}")
needs_utkface = pytest.mark.skipif(_UTK is not None, reason=f"UTKFace absent: {_UTK}")


def test_missing_data_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ADJOINTLIB_FRLL", raising=False)
    monkeypatch.delenv("ADJOINTLIB_UTKFACE", raising=False)
    monkeypatch.setenv("ADJOINTLIB_SHARED", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="ADJOINTLIB_FRLL") as err:
        frll_dir()
    assert str(tmp_path / "nowhere") in str(err.value)
    assert "$ADJOINTLIB_SHARED is set" in str(err.value)  # it does not ask to set a variable that is set
    with pytest.raises(FileNotFoundError, match="ADJOINTLIB_UTKFACE"):
        utkface_zip()
    with pytest.raises(FileNotFoundError, match="ADJOINTLIB_SHARED"):
        shared_dir()
    with pytest.raises(FileNotFoundError, match="from the argument"):
        frll_dir(tmp_path / "elsewhere")
    monkeypatch.setenv("ADJOINTLIB_FRLL", str(tmp_path / "frll_env"))
    with pytest.raises(FileNotFoundError, match=r"\$ADJOINTLIB_FRLL"):
        frll_dir()
    (tmp_path / "frll_env").mkdir()
    assert frll_dir() == tmp_path / "frll_env"  # the environment variable wins over the default
    from adjointlib.faces.frll import load_frll_image, load_frll_info

    with pytest.raises(FileNotFoundError, match="london_info.csv"):
        load_frll_info()
    with pytest.raises(FileNotFoundError, match="001_03.jpg"):
        load_frll_image("001", "neutral")
    with pytest.raises(ValueError, match="expression"):
        load_frll_image("001", "angry")


def test_cache_dir_follows_argument_and_environment(tmp_path, monkeypatch):
    assert cache_dir(tmp_path / "c1") == tmp_path / "c1" and (tmp_path / "c1").is_dir()
    monkeypatch.setenv("ADJOINTLIB_CACHE", str(tmp_path / "c2"))
    assert cache_dir() == tmp_path / "c2"


def test_read_tem_and_rescale(tmp_path):
    path = tmp_path / "x.tem"
    path.write_text(TEM)
    tem = read_tem(path)
    np.testing.assert_array_equal(tem.points, [[1, 2], [3.5, 4.5], [10, 20], [7, 8]])
    assert [list(line) for line in tem.lines] == [[0, 1], [1, 2, 3]]
    scaled = rescale_tem_text(TEM, 0.5)
    assert scaled.split("\n")[3] == "5.000\t10.000" and scaled.split("\n")[5:] == TEM.split("\n")[5:]
    path.write_text("4\n1 2\n3 4\n")
    with pytest.raises(ValueError, match="not a valid .tem"):
        read_tem(path)
    with pytest.raises(FileNotFoundError):
        read_tem(tmp_path / "missing.tem")


def test_cached_arrays_rebuilds_when_the_key_changes(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(3)}

    path = tmp_path / "c.npz"
    np.testing.assert_array_equal(cached_arrays(path, {"v": 1}, build)["a"], np.arange(3))
    cached_arrays(path, {"v": 1}, build)
    assert len(calls) == 1
    cached_arrays(path, {"v": 2}, build)
    assert len(calls) == 2


def test_utkface_names_including_the_irregular_ones():
    assert parse_utkface_name("26_1_2_20170116174525125.jpg.chip.jpg") == {"age": 26, "gender": 1, "race": 2}
    assert parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg") == {"age": 39, "gender": 1, "race": -1}
    assert parse_utkface_name("55_0_0_20170116232725357jpg.chip.jpg") == {"age": 55, "gender": 0, "race": 0}
    assert parse_utkface_name("24_0_1_20170116220224657") == {"age": 24, "gender": 0, "race": 1}


@needs_frll
def test_frll_contents_match_the_readme():
    from adjointlib.faces.frll import load_frll_image, load_frll_info, load_frll_landmarks_5pt, load_frll_tem

    info = load_frll_info()
    assert len(info) == 102
    assert sum(p["gender"] == "female" for p in info) == 49
    assert sum(p["age"] is None for p in info) == 2
    image = load_frll_image(info[0]["id"], "smiling")
    assert image.shape == (600, 600, 3) and image.dtype == np.uint8
    yunet, sp5 = load_frll_landmarks_5pt(), load_frll_landmarks_5pt(source="dlib_sp5")
    assert len(yunet) == len(sp5) == 204
    offsets = []
    for p in info:
        tem = load_frll_tem(p["id"])
        assert tem.points.shape == (189, 2)
        offsets.append(np.linalg.norm(tem.points[:2] - yunet[(p["id"], "neutral")][:2], axis=1))
    assert np.median(offsets) < 8.0  # README: tem eye centres lie within a few px of YuNet's


@needs_frll
def test_pair_list_genders_and_ids_match_london_info():
    from adjointlib.faces.frll import load_frll_info
    from adjointlib.faces.pairs import load_morph_pairs

    gender = {p["id"]: p["gender"] for p in load_frll_info()}
    for pair in load_morph_pairs():
        assert gender[pair["id_a"]] == gender[pair["id_b"]] == pair["gender"]


@needs_frll
def test_frll_aligned_is_built_once_and_cached(tmp_path):
    from adjointlib.faces.aligned import load_frll_aligned

    aligned = load_frll_aligned(32, cache=tmp_path)
    assert aligned.neutral.shape == aligned.smiling.shape == (102, 32, 32, 3)
    assert aligned.neutral.dtype == np.uint8 and len(set(aligned.ids)) == 102
    assert (tmp_path / "frll_canonical_32.npz").is_file()
    again = load_frll_aligned(32, cache=tmp_path)
    np.testing.assert_array_equal(again.smiling, aligned.smiling)
    with pytest.raises(ValueError):
        load_frll_aligned(4, cache=tmp_path)


@needs_utkface
def test_utkface_aligned_subset(tmp_path):
    from adjointlib.faces.utkface import load_utkface_aligned

    data = load_utkface_aligned(32, limit=12, cache=tmp_path)
    assert data.images.shape[1:] == (32, 32, 3) and 10 <= len(data.images) <= 12
    assert len(data.names) == len(data.ages) == len(data.images)
    assert set(data.genders.tolist()) <= {0, 1, -1}
    assert data.images.std() > 10  # real content, not blank or constant crops
