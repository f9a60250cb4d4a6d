"""scripts/evaluate_face_model.py --quick on a tiny untrained model writes every output, with valid numbers."""
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("cv2")

from adjointlib.facemodel import CONFIGS, FaceDiffusionModel, save_face_model  # noqa: E402
from adjointlib.faces.paths import frll_dir, shared_dir, utkface_zip  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_face_model.py"


def _data_missing():
    try:
        shared_dir(), frll_dir(), utkface_zip()
    except FileNotFoundError as err:
        return str(err)
    return None


needs_data = pytest.mark.skipif(_data_missing() is not None, reason=f"shared face data absent: {_data_missing()}")


def _load_script():
    spec = importlib.util.spec_from_file_location("evaluate_face_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_data
def test_quick_run_on_tiny_model_writes_valid_results(tmp_path):
    torch.manual_seed(0)
    save_face_model(FaceDiffusionModel(CONFIGS["tiny"]).eval(), tmp_path / "model", model_card={"train_steps": 0})
    log = tmp_path / "loss_log.csv"
    with log.open("w", newline="") as handle:
        csv.writer(handle).writerows([("step", "loss")] + [(i, 1.0 / (i + 1)) for i in range(30)])
    out = tmp_path / "out"

    quality = _load_script().main(["--quick", "--model", str(tmp_path / "model"), "--loss-log", str(log),
                                   "--out", str(out), "--sample-steps", "5", "--recon-steps", "50"])
    # (an untrained model's fixed-point inversion needs small steps to converge: N = 50)

    for name in ("quality.json", "README.md", "samples.png", "reconstructions.png", "training_curve.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))
    assert json.loads((out / "quality.json").read_text()) == json.loads(json.dumps(quality))
    assert quality["model"]["image_size"] == 16 and quality["model"]["train_steps"] == 0
    assert quality["detection"]["frll_reference"]["n"] == 204
    assert {name: d["n"] for name, d in quality["detection"]["samples"].items()} == {"ode": 16, "clipped": 16}
    kinds = [(row["kind"], row["steps"]) for row in quality["reconstruction"]]
    assert kinds == [("input", None), ("exact", 50), ("one_pass", 50), ("z_only", 50), ("z_only_clipped", 50)]
    rows = {key: row for key, row in zip(kinds, quality["reconstruction"])}
    for key in kinds[1:]:
        assert np.isfinite(rows[key]["psnr_mean"]) and rows[key]["psnr_min"] <= rows[key]["psnr_median"]
        for result in rows[key]["identity"].values():
            assert 0.0 <= result["rate"] <= 1.0
    assert rows["exact", 50]["psnr_min"] > rows["one_pass", 50]["psnr_mean"]  # exact inversion reconstructs best
    assert quality["training"]["steps_logged"] == 30


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no face model"):
        _load_script().main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
