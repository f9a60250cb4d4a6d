"""Schedules: identities of eqs. 1.5/B.6, inverse of λ, dtype/device handling, diffusers adapter."""
import pytest
import torch

import adjointlib as al

SCHEDULES = [al.LinearVP(), al.CosineVP(), al.DiscreteVP(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0))]


def _times(sch, n=50, dtype=torch.float64):
    return torch.linspace(sch.t_min, sch.t_max, n, dtype=dtype)


@pytest.mark.parametrize("sch", SCHEDULES, ids=repr)
def test_vp_identities(sch):
    t = _times(sch)
    assert torch.allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, torch.ones_like(t), atol=1e-14)
    assert torch.allclose(sch.lam(t), torch.log(sch.alpha(t) / sch.sigma(t)), atol=1e-12)
    assert bool((sch.lam(t)[1:] < sch.lam(t)[:-1]).all()), "λ must decrease in t"


@pytest.mark.parametrize("sch", SCHEDULES, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_t_of_lam_inverts_lam(sch, dtype):
    t = _times(sch, dtype=dtype)[1:-1]
    back = sch.t_of_lam(sch.lam(t))
    assert back.dtype == dtype
    tol = 1e-9 if dtype == torch.float64 else 2e-3 * max(1.0, sch.t_max)
    assert torch.allclose(back, t, atol=tol * max(1.0, sch.t_max) if dtype == torch.float64 else tol)


@pytest.mark.parametrize("sch", SCHEDULES[:2], ids=repr)
def test_f_and_g2_match_autograd_derivatives(sch):
    """f = d log α/dt (1.5) and g² = −2σ² dλ/dt (B.6), with the derivatives taken by autograd."""
    t = _times(sch)[1:-1].requires_grad_(True)
    dlog_alpha, = torch.autograd.grad(sch.log_alpha(t).sum(), t)
    dlam, = torch.autograd.grad(sch.lam(t).sum(), t)
    assert torch.allclose(sch.f(t), dlog_alpha, rtol=1e-12)
    assert torch.allclose(sch.g2(t), -2 * sch.sigma(t) ** 2 * dlam, rtol=1e-10)


def test_linear_vp_g2_is_beta():
    sch = al.LinearVP(0.1, 20.0)
    t = _times(sch)
    assert torch.allclose(sch.g2(t), 0.1 + 19.9 * t, rtol=1e-13)


def test_discrete_matches_alphas_cumprod_at_integer_steps():
    ac = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    sch = al.DiscreteVP(ac)
    n = torch.arange(1000, dtype=torch.float64)
    assert torch.allclose(sch.alpha(n) ** 2, ac, rtol=1e-12)
    assert torch.allclose(sch.t_of_lam(sch.lam(n)), n, atol=1e-8)


def test_from_diffusers_scheduler():
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    sch = al.DiscreteVP.from_diffusers(scheduler)
    assert sch.t_max == 999.0
    assert torch.allclose(sch.alpha(torch.tensor(500.0, dtype=torch.float64)) ** 2,
                          scheduler.alphas_cumprod[500].double(), rtol=1e-6)
    with pytest.raises(TypeError, match="alphas_cumprod"):
        al.DiscreteVP.from_diffusers(object())


@pytest.mark.parametrize("sch", SCHEDULES, ids=repr)
def test_device_and_dtype_preserved(sch, device):
    t = _times(sch, 5, torch.float32).to(device)
    for fn in (sch.alpha, sch.sigma, sch.lam, sch.f, sch.g2):
        out = fn(t)
        assert out.dtype == torch.float32 and out.device == t.device


def test_invalid_discrete_schedules():
    with pytest.raises(ValueError, match="decreasing"):
        al.DiscreteVP(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="between 0 and 1"):
        al.DiscreteVP(torch.tensor([1.0, 0.5]))
