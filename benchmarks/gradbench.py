"""Shared pieces of the gradient benchmarks: problems, reference gradients, slope fits, atomic output."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch

import adjointlib as al
from adjointlib import toy
from adjointlib.atomic import atomic_path, write_text_atomic

RESULTS = Path(__file__).resolve().parent.parent / "results" / "gradients"
SCHEDULE = al.LinearVP()


def toy_problem(seed=0, b=2, d=3):
    """Gaussian toy (data std 0.5): (model, x_T, μ, c, exact ODE grads (x_T, z, θ), exact SDE grads (x_T, z))."""
    g = torch.Generator().manual_seed(seed)
    x_T, mu, cot = (torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(3))
    model = toy.GaussianEpsModel(SCHEDULE, 0.5)
    ode = toy.ode_gradients(SCHEDULE, x_T, mu, model.data_std.detach(), cot, SCHEDULE.t_max, SCHEDULE.t_min)
    j_x, j_mu = toy.sde_jacobians(SCHEDULE, SCHEDULE.t_max, SCHEDULE.t_min, 0.5)
    exact_ode = dict(x_T=ode[0], z=ode[1], theta=ode[2].reshape(1))
    exact_sde = dict(x_T=j_x * cot, z=j_mu * cot)
    return model, x_T, mu, cot, exact_ode, exact_sde


def rel(a, b):
    return float((a - b).norm() / b.norm())


def errors(grads, exact):
    return {k: rel(grads[k], exact[k]) for k in exact}


def fitted_slope(sizes, errs):
    """Least-squares slope of log(error) against log(1/N)."""
    xs = [-math.log(n) for n in sizes]
    ys = [math.log(e) for e in errs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def fit_window(sizes, errs, floor=1e-10, points=3):
    """The `points` largest N whose error is above `floor` (round-off), as (sizes, errors)."""
    kept = [(n, e) for n, e in zip(sizes, errs) if e > floor]
    kept = kept[-points:]
    return [n for n, _ in kept], [e for _, e in kept]


def write_csv(path: Path, rows: list[dict]) -> None:
    """rows (dicts) as CSV, atomically; the columns are the union of the rows' keys, in order of appearance."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)


def peak_bytes(device) -> int:
    """Peak memory so far: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU this process's peak resident set
    (VmHWM of /proc/self/status, Linux).  Not ``getrusage``'s ru_maxrss: Linux keeps it across exec, so a child
    started from a large parent reports the parent's peak and every smaller child peak reads as 0."""
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
