"""sample(gradient=...): every alternative to the adjoint computes the gradient of the right thing.

backprop = checkpoint bit for bit; reversible = autograd through the reversible sampler (≤ 1e-10)
and its inverse rebuilds x_T; blackbox (torchdiffeq) converges to the exact toy gradient; measured
orders on the Gaussian toy within ±0.15 of theory; NFE counts as documented.  Float64 throughout.
"""
import pytest
import torch

import adjointlib as al
from adjointlib import toy
from conftest import TanhEpsModel, fitted_slope

SCH = al.LinearVP()
B, D, ZD = 3, 4, 2


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, k, generator=g, dtype=torch.float64) for k in (D, ZD, D))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _grads(run, model, x_T, z, cot):
    """Flat gradient of <cot, run(x_T, z)> w.r.t. x_T, z (a tensor or a list) and the model's parameters."""
    x_T = x_T.clone().requires_grad_(True)
    zs = [zi.clone().requires_grad_(True) for zi in z] if isinstance(z, list) else [z.clone().requires_grad_(True)]
    out = run(x_T, zs if isinstance(z, list) else zs[0])
    grads = torch.autograd.grad((cot * out).sum(), [x_T, *zs, *model.parameters()])
    return torch.cat([g.flatten() for g in grads])


def _sampler(model, method, n, **kw):
    return lambda a, b: al.sample(model, SCH, a, b, steps=n, gradient=method, **kw)


SDE = "sde-dpm-solver-1"
CASES = {"ode-1": dict(sampler="ddim"), "ode-2M": dict(sampler="dpm-solver-2m"), "sde": dict(sampler=SDE)}


