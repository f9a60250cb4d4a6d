"""The README's statements about set-up, data, running times, outputs and caches, checked against the repository.

Issue 14 items 6-8: each figure or file the README names for these is re-read here from where it comes from
(``.ci/run``, ``environment.yml``, the fetcher's asset table, ``results/morphs``, the main job's ``--help``,
``adjointlib.faces.paths``), so that a change on either side fails a test.
"""
import json
import re
import statistics
from pathlib import Path

import pytest

from adjointlib.faces import fetch as fetch_module

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end >= 0 else None]


def _bash_blocks(text: str) -> list[list[str]]:
    return [[line.split("#")[0].strip() for line in block.strip().splitlines() if line.split("#")[0].strip()]
            for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_set_up_block_exactly():
    ci = [line.split("#")[0].strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    first = [cmd.strip() for line in _bash_blocks(_section("Set up"))[0] for cmd in line.split("&&")]
    assert len(first) == 4 and all(cmd in ci for cmd in first), first


def test_the_cpu_index_is_offered_in_the_readme_and_in_environment_yml():
    setup = _section("Set up")
    pin = re.search(r"pip install (torch==[\d.]+)\s", setup).group(1)
    cpu_line = f"pip install {pin} --index-url https://download.pytorch.org/whl/cpu"
    assert cpu_line in setup
    env = (ROOT / "environment.yml").read_text()
    assert f"- {pin}\n" in env and "- --extra-index-url https://download.pytorch.org/whl/cpu\n" in env
    assert "-e .[dev]" in env


def test_get_the_data_states_each_assets_licence_and_sizes():
    text = _section("Get the data")
    assert "python -m adjointlib.faces.fetch --dest" in text and "ADJOINTLIB_SHARED" in text
    for asset in fetch_module.ASSETS:
        row = next(line for line in text.splitlines() if line.startswith("| ") and f"(`{asset.folder}/`)" in line)
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert cells[3] == asset.download_size and cells[4] == asset.size, (asset.key, cells)
        licence = re.split(r"[;:(—,]", asset.licence)[0].strip()  # e.g. "CC BY 4.0", "Apache-2.0", "MIT"
        assert cells[2].startswith(licence.removesuffix(" / public domain")), (asset.key, cells[2], licence)


def test_the_kept_sizes_are_those_of_the_reference_copy():
    """Sizes of the files the fetcher writes, measured on ../shared (the same bytes)."""
    from adjointlib.faces.paths import shared_dir

    try:
        shared = shared_dir()
    except FileNotFoundError:
        pytest.skip("../shared (or $ADJOINTLIB_SHARED) is absent")
    outputs = [k.removeprefix("pixels:") for k in fetch_module._read_sums("fetch_outputs.sha256")]
    total = 0
    for asset in fetch_module.ASSETS:
        size = sum((shared / rel).stat().st_size for rel in outputs if rel.startswith(asset.folder + "/"))
        total += size
        assert asset.size == f"{size / 1e6:.{1 if size > 1e6 else 2}f} MB" or asset.size == f"{size / 1e6:.0f} MB", \
            (asset.key, size)
    assert f"{total / 1e6:.0f} MB kept" in _section("Get the data").replace("\n", " ")


def _seconds(run: Path) -> list[float]:
    files = sorted((run / "batches").glob("*.jsonl")) or [run / "morphs.jsonl"]
    return [json.loads(line)["seconds"] for f in files for line in f.read_text().splitlines() if line.strip()]


def test_main_job_times_are_the_recorded_ones():
    text = _section("Time, outputs and caches").replace("\n", " ")
    gpu = _seconds(ROOT / "results/morphs/faces32/runs/adjointdeis1_ode")
    config = json.loads((ROOT / "results/morphs/faces32/runs/adjointdeis1_ode/config.json").read_text())
    assert config["device"] == "NVIDIA H200" and config["batch_size"] == 250 and len(gpu) == 500
    assert f"{statistics.mean(gpu):.2f} s per morph" in text
    cpu = _seconds(ROOT / "results/morphs/similar16_previous/runs/adjointdeis1_ode")
    config = json.loads((ROOT / "results/morphs/similar16_previous/runs/adjointdeis1_ode/config.json").read_text())
    assert config["batch_size"] == 8 and len(cpu) == 16
    assert f"{statistics.mean(cpu):.0f} s per morph" in text
    assert f"{sum(cpu) / 60:.1f} min for 16 pairs" in text


def test_main_job_outputs_are_the_ones_it_writes():
    from PIL import Image

    from adjointlib.morph.__main__ import build_parser

    text = _section("Time, outputs and caches")
    epilog = build_parser().epilog.replace("\n", " ")
    for name in ("config.json", "morphs/<pair>_<a>_<b>.png", "batches/<k>.jsonl", "morphs.jsonl", "mmpmr.json"):
        assert f"`{name}`" in text and name in epilog, name
    for folder, size in (("faces32/runs/adjointdeis1_ode", 32), ("faces64/runs/dim", 64)):
        png = sorted((ROOT / "results/morphs" / folder / "morphs").glob("*.png"))[0]
        with Image.open(png) as img:
            assert img.size == (size, size)
    assert "32×32" in text and "64×64" in text


def test_cache_location_is_the_one_the_library_uses(monkeypatch, tmp_path):
    import platformdirs

    from adjointlib.faces.paths import cache_dir

    text = _section("Time, outputs and caches")
    assert "`ADJOINTLIB_CACHE`" in text and "~/.cache/adjointlib/faces" in text
    monkeypatch.delenv("ADJOINTLIB_CACHE", raising=False)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *a, **k: str(tmp_path / "user-cache"))
    assert cache_dir() == tmp_path / "user-cache" / "faces"
    monkeypatch.setenv("ADJOINTLIB_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
