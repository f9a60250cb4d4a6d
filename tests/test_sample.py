"""sample(): AdjointDEIS gradients against autograd through finely discretised samplers, gradcheck,
decoupled grids, recorded vs recomputed states, per-step z schedules, and devices."""
import math

import pytest
import torch

import adjointlib as al
from adjointlib import toy
from conftest import TanhEpsModel, fitted_slope

SCH = al.LinearVP()
B, D, ZD = 3, 4, 2
SAMPLER = {1: "ddim", 2: "dpm-solver-2m"}  # the ODE sampler of each order
SDE = "sde-dpm-solver-1"


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(B, ZD, generator=g, dtype=torch.float64),
            torch.randn(B, D, generator=g, dtype=torch.float64))


def _flat(grads):
    return torch.cat([g.flatten() for g in grads])


def _grads_of(run, model, x_T, z, cot):
    """Gradients of <cot, run(x_T, z)> w.r.t. x_T, z and every model parameter."""
    x_T, z = x_T.clone().requires_grad_(True), z.clone().requires_grad_(True)
    return _flat(torch.autograd.grad((cot * run(x_T, z)).sum(), [x_T, z, *model.parameters()]))


def _autograd_through_solver(model, x_T, z, cot, times, **kw):
    return _grads_of(lambda a, b: al.solve(model, SCH, a, b, times, record="none", **kw)[0], model, x_T, z, cot)


@pytest.fixture(scope="module")
def ode_reference():
    """Autograd through DPM-Solver-2M with 4000 steps: the continuous gradient to ~1e-6 relative."""
    model = TanhEpsModel(D, ZD)
    x_T, z, cot = _inputs()
    return model, _autograd_through_solver(model, x_T, z, cot, al.time_grid(SCH, 4000), sampler="dpm-solver-2m")


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("record", [True, False], ids=["recorded", "recomputed"])
def test_ode_gradients_converge_to_fine_autograd(ode_reference, order, record):
    model, reference = ode_reference
    x_T, z, cot = _inputs()
    sizes = [100, 200, 400]
    errors = []
    for n in sizes:
        grads = _grads_of(lambda a, b: al.sample(model, SCH, a, b, steps=n, sampler=SAMPLER[order],
                                                 gradient=al.Adjoint(recompute=not record)),
                          model, x_T, z, cot)
        errors.append(float((grads - reference).norm() / reference.norm()))
    slope = fitted_slope([1 / n for n in sizes], errors)
    assert abs(slope - order) <= 0.15, (slope, errors)


