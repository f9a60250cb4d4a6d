"""Flow-matching models: the rectified-flow schedule, the velocity adapter, exact-oracle orders, every gradient
method, and equality with diffusers' FlowMatchEulerDiscreteScheduler loop (issue 15 item 3;
derivations/gaussian_paths.py)."""
import math

import numpy as np
import pytest
import torch

import adjointlib as al
from adjointlib import toy

F64 = torch.float64


def _slope(ns, errors):
    """Fitted order: −slope of log error against log N."""
    return -float(np.polyfit(np.log(ns), np.log(errors), 1)[0])


def test_rectified_flow_schedule_is_the_straight_path():
    schedule = al.RectifiedFlow()
    t = torch.tensor([0.01, 0.3, 0.5, 0.9, 0.99], dtype=F64, requires_grad=True)
    assert torch.allclose(schedule.alpha(t), 1 - t) and torch.allclose(schedule.sigma(t), t)
    lam = schedule.lam(t)
    assert torch.allclose(lam, torch.log((1 - t) / t))
    assert torch.allclose(schedule.t_of_lam(lam), t, atol=1e-15)
    d_lam = torch.autograd.grad(lam.sum(), t)[0]
    t = t.detach()
    assert torch.allclose(schedule.f(t), -1 / (1 - t))
    # eq. (1.5) and (B.6): g² = dσ²/dt − 2fσ² = −2σ² dλ/dt = 2t/(1 − t), and not the VP identity −2f
    assert torch.allclose(schedule.g2(t), -2 * t**2 * d_lam)
    assert torch.allclose(schedule.g2(t), 2 * t / (1 - t))
    assert not torch.allclose(schedule.g2(t), -2 * schedule.f(t))


def test_general_g2_formula_reduces_to_the_vp_identity():
    """The base class's g² = 2σσ̇ − 2fσ² (any path) equals VP's −2f, so the VP override is an identity, not a choice."""
    t = torch.linspace(0.01, 0.99, 9, dtype=F64)
    for schedule in (al.LinearVP(), al.CosineVP()):
        assert torch.allclose(al.NoiseSchedule.g2(schedule, t), schedule.g2(t), rtol=1e-10)


@pytest.mark.parametrize("t_min, t_max", [(0.0, 0.999), (1e-3, 1.0), (0.5, 0.5), (-0.1, 0.9)])
def test_rectified_flow_refuses_ends_where_lambda_is_infinite(t_min, t_max):
    with pytest.raises(ValueError, match="0 < t_min < t_max < 1"):
        al.RectifiedFlow(t_min=t_min, t_max=t_max)


@pytest.mark.parametrize("schedule", [al.RectifiedFlow(), al.LinearVP()], ids=["rectified-flow", "linear-vp"])
def test_velocity_adapter_returns_the_exact_eps(schedule):
    """ε = (α u − α̇ x)/(α σ̇ − α̇ σ) turns the exact velocity u* into the exact ε* on any path; for rectified flow
    it is ε = x + (1 − t) u."""
    g = torch.Generator().manual_seed(0)
    x, mu = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    velocity = toy.GaussianVelocityModel(schedule)
    eps = al.EpsilonFromVelocity(velocity, schedule)(x, t, mu)
    assert torch.allclose(eps, toy.GaussianEpsModel(schedule)(x, t, mu), atol=1e-13)
    if isinstance(schedule, al.RectifiedFlow):
        assert torch.allclose(eps, x + (1 - t)[:, None] * velocity(x, t, mu), atol=1e-14)


def _flow_gradients(n, sampler, gradient, schedule=None):
    """x_0 and (∂L/∂x_T, ∂L/∂μ, ∂L/∂s) through ``sample`` on the exact velocity model, L = Σ x_0, and the exact
    answers."""
    schedule = schedule or al.RectifiedFlow()
    g = torch.Generator().manual_seed(0)
    x_T_value = torch.randn(4, 3, generator=g, dtype=F64)
    mu_value = 0.3 + 0.1 * torch.randn(4, 3, generator=g, dtype=F64)
    velocity = toy.GaussianVelocityModel(schedule)
    model = al.EpsilonFromVelocity(velocity, schedule)
    x_T, mu = x_T_value.clone().requires_grad_(True), mu_value.clone().requires_grad_(True)
    x0 = al.sample(model, schedule, x_T, mu, steps=n, sampler=sampler, gradient=gradient)
    got = torch.autograd.grad(x0.sum(), [x_T, mu, velocity.data_std])
    s = velocity.data_std.detach()
    exact_x0 = toy.flow(schedule, x_T_value, schedule.t_max, schedule.t_min, mu_value, s)
    exact = toy.ode_gradients(schedule, x_T_value, mu_value, s, torch.ones_like(x0), schedule.t_max, schedule.t_min)
    return (x0.detach() - exact_x0).abs().max(), [float((a - b).abs().max()) for a, b in zip(got, exact)]


