"""Classifier-free guidance (issue 15 item 1): the formula and its one batched call, the guided field against exact
Gaussian oracles, affine prediction adapters, gradcheck of dL/dx_T, dz, dw, dz_u through the adjoint, measured
AdjointDEIS orders through a tiny text-to-image UNet, and errors that name the argument."""
import math

import pytest
import torch
from torch.func import functional_call

import adjointlib as al
from adjointlib.gradients.base import differentiable_params, model_tensors
from adjointlib.guidance import ClassifierFreeGuidance
from conftest import TanhEpsModel, fitted_slope

F64 = torch.float64


def _inputs(b=3, d=4, zd=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, d, generator=g, dtype=F64), torch.rand(b, generator=g, dtype=F64) * 0.8 + 0.1,
            torch.randn(b, zd, generator=g, dtype=F64), torch.randn(1, zd, generator=g, dtype=F64))


def test_guided_eps_is_the_formula_of_two_separate_calls():
    """ε_w = ε_u + w (ε_c − ε_u) with ε_c = model(x, t, z), ε_u = model(x, t, z_u): the one batched call equals two
    calls (to rounding, 1e-15), for a shared (1, ...) z_u and a per-sample (b, ...) one; w = 1 and w = 0 give the
    conditional and unconditional models."""
    model = TanhEpsModel(4, 2)
    x, t, z, z_u = _inputs()
    for unconditional in (z_u, z_u.expand(3, 2) + torch.arange(3, dtype=F64)[:, None]):
        for w in (0.0, 1.0, 3.0, 7.5):
            guided = ClassifierFreeGuidance(model, w, unconditional)
            eps_c, eps_u = model(x, t, z), model(x, t, unconditional.expand(3, 2))
            assert torch.allclose(guided(x, t, z), eps_u + w * (eps_c - eps_u), rtol=0, atol=1e-14)
    assert torch.allclose(ClassifierFreeGuidance(model, 1.0, z_u)(x, t, z), model(x, t, z), rtol=0, atol=1e-15)
    assert torch.allclose(ClassifierFreeGuidance(model, 0.0, z_u)(x, t, z), model(x, t, z_u.expand(3, 2)),
                          rtol=0, atol=1e-15)


def test_one_batched_call_with_the_unconditional_half_first():
    """Exactly one network call, on cat([x, x]), cat([t, t]), cat([z_u expanded, z]) — diffusers' layout."""
    calls = []

    def recording(x, t, z):
        calls.append((x.clone(), t.clone(), z.clone()))
        return torch.tanh(x) * z.sum(1, keepdim=True)

    x, t, z, z_u = _inputs()
    ClassifierFreeGuidance(recording, 2.0, z_u)(x, t, z)
    assert len(calls) == 1
    xx, tt, zz = calls[0]
    assert torch.equal(xx, torch.cat([x, x])) and torch.equal(tt, torch.cat([t, t]))
    assert torch.equal(zz[:3], z_u.expand(3, 2)) and torch.equal(zz[3:], z)