def test_sde_gradients_approach_fine_autograd_on_the_same_path():
    """Same Brownian path forwards and backwards: the adjoint's error shrinks as the grid is refined."""
    model = TanhEpsModel(D, ZD)
    x_T, z, cot = _inputs(1)
    fine = al.time_grid(SCH, 4096)
    path = al.BrownianPath(SCH, fine, x_T.shape, generator=torch.Generator().manual_seed(5))
    reference = _autograd_through_solver(model, x_T, z, cot, fine, sampler=SDE, noises=path.noises(fine))
    errors = []
    for stride in (32, 8, 2):
        grid = fine[::stride]
        grads = _grads_of(lambda a, b: al.sample(model, SCH, a, b, steps=grid, sampler=SDE, noises=path.noises(grid)),
                          model, x_T, z, cot)
        errors.append(float((grads - reference).norm() / reference.norm()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02, errors


def test_gradcheck_small_problem():
    """gradcheck of x_T and z on a short interval; at N = 200 the optimise-then-discretise gap to the
    discrete Jacobian (O(h²) for 2M, about 1e-5 relative here) is below the tolerance."""
    model = TanhEpsModel(2, 2)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 2, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(1, 2, generator=g, dtype=torch.float64, requires_grad=True)
    fn = lambda a, b: al.sample(model, SCH, a, b, steps=200, sampler="dpm-solver-2m",  # noqa: E731
                                t_start=0.6, t_end=0.2)
    assert torch.autograd.gradcheck(fn, (x_T, z), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("order", [1, 2])
def test_decoupled_grid_matches_oracle(order):
    """M ≠ N: the adjoint on its own grid; states off the sampling grid come from recorded states."""
    model = toy.GaussianEpsModel(SCH, 0.5)
    g = torch.Generator().manual_seed(0)
    x_T, mu, cot = (torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    exact = toy.ode_gradients(SCH, x_T, mu, model.data_std.detach(), cot, SCH.t_max, SCH.t_min)
    x_T.requires_grad_(True), mu.requires_grad_(True)
    x0 = al.sample(model, SCH, x_T, mu, steps=2000, sampler="dpm-solver-2m",
                   gradient=al.Adjoint(order=order, steps=777 if order == 2 else 1500))
    g_x, g_mu = torch.autograd.grad((cot * x0).sum(), [x_T, mu])
    tol = 2e-3 if order == 2 else 0.05
    assert float((g_x - exact[0]).norm() / exact[0].norm()) < tol
    assert float((g_mu - exact[1]).norm() / exact[1].norm()) < tol


def test_sde_off_grid_states_use_recorded_noise():
    """SDE with M ≠ N: adjoint grid points between sampling points still give the gradient of the
    recorded path (θ-gradients depend on the states, unlike the toy's x_T gradient)."""
    model = TanhEpsModel(D, ZD)
    x_T, z, cot = _inputs(2)
    noises = torch.randn(400, *x_T.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = _grads_of(lambda a, b: al.sample(model, SCH, a, b, steps=400, sampler=SDE, noises=noises),
                     model, x_T, z, cot)
    finer = _grads_of(lambda a, b: al.sample(model, SCH, a, b, steps=400, sampler=SDE, noises=noises,
                                             gradient=al.Adjoint(steps=1200)), model, x_T, z, cot)
    assert float((same - finer).norm() / same.norm()) < 0.05


def test_scheduled_z_gradients_sum_to_constant_z_gradient():
    """Thm 2.2: with z_i = z for every step the per-step gradients add up to the constant-z gradient."""
    model = TanhEpsModel(D, ZD)
    x_T, z, cot = _inputs(3)
    n = 16
    zs = [z.clone().requires_grad_(True) for _ in range(n)]
    x0 = al.sample(model, SCH, x_T, zs, steps=n)
    per_step = torch.autograd.grad((cot * x0).sum(), zs)
    z_const = z.clone().requires_grad_(True)
    (constant,) = torch.autograd.grad((cot * al.sample(model, SCH, x_T, z_const, steps=n)).sum(), [z_const])
    assert torch.allclose(sum(per_step), constant, atol=1e-12)


@pytest.mark.parametrize("sampler, errors_at_32_64, order", [("ddim", (0.15, 0.07), 1), ("dpm-solver-2m", (0.06, 0.015), 2)])
def test_each_step_gets_the_gradient_of_its_own_interval(sampler, errors_at_32_64, order):
    """Each z_i's gradient is the sensitivity of x_0 to z on its own interval [t_{i+1}, t_i] only: against the exact
    oracle (the toy's closed-form flow composed interval by interval, one μ_i per interval, differentiated by
    autograd) the stacked per-step gradients converge at the adjoint's order.  Summing every step's increment into
    z_0 (or spreading the total evenly) would leave an O(1) error."""
    model = toy.GaussianEpsModel(SCH, data_std=0.5)
    g = torch.Generator().manual_seed(3)
    x_T, mu, cot = (torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(3))
    errors = []
    for n in (32, 64):
        times = al.time_grid(SCH, n)
        exact_mus = [mu.clone().requires_grad_(True) for _ in range(n)]
        x = x_T
        for i in range(n):
            x = toy.flow(SCH, x, float(times[i]), float(times[i + 1]), exact_mus[i], 0.5)
        exact = torch.stack(torch.autograd.grad((cot * x).sum(), exact_mus))
        mus = [mu.clone().requires_grad_(True) for _ in range(n)]
        x0 = al.sample(model, SCH, x_T, mus, steps=n, sampler=sampler)
        got = torch.stack(torch.autograd.grad((cot * x0).sum(), mus))
        errors.append(float((got - exact).norm() / exact.norm()))
    assert errors[0] < errors_at_32_64[0] and errors[1] < errors_at_32_64[1], errors
    assert abs(math.log2(errors[0] / errors[1]) - order) < 0.35, errors


def test_scheduled_z_piecewise_constant_converges():
    """z piecewise constant on 8 cells, each solved with 250 steps: AdjointDEIS-2M keeps its order
    inside a cell (history restarted only where z changes) and matches autograd of a 4×-finer solve."""
    model = TanhEpsModel(D, ZD)
    x_T, z, cot = _inputs(4)
    cells, per_cell = 8, 250

    def grads(steps_per_cell, sampler):
        zs = [(z + 0.1 * i).requires_grad_(True) for i in range(cells)]
        schedule = [zs[i // steps_per_cell] for i in range(cells * steps_per_cell)]
        x0 = sampler(schedule, al.time_grid(SCH, cells * steps_per_cell))
        return _flat(torch.autograd.grad((cot * x0).sum(), zs))

    reference = grads(4 * per_cell, lambda zs, times: al.solve(model, SCH, x_T, zs, times, sampler="dpm-solver-2m",
                                                               record="none")[0])
    adjoint = grads(per_cell, lambda zs, times: al.sample(model, SCH, x_T, zs, steps=times, sampler="dpm-solver-2m"))
    assert float((adjoint - reference).norm() / reference.norm()) < 1e-3


def test_integer_class_labels_are_passed_through():
    class LabelModel(torch.nn.Module):
        def forward(self, x, t, z):
            return 0.8 * x + 0.1 * z[:, None].to(x.dtype)

    x_T = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    x0 = al.sample(LabelModel(), SCH, x_T, torch.tensor([0, 1]), steps=5)
    (g,) = torch.autograd.grad(x0.sum(), [x_T])
    x_T_ref = x_T.detach().clone().requires_grad_(True)  # the same labels as a float condition: the same numbers
    x0_ref = al.sample(LabelModel(), SCH, x_T_ref, torch.tensor([0.0, 1.0], dtype=torch.float64), steps=5)
    (g_ref,) = torch.autograd.grad(x0_ref.sum(), [x_T_ref])
    assert torch.equal(x0, x0_ref) and torch.equal(g, g_ref)


def test_parameter_gradients_only_for_requires_grad():
    model = TanhEpsModel(D, ZD)
    model.A.requires_grad_(False)
    x_T, z, _ = _inputs()
    x0 = al.sample(model, SCH, x_T.requires_grad_(True), z, steps=5)
    x0.sum().backward()
    assert model.A.grad is None and model.B.grad is not None and x_T.grad is not None


@pytest.mark.parametrize("sde", [False, True])
def test_devices_and_float32(device, sde):
    """float32 on every available device gives float32 gradients on that device equal to the float64 CPU gradient to
    float32 round-off (1e-4 relative; measured ~1e-6 on the CPU), with the same noises for the SDE."""
    model64 = TanhEpsModel(D, ZD)
    model = TanhEpsModel(D, ZD).float().to(device)  # the float64 model's weights, rounded once
    x_T, z, cot = (t.float().to(device) for t in _inputs())
    noises64 = torch.randn(20, *x_T.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) if sde \
        else None
    sampler = SDE if sde else "ddim"

    def grad(model, x_T, z, cot, noises):
        x_T = x_T.clone().requires_grad_(True)
        x0 = al.sample(model, SCH, x_T, z, steps=20, sampler=sampler, noises=noises)
        return torch.autograd.grad((cot * x0).sum(), [x_T])[0]

    g = grad(model, x_T, z, cot, None if noises64 is None else noises64.float().to(device))
    assert g.device == x_T.device and g.dtype == torch.float32
    reference = grad(model64, *_inputs(), noises64)
    assert float((g.cpu().double() - reference).norm() / reference.norm()) < 1e-4