@pytest.mark.parametrize("case", list(CASES) + ["scheduled-z"])
def test_checkpoint_equals_backprop_bit_for_bit(case):
    model = al.CountingModel(TanhEpsModel(D, ZD))
    x_T, z, cot = _inputs()
    n = 12
    kw = dict(CASES.get(case, dict(sampler="dpm-solver-2m")))
    if kw["sampler"] == SDE:
        kw["noises"] = torch.randn(n, B, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    zz = [z + 0.1 * i for i in range(n)] if case == "scheduled-z" else z
    counts = {}
    grads = {}
    for method in ("backprop", "checkpoint"):
        model.reset()
        grads[method] = _grads(_sampler(model, method, n, **kw), model, x_T, zz, cot)
        counts[method] = (model.forwards, model.vjps)
    assert torch.equal(grads["backprop"], grads["checkpoint"])
    assert counts == {"backprop": (n, n), "checkpoint": (2 * n, n)}


def test_backprop_samples_like_the_adjoint_sampler():
    model = TanhEpsModel(D, ZD)
    x_T, z, _ = _inputs()
    for kw in CASES.values():
        noises = torch.randn(10, B, D, dtype=torch.float64) if kw["sampler"] == SDE else None
        a = al.sample(model, SCH, x_T, z, steps=10, noises=noises, **kw)
        b = al.sample(model, SCH, x_T, z, steps=10, noises=noises, gradient="backprop", **kw)
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", ["ode-1", "ode-2", "sde", "noise-form", "scheduled-z"])
def test_reversible_gradient_is_backprop_through_the_reversible_sampler(case):
    """The O(1)-memory backward pass (inverse steps + VJPs) equals autograd through reversible_solve: to 1e-10
    for the ODE; for the SDE the rebuilt states carry round-off amplified by the SDE's expansion in its frame
    v = αx/σ² (dynamic range α_0σ_T²/(α_Tσ_0²) ≈ 1.5e6 on the linear VP schedule), measured 4e-8 here."""
    model = al.CountingModel(TanhEpsModel(D, ZD))
    x_T, z, cot = _inputs(1)
    n = 20
    times = al.time_grid(SCH, n)
    sampler = {"ode-1": "reversible-ddim", "ode-2": "reversible-midpoint", "sde": "reversible-sde",
               "noise-form": al.ReversibleSampler(base="midpoint", form="noise"),
               "scheduled-z": "reversible-ddim"}[case]
    kw = dict(sampler=sampler)
    if case == "sde":
        kw["noises"] = torch.randn(n, B, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    zz = [z - 0.05 * i for i in range(n)] if case == "scheduled-z" else z
    model.reset()
    fast = _grads(lambda a, b: al.sample(model, SCH, a, b, steps=times, gradient="reversible", **kw),
                  model, x_T, zz, cot)
    per_step = 4 if case in ("ode-2", "noise-form") else 2  # midpoint base: 2 evaluations per increment
    assert (model.forwards, model.vjps) == (2 * per_step * n, per_step * n)
    reference = _grads(lambda a, b: al.reversible_solve(model, SCH, a, b, times, **kw)[0],
                       model, x_T, zz, cot)
    assert _rel(fast, reference) <= (1e-6 if case == "sde" else 1e-10)


@pytest.mark.parametrize("kw", [dict(sampler="reversible-ddim"), dict(sampler="reversible-midpoint"),
                                dict(sampler="reversible-sde")], ids=["ode-1", "ode-2", "sde"])
def test_reversible_inverse_rebuilds_x_T(kw):
    """Forward 80 steps, then the exact inverse steps: x_T back to round-off times the conditioning of the
    inverse (ODE ≤ 1e-10; the reverse SDE forgets x_T, so its inverse amplifies round-off: ≤ 1e-3, measured 4e-5)."""
    model = TanhEpsModel(D, ZD)
    x_T, z, _ = _inputs(2)
    times = al.time_grid(SCH, 80)
    sde = kw["sampler"] == "reversible-sde"
    if sde:
        kw = dict(kw, noises=torch.randn(80, B, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    with torch.no_grad():
        x0, x0_hat = al.reversible_solve(model, SCH, x_T, z, times, **kw)
        back, back_hat = al.reversible_unsolve(model, SCH, x0, x0_hat, z, times, **kw)
    tol = 1e-3 if sde else 1e-10
    assert float((back - x_T).abs().max()) <= tol and float((back_hat - x_T).abs().max()) <= tol
    assert float((x0 - x_T).abs().max()) > 0.1  # it did move


def _toy_errors(method, n, sampler="ddim"):
    g = torch.Generator().manual_seed(0)
    x_T, mu, cot = (torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    model = toy.GaussianEpsModel(SCH, 0.5)
    sde = al.SAMPLERS[sampler].sde if isinstance(sampler, str) else sampler.sde
    if sde:
        j_x, j_mu = toy.sde_jacobians(SCH, SCH.t_max, SCH.t_min, 0.5)
        exact = [j_x * cot, j_mu * cot]
    else:
        exact = list(toy.ode_gradients(SCH, x_T, mu, model.data_std.detach(), cot, SCH.t_max, SCH.t_min))
    x_T.requires_grad_(True), mu.requires_grad_(True)
    x0 = al.sample(model, SCH, x_T, mu, steps=n, sampler=sampler, gradient=method,
                   generator=torch.Generator().manual_seed(1) if sde else None)  # ODE samplers refuse a generator
    wrt = [x_T, mu] if sde else [x_T, mu, model.data_std]
    return [_rel(g, e) for g, e in zip(torch.autograd.grad((cot * x0).sum(), wrt), exact)]


ORDER_CASES = [  # (method, sampler, grid sizes in the asymptotic range, theoretical order)
    ("backprop", "ddim", [40, 80, 160], 1),
    ("backprop", "dpm-solver-2m", [40, 80, 160], 2),
    ("reversible", "reversible-midpoint", [40, 80, 160], 2),
    ("blackbox", "rk4", [10, 20, 40], 4),
    ("backprop", SDE, [160, 320, 640], 1),
]


@pytest.mark.parametrize("method,sampler,sizes,theory", ORDER_CASES,
                         ids=["backprop-1", "backprop-2M", "reversible-2", "blackbox-rk4", "backprop-sde"])
def test_measured_order_on_the_toy(method, sampler, sizes, theory):
    errors = [_toy_errors(method, n, sampler) for n in sizes]
    for k in range(len(errors[0])):
        slope = fitted_slope([1 / n for n in sizes], [e[k] for e in errors])
        assert abs(slope - theory) <= 0.15, (method, k, slope, errors)


def test_blackbox_dopri5_reaches_the_exact_gradient():
    errors = _toy_errors("blackbox", 1, sampler=al.TorchdiffeqSampler("dopri5", rtol=1e-9, atol=1e-9))
    assert max(errors) < 1e-6, errors


def test_reversible_sde_is_exact_on_gaussian_data():
    """SDE-DPM-Solver++1 (the reversible SDE base) has the exact Jacobian for Gaussian data, on any grid."""
    assert max(_toy_errors("reversible", 15, sampler="reversible-sde")) < 1e-10


def test_reversible_sde_strong_order_one():
    """Same Brownian path (coarse noises summed from a 4096-step path in the μ² clock) against a fine
    backprop SDE-DPM-Solver-1 solve: strong order 1 of the gradient (finer grids enter the coupling's
    irregular regime, see chapter 07)."""
    model = TanhEpsModel(D, ZD)
    x_T, z, cot = _inputs(4)
    fine = al.time_grid(SCH, 4096)
    xi = torch.randn(4096, B, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    reference = _grads(lambda a, b: al.solve(model, SCH, a, b, fine, sampler=SDE, noises=xi, record="none")[0],
                       model, x_T, z, cot)
    strides = [64, 32, 16]
    errors = []
    for stride in strides:
        grid = fine[::stride]
        noises = al.BrownianPath.from_noises(SCH, fine, xi, clock="data").noises(grid)
        errors.append(_rel(_grads(_sampler(model, "reversible", grid, sampler="reversible-sde", noises=noises),
                                  model, x_T, z, cot), reference))
    assert abs(fitted_slope(strides, errors) - 1.0) <= 0.15, errors


def test_argument_errors():
    model = TanhEpsModel(D, ZD)
    x_T, z, _ = _inputs()
    with pytest.raises(ValueError, match="unknown gradient method"):
        al.sample(model, SCH, x_T, z, steps=4, gradient="magic")
    with pytest.raises(TypeError, match="gradient must be"):
        al.sample(model, SCH, x_T, z, steps=4, gradient=dict(steps=8))
    with pytest.raises(ValueError, match="unknown sampler"):
        al.sample(model, SCH, x_T, z, steps=4, sampler="magic")
    # the adjoint's options belong to its value only; each method refuses a sampler it cannot differentiate
    with pytest.raises(TypeError):
        al.Backprop(steps=8)
    for sampler, method in (("rk4", "adjoint"), ("rk4", "checkpoint"), ("reversible-ddim", "adjoint"),
                            ("ddim", "reversible"), ("ddim", "blackbox"), (SDE, "blackbox")):
        with pytest.raises(ValueError, match=f"gradient='{method}' differentiates"):
            al.sample(model, SCH, x_T, z, steps=4, sampler=sampler, gradient=method)
    with pytest.raises(ValueError, match="per-step"):
        al.sample(model, SCH, x_T, [z] * 4, steps=4, sampler="rk4", gradient="blackbox")
    with pytest.raises(ValueError, match="coupling"):
        al.ReversibleSampler(coupling=1.5)
    with pytest.raises(ValueError, match="Euler base only"):
        al.ReversibleSampler(base="midpoint", sde=True)
    with pytest.raises(ValueError, match="form"):
        al.ReversibleSampler(form="score")


def test_compare_harness_runs_every_method_with_documented_counts():
    from adjointlib.gradients.compare import METHODS, SDE_METHODS, gradient_with_counts

    model = TanhEpsModel(D, ZD)
    x_T, z, cot = _inputs(5)
    n = 4
    per_step = {"adjoint": (1, 1, 1), "backprop": (1, 0, 1), "checkpoint": (1, 1, 1), "blackbox-rk4": (4, 4, 4),
                "reversible-1": (2, 2, 2), "reversible-2": (4, 4, 4)}
    for method in METHODS:
        grads, counts = gradient_with_counts(model, SCH, x_T, z, cot, method, n)
        direct = _grads(lambda a, b: al.sample(model, SCH, a, b, steps=n, **METHODS[method]), model, x_T, z, cot)
        assert torch.allclose(torch.cat([grads["x_T"].flatten(), grads["z"].flatten(), grads["theta"]]), direct,
                              rtol=1e-12, atol=1e-14), method  # the harness runs exactly the labelled method
        key = next((k for k in per_step if method.startswith(k)), None)
        if key is not None:
            assert (counts["forward"], counts["backward_forward"], counts["backward_vjp"]) == tuple(
                n * k for k in per_step[key]), (method, counts)
    noises = torch.randn(n, B, D, dtype=torch.float64)
    for method in SDE_METHODS:
        grads, _ = gradient_with_counts(model, SCH, x_T, z, cot, method, n, sde=True, noises=noises)
        assert grads["theta"].numel() == sum(p.numel() for p in model.parameters())