def test_scale_and_unconditional_are_parameters_the_library_differentiates():
    """w is a 0-dim nn.Parameter (requires grad) and z_u a parameter that is frozen unless asked: the default
    ``params`` of ``adjointlib.sample`` (``differentiable_params``: every parameter requiring grad) then includes w
    and θ but not z_u; ``model_tensors`` (every parameter and buffer) saves both, so an in-place change of w between
    forward and backward raises; integer z_u (class labels) is a buffer."""
    model = TanhEpsModel(4, 2)
    _, _, _, z_u = _inputs()
    guided = ClassifierFreeGuidance(model, 3.0, z_u)
    assert isinstance(guided.scale, torch.nn.Parameter) and guided.scale.dim() == 0 and guided.scale.requires_grad
    assert guided.scale.dtype == F64 and guided.scale.item() == 3.0
    chosen = differentiable_params(guided, None)
    assert any(p is guided.scale for p in chosen) and all(any(c is q for c in chosen) for q in model.parameters())
    assert not any(p is guided.unconditional for p in chosen)
    learned = ClassifierFreeGuidance(model, 3.0, z_u, learn_unconditional=True)
    assert any(p is learned.unconditional for p in differentiable_params(learned, None))
    # every parameter and buffer is saved by the gradient methods to detect in-place changes
    assert any(p is guided.unconditional for p in model_tensors(guided))
    # saved for backward: changing w, or the frozen z_u (in no params), in place between forward and backward
    # raises instead of returning the gradient of a model that no longer exists
    x, _, z, _ = _inputs()
    for changed in (guided.scale, guided.unconditional):
        x0 = al.sample(guided, al.LinearVP(), x, z, steps=4, params=[guided.scale])
        with torch.no_grad():
            changed.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            torch.autograd.grad(x0.sum(), guided.scale)
    assert guided.float().scale.dtype == torch.float32 and guided.unconditional.dtype == torch.float32
    labels = ClassifierFreeGuidance(lambda x, t, z: x, 2.0, torch.zeros(1, dtype=torch.long))
    assert "unconditional" in dict(labels.named_buffers()) and labels.scale.dtype == torch.get_default_dtype()


def _gaussian_eps(schedule):
    """The exact ε of N(μ, s²) per coordinate, z = (μ, s) per sample: ε = σ (x − α μ) / (α² s² + σ²)."""

    def eps(x, t, z):
        alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        mu, s = z[:, :1], z[:, 1:]
        return sigma * (x - alpha * mu) / (alpha**2 * s**2 + sigma**2)

    return eps


def _tilted(schedule, t, w, z_c, z_u):
    """Mean and variance of p̃_t ∝ p_{u,t}^{1−w} p_{c,t}^w for Gaussian p_c, p_u (a product of Gaussian powers)."""
    alpha, sigma = float(schedule.alpha(torch.tensor(t, dtype=F64))), float(schedule.sigma(torch.tensor(t, dtype=F64)))
    prec = [(1 - w) / (alpha**2 * z_u[1] ** 2 + sigma**2), w / (alpha**2 * z_c[1] ** 2 + sigma**2)]
    variance = 1 / sum(prec)
    return variance * (prec[0] * alpha * z_u[0] + prec[1] * alpha * z_c[0]), variance


@pytest.mark.parametrize("s_u, expect_marginal", [(0.5, True), (1.0, False)])
def test_guided_ode_transports_the_tilted_density_only_when_it_is_a_diffusion(s_u, expect_marginal):
    """The module docstring's claim, on exact Gaussian ε-models (z = (μ, s), LinearVP, w = 3, μ_u = −1, μ_c = 1,
    s_c = 0.5): ε_w is the ε of the tilted p̃_t ∝ p_{u,t}^{1−w} p_{c,t}^w at every t, but p̃_t is the diffusion of p̃_0
    only in special cases.  Equal variances (s_u = s_c): p̃_t is the marginal family of N(μ̃, s²), and the guided
    PF-ODE maps p̃_T onto p̃_0 (measured with 2M, N = 2000: mean to 5e-15, std to 7.2e-7, 1.2e-5 at N = 500, the
    solver's h²).  Unequal variances (s_u = 1): it does not — the pushed-forward mean and std are 2.000 and 0.125
    where p̃_0 has 1.400 and 0.316, so the guided sampler solves the PF-ODE of no single diffusion."""
    schedule, w = al.LinearVP(), 3.0
    z_c, z_u = (1.0, 0.5), (-1.0, s_u)
    guided = ClassifierFreeGuidance(_gaussian_eps(schedule), w, torch.tensor([z_u], dtype=F64))
    m_T, v_T = _tilted(schedule, schedule.t_max, w, z_c, z_u)
    m_0, v_0 = _tilted(schedule, schedule.t_min, w, z_c, z_u)
    x_T = torch.tensor([[m_T], [m_T + math.sqrt(v_T)]], dtype=F64)  # the map is affine: two points give it
    with torch.no_grad():
        x_0 = al.sample(guided, schedule, x_T, torch.tensor([z_c, z_c], dtype=F64), steps=2000,
                        sampler="dpm-solver-2m")
    mean, std = float(x_0[0]), float(x_0[1] - x_0[0])
    if expect_marginal:
        assert abs(mean - m_0) < 1e-12 and abs(std - math.sqrt(v_0)) < 5e-6, (mean, m_0, std, math.sqrt(v_0))
    else:
        assert abs(mean - m_0) > 0.1 and abs(std / math.sqrt(v_0) - 1) > 0.1, (mean, m_0, std, math.sqrt(v_0))


