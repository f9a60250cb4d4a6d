"""benchmarks/gpu_check.py, the prepared device check of issue 13, runs on the CPU too: its accuracy and
low-precision stages at the quick size must pass here (its timing stage is a benchmark, not a test)."""
import subprocess
import sys
from pathlib import Path

import json

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_and_passes_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                          "--stages", "accuracy", "low_precision", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["pass"] and set(results["accuracy"]) >= {"adjoint-1", "backprop", "reversible ODE"}
    assert results["accuracy"]["reversible SDE"]["float32"]["refused"]
    assert results["low_precision"]["dtype"] == "torch.bfloat16"
