"""adjointlib.atomic: a failed write leaves the target untouched and no temporary file; a finished one replaces it."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest

from adjointlib.atomic import atomic_path, write_bytes_atomic, write_text_atomic


class Boom(Exception):
    pass


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_success_replaces_the_target_through_a_sibling_temporary_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith("out.json.") and tmp.name.endswith(".tmp")
        assert not tmp.exists()
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert _only(tmp_path) == ["out.json"]


def test_two_writers_of_one_target_get_different_temporary_files(tmp_path):
    with atomic_path(tmp_path / "a") as first, atomic_path(tmp_path / "a") as second:
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "a").read_text() == "1"  # the outer block finishes last
    assert _only(tmp_path) == ["a"]


@pytest.mark.parametrize("error", [Boom("writer failed"), KeyboardInterrupt()])
def test_failure_leaves_the_target_untouched_and_removes_the_temporary_file(tmp_path, error):
    target = tmp_path / "data.bin"
    target.write_bytes(b"previous")
    with pytest.raises(type(error)):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise error
    assert target.read_bytes() == b"previous"
    assert _only(tmp_path) == ["data.bin"]


def test_failure_before_anything_is_written_and_without_a_previous_target(tmp_path):
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "new.txt"):
            raise Boom
    assert _only(tmp_path) == []


def test_a_block_that_writes_nothing_raises_and_leaves_the_target(tmp_path):
    (tmp_path / "t").write_text("kept")
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "t"):
            pass
    assert (tmp_path / "t").read_text() == "kept" and _only(tmp_path) == ["t"]


def test_missing_folder_is_not_created(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_text_atomic(tmp_path / "absent" / "x.txt", "x")
    assert _only(tmp_path) == []


def test_np_savez_with_the_npz_suffix_writes_the_target_and_nothing_else(tmp_path):
    target = tmp_path / "arrays.npz"
    target.write_bytes(b"stale")
    with atomic_path(target, suffix=".npz") as tmp:
        assert tmp.name.endswith(".tmp.npz")
        np.savez(tmp, a=np.arange(3))
    with np.load(target) as data:
        np.testing.assert_array_equal(data["a"], np.arange(3))
    assert _only(tmp_path) == ["arrays.npz"]
    with pytest.raises(Boom):
        with atomic_path(target, suffix=".npz") as tmp:
            np.savez(tmp, a=np.zeros(2))
            raise Boom
    with np.load(target) as data:
        np.testing.assert_array_equal(data["a"], np.arange(3))
    assert _only(tmp_path) == ["arrays.npz"]


def test_text_and_bytes_helpers(tmp_path):
    assert write_text_atomic(tmp_path / "t.json", json.dumps({"π": 1})) == tmp_path / "t.json"
    assert json.loads((tmp_path / "t.json").read_text(encoding="utf-8")) == {"π": 1}
    assert write_bytes_atomic(str(tmp_path / "b"), b"\x00\x01") == tmp_path / "b"
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    assert _only(tmp_path) == ["b", "t.json"]


def test_the_library_writes_through_adjointlib_atomic_only():
    """One home for atomic writes: no other module of the library, scripts, benchmarks or tools renames
    a temporary file itself, and adjointlib.atomic imports nothing from adjointlib."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("adjointlib", "scripts", "benchmarks", "tools"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.name == "atomic.py" and path.parent.name == "adjointlib":
                continue
            text = path.read_text(encoding="utf-8")
            if "os.replace(" in text or ".tmp\"" in text or ".tmp.npz\"" in text or ".tmp')" in text:
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
    tree = ast.parse((root / "adjointlib" / "atomic.py").read_text(encoding="utf-8"))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("adjointlib") or m.startswith(".")], imported
    assert all(n.level == 0 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