def test_guidance_commutes_with_affine_adapters_but_not_with_clipping():
    """Guidance weights sum to 1, so for ε = a_t x + b_t p (x₀-, v-, flow-velocity prediction) guiding p then
    converting equals converting each branch then guiding (1e-12); ``ClipDenoised`` is nonlinear: clip(guided) ≠
    guided(clipped) (by more than 1e-2 here)."""
    schedule = al.DiscreteVP(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=F64), 0))
    raw = TanhEpsModel(4, 2, t_max=999.0)
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(4, 4, generator=g, dtype=F64)
    t = torch.tensor([50.0, 400.0, 800.0, 990.0], dtype=F64)
    z, z_u = torch.randn(4, 2, generator=g, dtype=F64), torch.randn(1, 2, generator=g, dtype=F64)
    for adapter in (al.EpsilonFromX0, al.EpsilonFromV):
        outside = ClassifierFreeGuidance(adapter(raw, schedule), 4.0, z_u)(x, t, z)
        inside = adapter(ClassifierFreeGuidance(raw, 4.0, z_u), schedule)(x, t, z)
        assert torch.allclose(outside, inside, rtol=0, atol=1e-12 * outside.abs().max().item())
    # flow matching's velocity adapter, ε = (α u − α̇ x)/(α σ̇ − α̇ σ), on rectified flow
    flow, s = al.RectifiedFlow(), torch.tensor([0.1, 0.4, 0.7, 0.9], dtype=F64)
    outside = ClassifierFreeGuidance(al.EpsilonFromVelocity(raw, flow), 4.0, z_u)(x, s, z)
    inside = al.EpsilonFromVelocity(ClassifierFreeGuidance(raw, 4.0, z_u), flow)(x, s, z)
    assert torch.allclose(outside, inside, rtol=0, atol=1e-12 * outside.abs().max().item())
    clip_after = al.ClipDenoised(ClassifierFreeGuidance(raw, 4.0, z_u), schedule)(x, t, z)
    clip_each = ClassifierFreeGuidance(al.ClipDenoised(raw, schedule), 4.0, z_u)(x, t, z)
    assert (clip_after - clip_each).abs().max() > 1e-2


def test_gradcheck_through_the_adjoint_for_x_T_z_w_and_z_u():
    """dL/dx_T, dL/dz, dL/dw and dL/dz_u of AdjointDEIS-2M (N = 200, t from 0.6 to 0.2, where the
    optimise-then-discretise gap is ~1e-6 relative) against central finite differences (``gradcheck``).  w and z_u
    enter through ``torch.func.functional_call``, so the adjoint differentiates them as the θ of ``params``."""
    schedule = al.LinearVP()
    model = TanhEpsModel(2, 2)
    guided = ClassifierFreeGuidance(model, 2.5, torch.zeros(1, 2, dtype=F64), learn_unconditional=True)
    g = torch.Generator().manual_seed(0)
    x_T, z = (torch.randn(1, 2, generator=g, dtype=F64, requires_grad=True) for _ in range(2))
    w = torch.tensor(2.5, dtype=F64, requires_grad=True)
    z_u = (0.5 * torch.randn(1, 2, generator=g, dtype=F64)).requires_grad_(True)

    def run(x_T, z, w, z_u):
        def eps(x, t, c):
            return functional_call(guided, {"scale": w, "unconditional": z_u}, (x, t, c))

        return al.sample(eps, schedule, x_T, z, steps=200, sampler="dpm-solver-2m", t_start=0.6, t_end=0.2,
                         params=[w, z_u])

    assert torch.autograd.gradcheck(run, (x_T, z, w, z_u), atol=1e-6, rtol=1e-4)


