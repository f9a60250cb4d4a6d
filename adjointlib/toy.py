"""Exact answers for the Gaussian toy problem x_0 ~ N(μ, s² I): the oracle of tests and notebooks.

With τ_t² = α_t² s² + σ_t² the marginal is x_t ~ N(α_t μ, τ_t² I), and (derivations/gaussian_toy.py):

    ε*(x, t)      = σ_t (x − α_t μ) / τ_t²                              (= −σ_t ∇ log p_t)
    PF-ODE flow   x_t = α_t μ + (τ_t/τ_u) (x_u − α_u μ)                  (any two times u, t)
    ODE gradients ∂x_0/∂x_T = τ_0/τ_T,  ∂x_0/∂μ = α_0 − (τ_0/τ_T) α_T,
                  ∂x_0/∂s = ∂(τ_0/τ_T)/∂s (x_T − α_T μ),  ∂τ/∂s = α² s/τ
    SDE (eq. 3.1) for any noise path: ∂x_0/∂x_T = (τ_0²/τ_T²)(α_T/α_0),
                  ∂x_0/∂μ = α_0 − τ_0² α_T² / (α_0 τ_T²)

Here subscript T is the start of sampling (t_start) and 0 its end (t_end).  μ plays the role
of the conditional information z and s that of a model parameter θ.  Every formula holds for any Gaussian
path (``NoiseSchedule``: VP or rectified flow; derivations/gaussian_paths.py), and the velocity of a flow-matching
model is u* = α̇_t x̂₀* + σ̇_t ε* with Tweedie's x̂₀* = μ + α_t s² (x − α_t μ)/τ_t².
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["GaussianEpsModel", "GaussianVelocityModel", "tau", "eps_star", "velocity_star", "flow", "ode_gradients",
           "sde_jacobians"]


def _t(t, like=None):
    dtype = torch.float64 if like is None else like.dtype
    return torch.as_tensor(t, dtype=dtype)


def tau(schedule, t, data_std) -> torch.Tensor:
    """Marginal standard deviation τ_t = sqrt(α_t² s² + σ_t²).  Shape of t."""
    t = _t(t)
    return torch.sqrt(schedule.alpha(t) ** 2 * data_std**2 + schedule.sigma(t) ** 2)


def eps_star(schedule, x, t, mu, data_std) -> torch.Tensor:
    """ε*(x, t) = σ_t (x − α_t μ)/τ_t²;  x, μ: (b, d), t: scalar or (b,).  Returns (b, d)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    shape = (-1,) + (1,) * (x.dim() - 1) if t.dim() == 1 else ()
    alpha, sigma = schedule.alpha(t).reshape(shape), schedule.sigma(t).reshape(shape)
    return sigma * (x - alpha * mu) / (alpha**2 * data_std**2 + sigma**2)


def velocity_star(schedule, x, t, mu, data_std) -> torch.Tensor:
    """u*(x, t) = α̇_t x̂₀* + σ̇_t ε*, the exact flow-matching velocity (Tweedie x̂₀* = (x − σ_t ε*)/α_t).
    x, μ: (b, d), t: scalar or (b,).  Returns (b, d)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    shape = (-1,) + (1,) * (x.dim() - 1) if t.dim() == 1 else ()
    alpha, sigma = schedule.alpha(t).reshape(shape), schedule.sigma(t).reshape(shape)
    d_alpha, d_sigma = schedule.d_alpha_dt(t).reshape(shape), schedule.d_sigma_dt(t).reshape(shape)
    eps = eps_star(schedule, x, t, mu, data_std)
    return d_alpha * (x - sigma * eps) / alpha + d_sigma * eps


def flow(schedule, x_from, t_from, t_to, mu, data_std) -> torch.Tensor:
    """Exact PF-ODE flow map x_{t_to} = α_to μ + (τ_to/τ_from)(x_from − α_from μ).  (b, d)."""
    a_from, a_to = schedule.alpha(_t(t_from)), schedule.alpha(_t(t_to))
    ratio = tau(schedule, t_to, data_std) / tau(schedule, t_from, data_std)
    return a_to * mu + ratio * (x_from - a_from * mu)


def ode_gradients(schedule, x_T, mu, data_std, grad_x0, t_start, t_end):
    """Exact (∂L/∂x_T, ∂L/∂μ, ∂L/∂s) of the PF-ODE from t_start to t_end, given ∂L/∂x_0 = grad_x0.

    x_T, μ, grad_x0: (b, d); data_std: scalar.  Returns ((b, d), (b, d), scalar tensor).
    """
    a_T, a_0 = schedule.alpha(_t(t_start)), schedule.alpha(_t(t_end))
    tau_T, tau_0 = tau(schedule, t_start, data_std), tau(schedule, t_end, data_std)
    ratio = tau_0 / tau_T
    d_ratio = (a_0**2 * data_std / tau_0) / tau_T - tau_0 * a_T**2 * data_std / tau_T**3
    g_std = (grad_x0 * (x_T - a_T * mu)).sum() * d_ratio
    return ratio * grad_x0, (a_0 - ratio * a_T) * grad_x0, g_std


def sde_jacobians(schedule, t_start, t_end, data_std):
    """Path-independent Jacobian factors (J_x, J_μ) of the diffusion SDE (3.1): ∂x_0/∂x_T = J_x I,
    ∂x_0/∂μ = J_μ I.  Scalars (float64 tensors)."""
    a_T, a_0 = schedule.alpha(_t(t_start)), schedule.alpha(_t(t_end))
    tau_T, tau_0 = tau(schedule, t_start, data_std), tau(schedule, t_end, data_std)
    j_x = tau_0**2 / tau_T**2 * a_T / a_0
    return j_x, a_0 - j_x * a_T


class GaussianEpsModel(nn.Module):
    """The exact ε-model of the toy, ``model(x, t, z=μ) -> ε*``, with s as a learnable parameter θ.

    x, z: (b, d); t: (b,).  ``data_std`` is an nn.Parameter (0-dim) so that θ-gradients can be
    checked against ``ode_gradients``.
    """

    def __init__(self, schedule, data_std: float = 0.5, dtype=torch.float64):
        super().__init__()
        self.schedule = schedule
        self.data_std = nn.Parameter(torch.tensor(float(data_std), dtype=dtype))

    def forward(self, x, t, z=None):
        mu = torch.zeros_like(x) if z is None else z
        return eps_star(self.schedule, x, t, mu, self.data_std.to(x.dtype))


class GaussianVelocityModel(GaussianEpsModel):
    """The exact velocity model of the toy, ``model(x, t, z=μ) -> u*`` (flow-matching prediction; wrap it in
    ``adjointlib.EpsilonFromVelocity`` to sample), with s as the learnable parameter θ.  x, z: (b, d); t: (b,)."""

    def forward(self, x, t, z=None):
        mu = torch.zeros_like(x) if z is None else z
        return velocity_star(self.schedule, x, t, mu, self.data_std.to(x.dtype))
