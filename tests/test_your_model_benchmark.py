"""benchmarks/your_model.py (chapter 11): one memory measurement in its own process, and the accuracy harness."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import your_model as ym  # noqa: E402


def test_a_memory_child_reports_one_finite_gradient_and_its_own_peak():
    """Backprop through 3 steps of the memory-size flow problem holds tens of MiB of activations; started from this
    (large) pytest process, a child reading getrusage's ru_maxrss (kept across exec) reported 0."""
    out = subprocess.run([sys.executable, str(BENCH / "your_model.py"), "--child", "flow-cfg", "backprop-1", "3"],
                         capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["problem"] == "flow-cfg" and row["method"] == "backprop-1" and row["steps"] == 3
    assert row["finite"] and row["above_baseline_mib"] > 10 and row["grad_s"] > 0 and row["plain_s"] > 0


def test_accuracy_rows_compare_each_method_with_the_reference(one_thread):
    """Checkpoint-2M is backprop-2M recomputed, so their errors against the reference agree to round-off; the
    reference compared with itself has error 0; the reference's own error estimate is small."""
    problem = ym.flow_problem(batch=1, size=8)
    rows, reference = ym.accuracy(problem, ["backprop-2M", "checkpoint-2M"], [8, 16], 16)
    assert [(r["method"], r["steps"]) for r in rows] == [("backprop-2M", 8), ("backprop-2M", 16),
                                                          ("checkpoint-2M", 8), ("checkpoint-2M", 16)]
    for r_back, r_check in zip(rows[:2], rows[2:]):
        for k in ("err_x_T", "err_z", "err_w"):
            assert abs(r_back[k] - r_check[k]) <= 1e-10 * max(1.0, r_back[k])
    assert rows[1]["err_x_T"] == 0.0  # N = 16 is the reference itself
    assert rows[0]["err_x_T"] > 1e-6
    assert all(0 < v < 1 for v in reference["estimated_rel_error"].values())


def test_the_run_writes_as_it_goes_and_resumes(tmp_path, monkeypatch, one_thread):
    """Results are written after each stage; a second identical run recomputes nothing; another mode is refused."""
    monkeypatch.setitem(ym.CONFIG, "tiny", dict(steps=[3], reference=6, memory_steps=[3]))
    args = ["--mode", "tiny", "--problems", "flow-cfg", "--methods", "adjoint-1", "--out", str(tmp_path)]
    ym.main(args)
    acc = (tmp_path / "accuracy.csv").read_text().splitlines()
    mem = (tmp_path / "memory.csv").read_text().splitlines()
    assert len(acc) == 2 and acc[1].startswith("flow-cfg,adjoint-1,3,") and len(mem) == 2

    def must_not_run(*a, **k):
        raise AssertionError("recomputed a finished stage")

    monkeypatch.setattr(ym, "accuracy", must_not_run)
    monkeypatch.setattr(ym, "memory_row", must_not_run)
    ym.main(args)
    assert (tmp_path / "accuracy.csv").read_text().splitlines() == acc
    with pytest.raises(SystemExit):
        ym.main(["--mode", "quick", "--out", str(tmp_path)])