def test_every_gradient_method_reaches_the_scale():
    """``params=[guided.scale]`` gives dL/dw for each ODE gradient method; the exact ones (backprop, checkpoint)
    agree to rounding and the adjoint to its O(h²) gap (t from 0.6 to 0.2, N = 200: measured 4.9e-6 relative)."""
    schedule = al.LinearVP()
    guided = ClassifierFreeGuidance(TanhEpsModel(4, 2), 3.0, torch.zeros(1, 2, dtype=F64))
    x_T, _, z, _ = _inputs()
    grads = {}
    for method in ("backprop", "checkpoint", "adjoint"):
        x0 = al.sample(guided, schedule, x_T, z, steps=200, sampler="dpm-solver-2m", gradient=method,
                       params=[guided.scale], t_start=0.6, t_end=0.2)
        grads[method] = torch.autograd.grad(x0.square().sum(), guided.scale)[0]
    assert abs(float(grads["backprop"])) > 1e-2
    assert torch.allclose(grads["checkpoint"], grads["backprop"], rtol=1e-12)
    assert torch.allclose(grads["adjoint"], grads["backprop"], rtol=1e-4)


# --- through a tiny text-to-image UNet (diffusers + transformers) ----------------------------------------------


def _tiny_guided(w=3.0, seed=0):
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from adjointlib import latent

    pipe = latent.tiny_text_to_image(seed=seed, dtype=F64)
    with torch.no_grad():
        z = latent.prompt_embeddings(pipe, ["a photo of a cat"])
    model, schedule = latent.pipeline_model(pipe, w, learn_unconditional=True)
    return pipe, model, schedule, z


@pytest.mark.slow
def test_adjoint_gradients_through_a_guided_unet_converge_at_their_orders(one_thread):
    """AdjointDEIS-1 (sampler "ddim") and -2M ("dpm-solver-2m") against backprop through the same sampler, on the
    tiny text-to-image pipeline (float64, w = 3, loss ½‖x_0‖², λ-uniform grids from t = 999 to 0): the relative gap
    of each gradient — x_T, the prompt embeddings z, the negative embedding z_u and the UNet's conv_out weight — is
    O(h^k).  Fitted slopes of log gap against log N (measured): AdjointDEIS-1 over N = 10, 20, 40: x_T 0.996,
    z 0.905, z_u 0.924, θ 0.963 (gaps at N = 40: 0.042, 0.073, 0.057, 0.074); AdjointDEIS-2M over N = 40, 80, 160:
    x_T 1.93, z 2.19, z_u 2.22, θ 2.00 (gaps at N = 160: 6.5e-4, 1.1e-3, 1.7e-3, 8.1e-4); over N = 20, 40, 80 the
    -2M slopes are still pre-asymptotic (1.6-1.8).  Asserted: each slope within 0.3 of the order.  dL/dw is one
    number: its gap is a single linear functional of the error, whose leading coefficient nearly cancels here
    (measured 0.010, 0.039, 0.043 for DDIM at N = 10, 20, 40; 0.042, 0.0070, 0.00092 for 2M at 40, 80, 160), so it
    is checked to be small at the finest N (< 0.1 for DDIM, < 0.005 for 2M), not fitted; its
    exactness is the gradcheck above."""
    pipe, model, schedule, z0 = _tiny_guided()
    weight = pipe.unet.conv_out.weight
    g = torch.Generator().manual_seed(0)
    x_T0 = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    params = [model.scale, model.unconditional, weight]

    def gradients(sampler, gradient, n):
        x_T, z = x_T0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        x0 = al.sample(model, schedule, x_T, z, steps=n, sampler=sampler, gradient=gradient, params=params)
        return torch.autograd.grad(0.5 * x0.square().sum(), [x_T, z, *params])

    names = ("x_T", "z", "w", "z_u", "theta")
    for sampler, ns, order, w_bound in (("ddim", (10, 20, 40), 1, 0.1), ("dpm-solver-2m", (40, 80, 160), 2, 0.005)):
        gaps = {name: [] for name in names}
        for n in ns:
            adjoint, backprop = gradients(sampler, "adjoint", n), gradients(sampler, "backprop", n)
            for name, a, b in zip(names, adjoint, backprop):
                gaps[name].append(float((a - b).norm() / b.norm()))
        slopes = {name: fitted_slope([1 / n for n in ns], gaps[name]) for name in names if name != "w"}
        for name, slope in slopes.items():
            assert abs(slope - order) < 0.3, (sampler, name, slopes, gaps)
        assert gaps["w"][-1] < w_bound, (sampler, gaps["w"])


