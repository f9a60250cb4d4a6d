"""An experiment, not a library feature: is a data-prediction adjoint more accurate than AdjointDEIS-2M?

With ε = (x − α x_θ)/σ the PF-ODE's adjoint d a_x/dt = −a_xᵀ ∂F/∂x has the linear part d log σ/dt instead of
d log α/dt; in λ (h = λ_s − λ_t < 0, U_x = σ² a_xᵀ ∂x_θ/∂x, U_p = σ a_xᵀ ∂x_θ/∂p):

    σ_s a_x(s) = σ_t a_x(t) + ∫_{λ_s}^{λ_t} e^{λ} U_x dλ,    a_p(s) = a_p(t) + ∫_{λ_s}^{λ_t} e^{λ} U_p dλ,

so "AdjointDEIS++-1" is a_x(s) = (σ_t/σ_s) a_x(t) + (α_s/σ_s²)(e^{−h} − 1) U_x(t), a_p(s) = a_p(t) +
(α_s/σ_s)(e^{−h} − 1) U_p(t), and "-2M" replaces U(t) by (1 + 1/(2ρ)) U(t) − U(r)/(2ρ), ρ = (λ_t − λ_r)/h
(the DPM-Solver++(2M) rule; a_xᵀ ∂x_θ/∂x = (a_x − σ v_x)/α from the ε-model's VJP v_x).  The ε form
integrates e^{−λ} V with V = α² a_xᵀ ∂ε/∂x; V is smooth where ∂ε/∂x is (low noise for ε ≈ σx/s²), U where
∂x_θ/∂x is (high noise).  "hybrid" uses the data form for λ_t < 0 and the ε form for λ_t ≥ 0.  Same
recorded states, one VJP per step for all three.  Prints and writes results/gradients/adjoint_parametrisations.csv.

    python benchmarks/adjoint_parametrisations.py [--ref-steps 1000]
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

import adjointlib as al
from adjointlib.models import model_vjp
from adjointlib.steps import ADJOINT_STEPS
from gradbench import RESULTS, SCHEDULE, errors, toy_problem, write_csv
from small_unet import small_unet


def _scalars(t, schedule):
    t = torch.tensor(float(t), dtype=torch.float64)
    return float(schedule.alpha(t)), float(schedule.sigma(t)), float(schedule.lam(t))


def adjoint(model, times, trajectory, cot, z, params, order, form, schedule=SCHEDULE):
    """Recorded-state adjoint of <cot, x_0> in the ε form, the data form or the hybrid (module doc), on ``schedule``
    (any Gaussian path: the forms use only α, σ and λ; chapter 11 runs them on rectified flow)."""
    a_x = cot
    inputs = ([z] if z is not None else []) + list(params)
    acc = [torch.zeros_like(p) for p in inputs]
    prev_eps, prev_data = None, None
    for j in reversed(range(len(times) - 1)):
        t, s = times[j + 1], times[j]
        z_leaf = None if z is None else z.detach().requires_grad_(True)
        leaves = ([z_leaf] if z is not None else []) + list(params)
        _, v_x, v_rest = model_vjp(model, trajectory.states[j + 1], float(t), z_leaf, a_x, leaves)
        (a_t, s_t, l_t), (a_s, s_s, l_s) = _scalars(t, schedule), _scalars(s, schedule)
        h = l_s - l_t
        if form == "eps" or (form == "hybrid" and l_t >= 0.0):
            a_x, increments = ADJOINT_STEPS[order](schedule, a_x, t, s, (v_x, *v_rest), prev=prev_eps)
            prev_eps, prev_data = ((t, (v_x, *v_rest)) if order == 2 else None), None
        else:
            u = [s_t**2 * (a_x - s_t * v_x) / a_t] + [-(s_t**2) * v / a_t for v in v_rest]
            d = u
            if prev_data is not None:
                l_r, u_r = prev_data
                w = 1.0 / (2.0 * (l_t - l_r) / h)
                d = [(1 + w) * ui - w * ur for ui, ur in zip(u, u_r)]
            c = math.expm1(-h)
            a_x = (s_t / s_s) * a_x + (a_s / s_s**2) * c * d[0]
            increments = [(a_s / s_s) * c * di for di in d[1:]]
            prev_data, prev_eps = ((l_t, u) if order == 2 else None), None
        for k, inc in enumerate(increments):
            acc[k] = acc[k] + inc
    grads = dict(x_T=a_x)
    if z is not None:
        grads["z"], acc = acc[0], acc[1:]
    grads["theta"] = torch.cat([g.flatten() for g in acc]) if acc else torch.zeros(0)
    return grads


def run(problem, model, x_T, z, cot, exact, params, sizes):
    rows = []
    for n in sizes:
        with torch.no_grad():
            _, trajectory = al.solve(model, SCHEDULE, x_T, z, n, sampler="dpm-solver-2m", record="states")
        for order in (1, 2):
            for form in ("eps", "data", "hybrid"):
                errs = errors(adjoint(model, al.time_grid(SCHEDULE, n), trajectory, cot, z, params, order, form), exact)
                rows.append(dict(problem=problem, N=n, order="1" if order == 1 else "2M", form=form,
                                 **{f"err_{k}": v for k, v in errs.items()}))
        print(f"{problem} N={n} done", file=sys.stderr, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-steps", type=int, default=1000)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, x_T, mu, cot, exact, _ = toy_problem()
    rows = run("toy", model, x_T, mu, cot, exact, [model.data_std], [10, 20, 40, 80, 160, 320])
    model, z_dim, shape = small_unet(SCHEDULE)
    g = torch.Generator().manual_seed(0)
    x_T, z, cot = (torch.randn(1, *s, generator=g, dtype=torch.float64) for s in (shape, (z_dim,), shape))
    params = list(model.parameters())
    x_ref, z_ref = x_T.clone().requires_grad_(True), z.clone().requires_grad_(True)
    x0 = al.sample(model, SCHEDULE, x_ref, z_ref, steps=args.ref_steps, sampler="dpm-solver-2m", gradient="backprop")
    g_x, g_z, *g_p = torch.autograd.grad((cot * x0).sum(), [x_ref, z_ref, *params])
    reference = dict(x_T=g_x, z=g_z, theta=torch.cat([p.flatten() for p in g_p]))
    rows += run("unet", model, x_T, z, cot, reference, params, [10, 20, 40, 80, 160])
    from pathlib import Path

    write_csv(Path(args.out) / "adjoint_parametrisations.csv", rows)
    print(f"{'problem':7s} {'N':>4s} {'order':5s} {'form':7s} {'err x_T':>9s} {'err z':>9s} {'err θ':>9s}")
    for r in rows:
        print(f"{r['problem']:7s} {r['N']:4d} {r['order']:5s} {r['form']:7s} {r['err_x_T']:9.2e} {r['err_z']:9.2e} "
              f"{r['err_theta']:9.2e}")


if __name__ == "__main__":
    main()