@pytest.mark.parametrize("order, ns", [(1, (256, 512, 1024)), (2, (128, 256, 512))])
def test_adjointdeis_orders_on_rectified_flow_for_x_T_z_and_theta(order, ns):
    """Exact Gaussian oracle on rectified flow (t from 0.999 to 0.001, λ-uniform grid; data N(μ, 0.5²)), through the
    velocity adapter: DDIM / DPM-Solver-2M and AdjointDEIS-1 / -2M converge at orders 1 and 2 for x_0 and for the
    gradients w.r.t. x_T, z = μ and θ = s.  Measured: x_T gradient 0.161 → 0.086 → 0.045 (order 1: 1.85) and
    0.065 → 0.0147 → 0.0035 (order 2: 2.1).  At N ≤ 64 the x_T gradient of AdjointDEIS-1 is pre-asymptotic (h ≥ 0.2 on
    a λ range of 13.8; see chapter 10's stability threshold)."""
    sampler = "ddim" if order == 1 else "dpm-solver-2m"
    runs = [_flow_gradients(n, sampler, al.Adjoint(order=order)) for n in ns]
    x0_errors = [float(r[0]) for r in runs]
    assert abs(_slope(ns, x0_errors) - order) < 0.15, x0_errors
    for k, name in enumerate(["x_T", "z", "theta"]):
        errors = [r[1][k] for r in runs]
        assert abs(_slope(ns, errors) - order) < 0.2, (name, errors)
        assert errors[-1] < (0.05 if order == 1 else 0.005), (name, errors)


@pytest.mark.parametrize("gradient, sampler, n, tol", [
    ("backprop", "ddim", 256, 0.05), ("checkpoint", "dpm-solver-2m", 128, 5e-3),
    ("reversible", "reversible-ddim", 256, 5e-4), ("blackbox", "rk4", 64, 1e-4),
    (al.Adjoint(recompute=True), "ddim", 1024, 0.05),
])
def test_every_gradient_method_applies_to_rectified_flow(gradient, sampler, n, tol):
    """Each method reaches the exact gradients on rectified flow within its discretisation error at that N.
    Measured largest error (of x_T, z, θ): backprop through DDIM 0.042 (N = 256), checkpoint through 2M 2.3e-3
    (N = 128), reversible DDIM (data frame) 2.0e-4 (N = 256), black-box RK4 in ν 2.8e-5 (N = 64), AdjointDEIS-1 with
    the states recomputed backwards 0.045 (N = 1024, as with recorded states)."""
    _, errors = _flow_gradients(n, sampler, gradient)
    assert max(errors) < tol, errors


def test_sde_adjoint_on_rectified_flow_reaches_the_sde_jacobian():
    """SDE-DPM-Solver-1 carries over to any Gaussian path with g² from (1.5) (its noise σ_t sqrt(e^{2h} − 1));
    the SDE adjoint (factor 2, Prop. 3.1) reaches the path-independent Jacobian ∂x_0/∂x_T = τ_0² α_T/(τ_T² α_0)
    (toy.sde_jacobians) at order 1."""
    schedule = al.RectifiedFlow(t_min=0.01, t_max=0.99)
    model = al.EpsilonFromVelocity(toy.GaussianVelocityModel(schedule), schedule)
    j_x, j_mu = (float(j) for j in toy.sde_jacobians(schedule, schedule.t_max, schedule.t_min, 0.5))
    errors = []
    for n in (128, 256, 512):
        g = torch.Generator().manual_seed(1)
        x_T = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
        mu = torch.full((2, 3), 0.3, dtype=F64, requires_grad=True)
        x0 = al.sample(model, schedule, x_T, mu, steps=n, sampler="sde-dpm-solver-1", generator=g)
        gx, gmu = torch.autograd.grad(x0.sum(), [x_T, mu])
        errors.append(max(float((gx - j_x).abs().max()), float((gmu - j_mu).abs().max())))
    assert abs(_slope((128, 256, 512), errors) - 1) < 0.25, errors


diffusers = pytest.importorskip("diffusers")


def _tiny_velocity_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)


def test_from_pipeline_parts_reads_a_flow_matching_scheduler():
    unet = _tiny_velocity_unet()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    model, schedule = al.DiffusersUNet.from_pipeline_parts(unet, scheduler)
    assert isinstance(schedule, al.RectifiedFlow) and isinstance(model, al.EpsilonFromVelocity)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.25, 0.75])
    u = unet(x, 1000 * t).sample
    assert torch.allclose(model(x, t, None), x + (1 - t).view(-1, 1, 1, 1) * u, atol=1e-6)


