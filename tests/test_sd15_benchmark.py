"""benchmarks/sd15_unet_memory_time.py (issue 15 item 4) at its tiny size on the CPU: the JSON it writes, and the
gradients it reports against backprop's.

Tolerances (CPU, one thread, float32, fixed seeds):
- checkpoint = backprop (x_T, z and x_0) and the adjoint's x_0 = backprop's to 1e-5: the same DDIM pass and the same
  gradient, recomputed; measured 0 for x_T and x_0 and ≤ 1.5e-7 for z (float32's unit round-off is 6e-8), while
  the adjoint's and the reversible method's x_T gaps, which are not round-off, are ≥ 2.7e-2 here.
- adjoint and reversible: the AdjointDEIS-1 steps and the reversible DDIM coupling are first-order-consistent with
  the same continuous gradient as backprop-through-DDIM, so their gap to it is O(1/N), not round-off: from N = 16 to
  N = 32 the observed order of the gap must lie in [0.75, 1.25] for the adjoint (theory 1; measured 0.93 for x_T,
  0.89 for z; 0.99 / 0.95 from 32 to 64) and in [0.5, 1.5] for the reversible coupling, whose gap is not yet
  asymptotic at N = 16 (measured 0.79 / 0.65; 0.94 / 0.99 from 32 to 64).  A gradient with a missing or wrong term
  keeps a gap that does not shrink.  Mutations of the benchmark's child that made this test fail: the adjoint's x_T
  gradient × 1.05 (order 0.61), its z gradient × 0.9 (0.68), the reversible z gradient × 1.1 (0.37).  Not resolved
  at these N: the adjoint's z gradient × 1.1 (order 0.95: the adjoint's z gradient is 8 % shorter than backprop's at
  N = 32, so that error partly cancels the O(1/N) gap of 21 %).
Two runs, about 35 s together on the 2-core CI machine.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "sd15_unet_memory_time.py"
STEPS = (16, 32)
ROUNDOFF = 1e-5
ORDER = {"adjoint": (0.75, 1.25), "reversible": (0.5, 1.5)}
NFE = {"adjoint": (1, 1, 1), "backprop": (1, 0, 1), "checkpoint": (1, 1, 1), "reversible": (2, 2, 2)}  # × N


def _run(tmp_path, name, *args):
    out = tmp_path / name
    run = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--device", "cpu", "--out", str(out), *args],
                         capture_output=True, text=True, timeout=300)
    return run, (json.loads(out.read_text()) if out.exists() else None)


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("sd15"), "tiny.json", "--steps", *map(str, STEPS))


def test_output_structure(float32_run):
    run, results = float32_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert results["complete"] and results["pass"]
    cfg = results["config"]
    assert cfg["size"] == "tiny" and cfg["dtype"] == "float32" and cfg["tf32"] is False
    assert cfg["latent_shape"] == [1, 4, 8, 8] and cfg["prompt_shape"] == [1, 4, 16]
    assert cfg["schedule"]["beta_schedule"] == "scaled_linear" and cfg["schedule"]["beta_end"] == 0.012
    model = results["model"]
    assert model["status"] == "ok" and model["parameters"] > 0 and model["forward_ms"] > 0
    assert model["saved_activations_mib"] > 0
    runs = {(r["method"], r["steps"]): r for r in results["runs"]}
    assert set(runs) == {(m, n) for m in NFE for n in STEPS}
    for (method, n), r in runs.items():
        assert r["status"] == "ok", r
        assert r["reference"] == "backprop"
        assert r["peak_mib"] > 0 and r["grad_wall_s"] > 0 and r["plain_wall_s"] > 0
        assert math.isclose(r["grad_over_plain"], r["grad_wall_s"] / r["plain_wall_s"], rel_tol=1e-9)
        f, bf, vjp = (k * n for k in NFE[method])
        assert r["nfe"] == {"forward": f, "backward_forward": bf, "backward_vjp": vjp, "total": f + bf + vjp}
        assert set(r["rel_diff"]) == {"x0", "x_T", "z"}
    # backprop keeps every step's activations; the other three keep O(1) of them
    hi = max(STEPS)
    assert runs[("backprop", hi)]["peak_mib"] > 1.5 * runs[("backprop", min(STEPS))]["peak_mib"]
    for method in ("adjoint", "checkpoint", "reversible"):
        assert runs[(method, hi)]["peak_mib"] < 0.5 * runs[("backprop", hi)]["peak_mib"], method
    assert "complete" in run.stdout and "peak MiB" in run.stdout


def test_gradients_agree_with_backprop(float32_run):
    _, results = float32_run
    runs = {(r["method"], r["steps"]): r["rel_diff"] for r in results["runs"]}
    for n in STEPS:
        for key in ("x_T", "z", "x0"):
            assert runs[("checkpoint", n)][key] <= ROUNDOFF, (n, key, runs[("checkpoint", n)])
        assert runs[("adjoint", n)]["x0"] <= ROUNDOFF
    lo, hi = STEPS
    for method in ("adjoint", "reversible"):
        for key in ("x_T", "z"):
            a, b = runs[(method, lo)][key], runs[(method, hi)][key]
            order = math.log(a / b) / math.log(hi / lo)
            assert ORDER[method][0] <= order <= ORDER[method][1], (method, key, a, b, order)
    # the script's own verdicts are the same checks (with its GPU round-off tolerance)
    assert len(results["checks"]) == 2 * 4 + 4 and all(c["passed"] for c in results["checks"])


def test_reversible_refuses_bfloat16_and_the_run_goes_on(tmp_path):
    run, results = _run(tmp_path, "bf16.json", "--dtype", "bfloat16", "--steps", "2", "--methods", "reversible",
                        "backprop")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    runs = {r["method"]: r for r in results["runs"]}
    assert runs["reversible"]["status"] == "refused"
    assert "float32 or float64" in runs["reversible"]["reason"]
    assert runs["backprop"]["status"] == "ok" and results["complete"] and results["checks"] == []
