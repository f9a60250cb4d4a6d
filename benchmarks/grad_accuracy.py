"""Relative gradient error against network evaluations for every gradient method, ODE and SDE.

Problems: (a) the Gaussian toy (exact gradients w.r.t. x_T, z = μ, θ = s; SDE: exact path-independent
Jacobians), (b) a small random-weight diffusers UNet2DModel (benchmarks/small_unet.py), float64,
against a fine-grid reference: backprop through DPM-Solver-2M on ``--ref-steps`` steps (ODE; its own
error is estimated from the same at half the steps) and backprop through SDE-DPM-Solver-1 on a
``--fine-sde``-step Brownian path (SDE; coarse grids get the same path's summed increments in their
clock, ``BrownianPath.from_noises``).  NFE = forward evaluations of sampling + forward evaluations and VJPs of
the backward pass, counted by ``CountingModel``.  Writes results/gradients/accuracy.csv,
orders.csv, accuracy_meta.json and accuracy_{toy,unet}.png (atomically).

    python benchmarks/grad_accuracy.py [--parts toy-ode toy-sde unet-ode unet-sde] [--quick]
Target (issue 4): each method's measured order matches theory within ±0.15.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import adjointlib as al
from adjointlib.gradients.compare import METHODS, SDE_METHODS, THEORETICAL_ORDER, gradient_with_counts
from gradbench import RESULTS, SCHEDULE, errors, fit_window, fitted_slope, save_figure, toy_problem, write_csv, \
    write_json
from small_unet import small_unet

ODE_METHODS = [m for m in METHODS if m != "blackbox-dopri5"]
QUANTITIES = ("x_T", "z", "theta")
PARTS = ["toy-ode", "toy-sde", "unet-ode", "unet-sde"]


def _row(problem, sde, method, steps, tol, counts, errs):
    return dict(problem=problem, process="SDE" if sde else "ODE", method=method, steps=steps, tol=tol,
                nfe_forward=counts["forward"], nfe_backward_forward=counts["backward_forward"],
                nfe_backward_vjp=counts["backward_vjp"], nfe_total=counts["total"],
                **{f"err_{q}": errs.get(q, "") for q in QUANTITIES})


def _sweep(problem, model, x_T, z, cot, exact, sizes, tolerances, params, log):
    rows = []
    for method in ODE_METHODS:
        for n in sizes:
            grads, counts = gradient_with_counts(model, SCHEDULE, x_T, z, cot, method, n, params=params)
            rows.append(_row(problem, False, method, n, "", counts, errors(grads, exact)))
        log(f"{problem} ODE {method} done")
    for tol in tolerances:
        grads, counts = gradient_with_counts(model, SCHEDULE, x_T, z, cot, "blackbox-dopri5", 1, params=params,
                                             sampler=al.TorchdiffeqSampler("dopri5", rtol=tol, atol=tol))
        rows.append(_row(problem, False, "blackbox-dopri5", "", tol, counts, errors(grads, exact)))
    log(f"{problem} ODE blackbox-dopri5 done")
    return rows


def run_toy(quick, log, parts):
    model, x_T, mu, cot, exact_ode, exact_sde = toy_problem()
    sizes = [10, 20, 40, 80, 160] if quick else [10, 20, 40, 80, 160, 320, 640, 1280]
    tolerances = [1e-3, 1e-5] if quick else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    rows = []
    if "toy-ode" in parts:
        rows += _sweep("toy", model, x_T, mu, cot, exact_ode, sizes, tolerances, [model.data_std], log)
    if "toy-sde" not in parts:
        return rows, {}
    sde_sizes = [20, 40, 80, 160] if quick else [20, 40, 80, 160, 320, 640, 1280, 2560]
    for method in SDE_METHODS:
        for n in sde_sizes:
            noises = torch.randn(n, *x_T.shape, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
            grads, counts = gradient_with_counts(model, SCHEDULE, x_T, mu, cot, method, n, sde=True, noises=noises,
                                                 params=[])
            rows.append(_row("toy", True, method, n, "", counts, errors(grads, exact_sde)))
        log(f"toy SDE {method} done")
    return rows, {}


def run_unet(quick, log, ref_steps, fine_sde, parts):
    model, z_dim, shape = small_unet(SCHEDULE)
    g = torch.Generator().manual_seed(0)
    x_T, z, cot = (torch.randn(1, *s, generator=g, dtype=torch.float64) for s in (shape, (z_dim,), shape))
    meta, rows = {}, []
    if "unet-ode" in parts:
        rows, meta = _unet_ode(model, x_T, z, cot, quick, log, ref_steps)
    if "unet-sde" in parts:
        r, m = _unet_sde(model, x_T, z, cot, quick, log, fine_sde)
        rows, meta = rows + r, dict(meta, **m)
    return rows, meta


def _unet_ode(model, x_T, z, cot, quick, log, ref_steps):
    meta = {}
    reference, _ = gradient_with_counts(model, SCHEDULE, x_T, z, cot, "backprop-2M", ref_steps)
    half, _ = gradient_with_counts(model, SCHEDULE, x_T, z, cot, "backprop-2M", ref_steps // 2)
    meta["ode_reference"] = dict(method="backprop-2M", steps=ref_steps, estimated_rel_error={
        q: v / 3 for q, v in errors(half, reference).items()})  # order 2: e(N) ≈ (e(N/2) − e(N))/3
    log(f"unet ODE reference done: {meta['ode_reference']}")
    sizes = [10, 20, 40] if quick else [10, 20, 40, 80, 160, 320]
    tolerances = [1e-3] if quick else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
    return _sweep("unet", model, x_T, z, cot, reference, sizes, tolerances, None, log), meta


def _unet_sde(model, x_T, z, cot, quick, log, fine_sde):
    meta, rows = {}, []
    fine = al.time_grid(SCHEDULE, fine_sde)
    xi = torch.randn(fine_sde, *x_T.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    reference, _ = gradient_with_counts(model, SCHEDULE, x_T, z, cot, "backprop-1", fine, sde=True, noises=xi)
    half_noises = al.BrownianPath.from_noises(SCHEDULE, fine, xi, clock="noise").noises(fine[::2])
    half, _ = gradient_with_counts(model, SCHEDULE, x_T, z, cot, "backprop-1", fine[::2], sde=True, noises=half_noises)
    meta["sde_reference"] = dict(method="backprop-1 (SDE-DPM-Solver-1)", steps=fine_sde, estimated_rel_error={
        q: v for q, v in errors(half, reference).items()})  # strong order 1: e(N) ≈ e(N/2) − e(N)
    log(f"unet SDE reference done: {meta['sde_reference']}")
    sde_sizes = [16, 32] if quick else [16, 32, 64, 128, 256]
    for method in SDE_METHODS:
        form = "data" if method.startswith("reversible") else "noise"
        for n in sde_sizes:
            grid = fine[:: fine_sde // n]
            noises = al.BrownianPath.from_noises(SCHEDULE, fine, xi, clock=form).noises(grid)
            grads, counts = gradient_with_counts(model, SCHEDULE, x_T, z, cot, method, grid, sde=True, noises=noises)
            rows.append(_row("unet", True, method, n, "", counts, errors(grads, reference)))
        log(f"unet SDE {method} done")
    return rows, meta


def orders(rows):
    out = []
    keys = sorted({(r["problem"], r["process"], r["method"]) for r in rows if r["steps"] != ""})
    for problem, process, method in keys:
        sel = [r for r in rows if (r["problem"], r["process"], r["method"]) == (problem, process, method)]
        # SDE: strong order 1, except on the toy, whose VJPs do not depend on the path (an ODE for the adjoint)
        theory = THEORETICAL_ORDER[method] if process == "ODE" or problem == "toy" else 1
        for q in QUANTITIES:
            if sel[0][f"err_{q}"] == "":
                continue
            all_errs = [r[f"err_{q}"] for r in sel]
            sizes, errs = fit_window([r["steps"] for r in sel], all_errs)
            slope = fitted_slope(sizes, errs) if len(sizes) >= 3 else float("nan")
            verdict = "exact" if max(all_errs) <= 1e-10 else ("PASS" if abs(slope - theory) <= 0.15 else "FAIL")
            out.append(dict(problem=problem, process=process, method=method, quantity=q,
                            fit_steps="/".join(map(str, sizes)), slope=round(slope, 3), theory=theory,
                            verdict=verdict))
    return out


def plot(rows, problem, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), sharex="row")
    palette = {m: plt.cm.tab20(i) for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    for i, process in enumerate(("ODE", "SDE")):
        sel = [r for r in rows if r["problem"] == problem and r["process"] == process]
        for j, q in enumerate(QUANTITIES):
            ax = axes[i, j]
            for method in dict.fromkeys(r["method"] for r in sel):
                pts = [(r["nfe_total"], r[f"err_{q}"]) for r in sel if r["method"] == method and r[f"err_{q}"] != ""]
                pts = [(float(n), max(float(e), 1e-16)) for n, e in pts]
                if pts:
                    style = "--" if "recomputed" in method else ("-." if method.startswith("checkpoint") else "-")
                    ax.loglog(*zip(*pts), style, marker="o", ms=3, color=palette[method], label=method)
            ax.set_title(f"{problem} {process}: dL/d{q}")
            ax.set_xlabel("network evaluations (forward + VJP, both passes)")
            ax.set_ylabel("relative error")
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS,
                        help="run only these parts; the other parts' rows are kept from the existing accuracy.csv")
    parser.add_argument("--quick", action="store_true", help="small grids (smoke test)")
    parser.add_argument("--ref-steps", type=int, default=2000)
    parser.add_argument("--fine-sde", type=int, default=4096)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--replot", action="store_true", help="only redraw the figures from accuracy.csv")
    args = parser.parse_args()
    if args.replot:
        import csv
        from pathlib import Path

        with open(Path(args.out) / "accuracy.csv") as f:
            rows = list(csv.DictReader(f))
        for problem in ("toy", "unet"):
            plot(rows, problem, Path(args.out) / f"accuracy_{problem}.png")
        return
    torch.set_num_threads(1)
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    from pathlib import Path

    out = Path(args.out)
    rows, meta = [], dict(toy={}, unet={})
    if set(args.parts) != set(PARTS) and (out / "accuracy.csv").exists():  # keep the other parts' rows
        import csv
        import json

        with open(out / "accuracy.csv") as f:
            old = list(csv.DictReader(f))
        for r in old:
            if f"{r['problem']}-{r['process'].lower()}" not in args.parts:
                for k in ("steps", "nfe_forward", "nfe_backward_forward", "nfe_backward_vjp", "nfe_total"):
                    r[k] = int(r[k]) if r[k] != "" else ""
                for k in ("tol",) + tuple(f"err_{q}" for q in QUANTITIES):
                    r[k] = float(r[k]) if r[k] != "" else ""
                rows.append(r)
        old_meta = json.loads((out / "accuracy_meta.json").read_text())
        meta["unet"] = {k: v for k, v in old_meta.get("unet", {}).items()
                        if not ((k == "ode_reference" and "unet-ode" in args.parts)
                                or (k == "sde_reference" and "unet-sde" in args.parts))}
    r, _ = run_toy(args.quick, log, args.parts)
    rows += r
    if {"unet-ode", "unet-sde"} & set(args.parts):
        r, m = run_unet(args.quick, log, args.ref_steps // (10 if args.quick else 1),
                        args.fine_sde // (8 if args.quick else 1), args.parts)
        rows += r
        meta["unet"].update(m)
    order = {(p, q): i for i, (p, q) in enumerate([("toy", "ODE"), ("toy", "SDE"), ("unet", "ODE"), ("unet", "SDE")])}
    rows.sort(key=lambda r: order[r["problem"], r["process"]])  # stable: keeps each part's method order
    order_rows = orders(rows)
    write_csv(out / "accuracy.csv", rows)
    write_csv(out / "orders.csv", order_rows)
    write_json(out / "accuracy_meta.json", dict(meta, quick=args.quick, ref_steps=args.ref_steps,
                                                fine_sde=args.fine_sde))
    for problem in ("toy", "unet"):
        plot(rows, problem, out / f"accuracy_{problem}.png")
    print(f"{'problem':7s} {'proc':4s} {'method':24s} {'qty':6s} {'fit N':16s} {'slope':>6s} {'theory':>6s}  verdict")
    for o in order_rows:
        print(f"{o['problem']:7s} {o['process']:4s} {o['method']:24s} {o['quantity']:6s} {o['fit_steps']:16s} "
              f"{o['slope']:6.2f} {o['theory']:6d}  {o['verdict']}")
    log("done")


if __name__ == "__main__":
    main()
