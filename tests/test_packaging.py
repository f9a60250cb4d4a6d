"""A non-editable install works outside the checkout: build a wheel, install it in a bare folder, import it elsewhere.

The wheel is built from a copy of the package sources (so the checkout gets no build/ or egg-info), installed with
``pip install --no-deps --target``, and used from a folder outside the repository with only that folder on
PYTHONPATH (this interpreter's site-packages still provide torch, numpy, cv2, ...). The snippet drops any
editable-install finder and the checkout's root from sys.path first, so only the installed copy can be imported.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("pip") is None,
                                reason="pip and setuptools are needed to build the wheel without build isolation")

SNIPPET = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    repo = Path(sys.argv[1]).resolve()
    # only the installed copy: no editable-install finder, not the checkout's root on the path
    # (the virtual environment providing torch may itself live inside the checkout)
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not getattr(f, "__module__", type(f).__module__).startswith("__editable__")]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != repo]

    import importlib.util
    import adjointlib, adjointlib.faces, adjointlib.morph
    from adjointlib.faces import paths
    from adjointlib.faces.pairs import default_pairs_path, load_morph_pairs

    pairs = load_morph_pairs()
    errors = {}
    for name, call in (("repo_root", paths.repo_root), ("shared_dir", paths.shared_dir), ("frll_dir", paths.frll_dir),
                       ("model_file", lambda: paths.model_file("yunet", "x.onnx"))):
        try:
            call()
            errors[name] = None
        except FileNotFoundError as error:
            errors[name] = str(error)
    print(json.dumps({
        "adjointlib": adjointlib.__file__, "pairs_path": str(default_pairs_path()), "n_pairs": len(pairs),
        "first_pair": pairs[0], "derivations": importlib.util.find_spec("derivations") is not None,
        "cache_dir": str(paths.cache_dir()), "in_checkout": paths.in_checkout(), "errors": errors,
    }))
""")


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=240, **kwargs)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    source = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("adjointlib", "derivations"):  # derivations/ is copied so that leaving it out is tested
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run(pip + ["wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(wheels)])
    (wheel,) = wheels.glob("adjointlib-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "adjointlib/faces/data/frll_morph_pairs.csv" in names and "adjointlib/atomic.py" in names
    assert "adjointlib/facemodel/weights/faces32/face_model.json" in names
    assert not [n for n in names if n.startswith("derivations/")]

    site = tmp_path / "site"
    _run(pip + ["install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADJOINTLIB_")}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "xdg"), TQDM_DISABLE="1")
    result = _run([sys.executable, "-c", SNIPPET, str(ROOT)], cwd=elsewhere, env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert Path(report["adjointlib"]).resolve().is_relative_to(site.resolve())
    assert Path(report["pairs_path"]).resolve().is_relative_to(site.resolve())
    assert report["n_pairs"] > 0 and set(report["first_pair"]) >= {"pair", "id_a", "id_b", "gender"}
    assert report["derivations"] is False
    cache = Path(report["cache_dir"]).resolve()
    assert not cache.is_relative_to(ROOT) and cache.name == "faces" and "adjointlib" in cache.parts
    assert report["in_checkout"] is False
    for name, message in report["errors"].items():  # one line, naming what to set
        assert message is not None and "\n" not in message, (name, message)
        assert "ADJOINTLIB_SHARED" in message, (name, message)
    assert "ADJOINTLIB_FRLL" in report["errors"]["frll_dir"]