def test_ddim_equals_flow_match_euler_scheduler_loop():
    """DDIM on RectifiedFlow through the velocity adapter is Euler in t: on the grid of a
    ``FlowMatchEulerDiscreteScheduler``'s sigmas (here shift = 3 applied to sigmas 0.99 … 0.02) it equals diffusers'
    own loop (``scheduler.step``) at every state, to float32 round-off.  They coincide for every step whose ends lie
    in (0, 1); diffusers' appended last step to sigma 0 (λ = +∞) is not run by ours, so the comparison stops one
    step before it (and a default schedule starting at sigma 1, where α = 0, would differ in its first step)."""
    unet = _tiny_velocity_unet()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(sigmas=np.linspace(0.99, 0.02, 12).tolist())
    model, schedule = al.DiffusersUNet.from_pipeline_parts(unet, scheduler)
    sigmas = scheduler.sigmas
    assert float(sigmas[0]) < 1 and float(sigmas[-1]) == 0.0 and float(sigmas[-2]) > 0
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 8, 8, generator=g)
    states, x = [], x_T
    with torch.no_grad():
        for timestep in scheduler.timesteps[:-1]:
            x = scheduler.step(unet(x, timestep).sample, timestep, x).prev_sample
            states.append(x)
        grid = sigmas[:-1].double()
        _, trajectory = al.solve(model, schedule, x_T, None, grid, record="states")
    ours = torch.stack(trajectory.states[1:])
    theirs = torch.stack(states)
    assert (ours - theirs).abs().max() < 2e-5 * theirs.abs().max()
    # the shift changes only the grid: unshifted sigmas would give another x_0
    assert not torch.allclose(grid[1:], torch.linspace(0.99, 0.02, 12, dtype=F64)[1:], atol=1e-3)


def test_a_default_flow_match_grid_from_sigma_one_to_zero_is_refused_by_name():
    """diffusers' default FlowMatchEulerDiscreteScheduler grid runs from sigma 1 (α = 0) to 0 (σ = 0), where λ is
    infinite: refused at the call, naming the argument and the schedule's range, not a NaN later."""
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    schedule = al.RectifiedFlow()
    model = al.EpsilonFromVelocity(toy.GaussianVelocityModel(schedule, dtype=torch.float32), schedule)
    with pytest.raises(ValueError, match=r"steps must lie in the schedule's range \[0.001, 0.999\]"):
        al.sample(model, schedule, torch.randn(2, 3), steps=scheduler.sigmas.double())
    x0 = al.sample(model, schedule, torch.randn(2, 3), steps=scheduler.sigmas[1:-1].double())  # inside (0, 1): runs
    assert bool(torch.isfinite(x0).all())


def test_float32_grids_at_the_schedule_ends_are_accepted_and_the_range_error_says_what_to_do():
    """float32(0.999) = 0.99900001 lies a rounding above RectifiedFlow's t_max: a float32 grid is snapped to the ends
    it rounds from (the same grid as float64 or a list already worked); a grid really outside is refused with the fix."""
    schedule = al.RectifiedFlow()
    model = al.EpsilonFromVelocity(toy.GaussianVelocityModel(schedule, dtype=torch.float32), schedule)
    x_T = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    grid32 = torch.tensor([0.999, 0.5, 0.001])
    assert float(grid32[0]) > schedule.t_max
    x0_32 = al.sample(model, schedule, x_T, steps=grid32, gradient="backprop")
    x0_64 = al.sample(model, schedule, x_T, steps=[0.999, 0.5, 0.001], gradient="backprop")
    assert torch.equal(x0_32, x0_64)
    with pytest.raises(ValueError, match=r"scheduler.sigmas\[1:-1\]"):
        al.sample(model, schedule, x_T, steps=torch.tensor([1000.0, 500.0, 1.0]))


def test_backprop_differentiates_only_params():
    """params=[] (noise optimisation): backprop, like every method, leaves the network's weights without gradients and
    builds no graph for them; the x_T gradient is unchanged and the weights' requires_grad flags are restored."""
    schedule = al.RectifiedFlow()
    velocity = toy.GaussianVelocityModel(schedule)
    model = al.EpsilonFromVelocity(velocity, schedule)
    x_T = torch.randn(2, 3, dtype=F64, requires_grad=True)
    grads = []
    for params in ([], None):
        velocity.data_std.grad = None
        x0 = al.sample(model, schedule, x_T, steps=8, gradient="backprop", params=params)
        x0.sum().backward()
        grads.append(x_T.grad.clone())
        x_T.grad = None
        assert (velocity.data_std.grad is None) == (params == [])
        assert velocity.data_std.requires_grad
    assert torch.equal(grads[0], grads[1])
