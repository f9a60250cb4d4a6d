"""Measured convergence orders against the exact Gaussian oracle (adjointlib.toy), float64.

Fitted slope of log(relative error) against log(h), h ∝ 1/N on λ-uniform grids, must be
within ±0.15 of the theoretical order (Thm 2.1 with the O(h^k) erratum fixed).  The grids are
chosen in the asymptotic range of each case (the linear VP schedule on [1e-3, 1] has a factor
α_0/α_T ≈ 150 in the linear term of the adjoint, so coarse grids are pre-asymptotic).
"""
import pytest
import torch

import adjointlib as al
from adjointlib import toy
from conftest import fitted_slope

SCH = al.LinearVP()
T_START, T_END = SCH.t_max, SCH.t_min


def _problem(seed=0, b=2, d=3):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(b, d, generator=g, dtype=torch.float64)
    mu = torch.randn(b, d, generator=g, dtype=torch.float64)
    cot = torch.randn(b, d, generator=g, dtype=torch.float64)
    return x_T, mu, cot


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _sampler(order, sde):
    """The sampler of the case: SDE-DPM-Solver-1 for the SDE (any adjoint order), else DDIM or DPM-Solver-2M."""
    return "sde-dpm-solver-1" if sde else {1: "ddim", 2: "dpm-solver-2m"}[order]


def _adjoint_errors(order, sde, grid_sizes):
    x_T, mu, cot = _problem()
    model = toy.GaussianEpsModel(SCH, data_std=0.5)
    if sde:
        j_x, j_mu = toy.sde_jacobians(SCH, T_START, T_END, 0.5)
        exact = (j_x * cot, j_mu * cot, None)
    else:
        exact = toy.ode_gradients(SCH, x_T, mu, model.data_std.detach(), cot, T_START, T_END)
    errors = {"x_T": [], "z": [], "theta": []}
    for n in grid_sizes:
        x_T_ = x_T.clone().requires_grad_(True)
        mu_ = mu.clone().requires_grad_(True)
        x0 = al.sample(model, SCH, x_T_, mu_, steps=n, sampler=_sampler(order, sde), gradient=al.Adjoint(order=order),
                       generator=torch.Generator().manual_seed(1) if sde else None)
        g_x, g_mu, g_theta = torch.autograd.grad((cot * x0).sum(), [x_T_, mu_, model.data_std])
        errors["x_T"].append(_rel(g_x, exact[0]))
        errors["z"].append(_rel(g_mu, exact[1]))
        if not sde:
            errors["theta"].append(_rel(g_theta, exact[2]))
    return errors


CASES = [  # (order, sde, grid sizes in the asymptotic range)
    (1, False, [320, 640, 1280]),
    (2, False, [160, 320, 640]),
    (1, True, [640, 1280, 2560]),
    (2, True, [160, 320, 640]),
]


@pytest.mark.parametrize("order,sde,grid_sizes", CASES, ids=["ode-1", "ode-2M", "sde-1", "sde-2M"])
def test_adjoint_deis_order(order, sde, grid_sizes):
    errors = _adjoint_errors(order, sde, grid_sizes)
    hs = [1.0 / n for n in grid_sizes]
    for name, errs in errors.items():
        if not errs:
            continue
        slope = fitted_slope(hs, errs)
        assert abs(slope - order) <= 0.15, f"{name}: slope {slope:.3f}, errors {errs}"


@pytest.mark.parametrize("order,grid_sizes", [(1, [40, 80, 160]), (2, [40, 80, 160])])
def test_forward_ode_order(order, grid_sizes):
    x_T, mu, _ = _problem()
    model = toy.GaussianEpsModel(SCH, 0.5)
    exact = toy.flow(SCH, x_T, T_START, T_END, mu, 0.5)
    errs = []
    with torch.no_grad():
        for n in grid_sizes:
            x0, _ = al.solve(model, SCH, x_T, mu, al.time_grid(SCH, n), sampler=_sampler(order, False),
                             record="none")
            errs.append(_rel(x0, exact))
    slope = fitted_slope([1.0 / n for n in grid_sizes], errs)
    assert abs(slope - order) <= 0.15, (slope, errs)


def test_forward_sde_strong_order_one():
    """SDE-DPM-Solver-1 with additive noise: strong order 1 against a 4096-step solve on the same path."""
    x_T, mu, _ = _problem(b=64, d=2)
    model = toy.GaussianEpsModel(SCH, 0.5)
    fine = al.time_grid(SCH, 4096)
    path = al.BrownianPath(SCH, fine, x_T.shape, generator=torch.Generator().manual_seed(3))

    def run(stride):
        grid = fine[::stride]
        with torch.no_grad():
            return al.solve(model, SCH, x_T, mu, grid, sampler="sde-dpm-solver-1", noises=path.noises(grid),
                            record="none")[0]

    reference = run(1)
    strides = [64, 32, 16]
    errs = [_rel(run(s), reference) for s in strides]
    slope = fitted_slope([float(s) for s in strides], errs)
    assert abs(slope - 1.0) <= 0.15, (slope, errs)