def test_guidance_errors_name_the_argument():
    model = TanhEpsModel(4, 2)
    z_u = torch.zeros(1, 2, dtype=F64)
    for scale, kind in ((float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError),
                        (torch.ones(2, dtype=F64), TypeError), (torch.tensor(1), TypeError), ("7.5", TypeError)):
        with pytest.raises(kind, match="scale"):
            ClassifierFreeGuidance(model, scale, z_u)
    for unconditional, kind in (([[0.0, 0.0]], TypeError), (torch.tensor(0.0, dtype=F64), ValueError),
                                (torch.zeros(0, 2, dtype=F64), ValueError),
                                (torch.full((1, 2), float("nan"), dtype=F64), ValueError)):
        with pytest.raises(kind, match="unconditional"):
            ClassifierFreeGuidance(model, 2.0, unconditional)
    with pytest.raises(ValueError, match="unconditional"):
        ClassifierFreeGuidance(model, 2.0, torch.zeros(1, dtype=torch.long), learn_unconditional=True)
    with pytest.raises(TypeError, match="learn_unconditional"):
        ClassifierFreeGuidance(model, 2.0, z_u, learn_unconditional=1)
    with pytest.raises(TypeError, match="model"):
        ClassifierFreeGuidance("unet", 2.0, z_u)

    x, t, z, _ = _inputs()
    with pytest.raises(ValueError, match="needs the condition z"):
        ClassifierFreeGuidance(model, 2.0, z_u)(x, t, None)
    with pytest.raises(ValueError, match="unconditional has batch size 2"):
        ClassifierFreeGuidance(model, 2.0, torch.zeros(2, 2, dtype=F64))(x, t, z)
    with pytest.raises(ValueError, match="unconditional has shape"):
        ClassifierFreeGuidance(model, 2.0, torch.zeros(1, 3, dtype=F64))(x, t, z)
    with pytest.raises(TypeError, match="unconditional is torch.float32"):
        ClassifierFreeGuidance(model, 2.0, torch.zeros(1, 2))(x, t, z)
    with pytest.raises(ValueError, match="2b = 6"):
        ClassifierFreeGuidance(lambda a, b, c: a[:3], 2.0, z_u)(x, t, z)
    # through sample(): the model's error reaches the caller with its message
    with pytest.raises(ValueError, match="unconditional has batch size 2"):
        al.sample(ClassifierFreeGuidance(model, 2.0, torch.zeros(2, 2, dtype=F64)), al.LinearVP(), x, z, steps=2)
