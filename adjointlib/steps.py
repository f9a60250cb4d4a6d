"""Stateless single steps of the forward samplers and of AdjointDEIS.

Forward steps share one signature and map x_s to x_t with s > t (towards data):

    step(schedule, x_s, s, t, eps_s, prev=None, noise=None) -> x_t

``prev = (r, eps_r)`` is the previous (noisier) point of a multistep method, ``noise``
the standard normal draw of an SDE step.  Adjoint steps share one signature and map
the adjoint from t to s with t < s (towards noise):

    adjoint_step(schedule, a_x, t, s, vjps, prev=None, sde=False) -> (a_x(s), increments)

``vjps = (v_x, v_1, v_2, ...)`` with v_x = a_x(t)ᵀ ∂ε/∂x and v_k = a_x(t)ᵀ ∂ε/∂p_k for the
other differentiated inputs p_k (z and the parameters θ), all at (x_t, z, t); ``prev =
(r, vjps_r)``.  ``increments[k]`` is added to a_{p_k}: a_{p_k}(s) = a_{p_k}(t) + increments[k].
In the adjoint h = λ_s − λ_t < 0 (paper §1.5).  Coefficients are float64 Python numbers.
Derived in derivations/solver_coefficients.py.
"""
from __future__ import annotations

import math


__all__ = [
    "ddim_step",
    "dpm_solver_2m_step",
    "sde_dpm_solver_1_step",
    "adjoint_deis_1_step",
    "adjoint_deis_2m_step",
    "FORWARD_STEPS",
    "ADJOINT_STEPS",
]


def ddim_step(schedule, x_s, s, t, eps_s, prev=None, noise=None):
    """DDIM = DPM-Solver-1 = DEIS-1 (Lu et al. 2022, eq. 3.7; paper §7.3).

    x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε_θ(x_s, z, s),  h = λ_t − λ_s.
    Shapes: x_s, eps_s (b, ...) → (b, ...).  Run with s < t it is the DDIM-inversion step.
    """
    (a_s, _, l_s), (a_t, sg_t, l_t) = schedule.alpha_sigma_lam(s, t)
    return (a_t / a_s) * x_s - sg_t * math.expm1(l_t - l_s) * eps_s


def dpm_solver_2m_step(schedule, x_s, s, t, eps_s, prev=None, noise=None):
    """DPM-Solver-2M, multistep, noise prediction (Lu et al. 2022b, Alg. 2 with ε; diffusers 'dpmsolver').

    x_t = (α_t/α_s) x_s − σ_t (e^h − 1) [ε_s + (ε_s − ε_r)/(2 r₀)],  h = λ_t − λ_s,
    r₀ = (λ_s − λ_r)/h.  Without ``prev = (r, eps_r)`` it is a DDIM step (warm start).
    Shapes: (b, ...) → (b, ...).
    """
    if prev is None:
        return ddim_step(schedule, x_s, s, t, eps_s)
    r, eps_r = prev
    (a_s, _, l_s), (a_t, sg_t, l_t), (_, _, l_r) = schedule.alpha_sigma_lam(s, t, r)
    h = l_t - l_s
    r0 = (l_s - l_r) / h
    d = eps_s + (eps_s - eps_r) / (2.0 * r0)
    return (a_t / a_s) * x_s - sg_t * math.expm1(h) * d


def sde_dpm_solver_1_step(schedule, x_s, s, t, eps_s, prev=None, noise=None):
    """SDE-DPM-Solver-1 (paper eq. 3.6; Lu et al. 2022b).

    x_t = (α_t/α_s) x_s − 2σ_t (e^h − 1) ε_θ(x_s, z, s) + σ_t sqrt(e^{2h} − 1) ξ,
    h = λ_t − λ_s > 0, ξ = ``noise`` ~ N(0, I).  Shapes: (b, ...) → (b, ...).
    Raises:
        ValueError: ``noise`` is None.
    """
    if noise is None:
        raise ValueError("sde_dpm_solver_1_step needs a noise tensor")
    (a_s, _, l_s), (a_t, sg_t, l_t) = schedule.alpha_sigma_lam(s, t)
    h = l_t - l_s
    return (a_t / a_s) * x_s - 2.0 * sg_t * math.expm1(h) * eps_s + sg_t * math.sqrt(math.expm1(2.0 * h)) * noise


def _adjoint_update(schedule, a_x, t, s, d_x, d_rest, sde):
    """a_x(s) = (α_t/α_s) a_x(t) + c σ_s/α_s² (e^h − 1) D_x;  Δa_p = c σ_s/α_s (e^h − 1) D_p; c = 2 for SDEs."""
    (a_t, _, l_t), (a_s, sg_s, l_s) = schedule.alpha_sigma_lam(t, s)
    c = (2.0 if sde else 1.0) * math.expm1(l_s - l_t)
    new_a_x = (a_t / a_s) * a_x + (c * sg_s / a_s**2) * d_x
    increments = [(c * sg_s / a_s) * d for d in d_rest]
    return new_a_x, increments


def _scaled(schedule, t, vjps):
    """Scaled VJPs of eqs. 2.11/B.28: V(x; t) = α_t² v_x, V(p; t) = α_t v_p."""
    ((a_t, _, _),) = schedule.alpha_sigma_lam(t)
    v_x, *v_rest = vjps
    return a_t**2 * v_x, [a_t * v for v in v_rest]


def adjoint_deis_1_step(schedule, a_x, t, s, vjps, prev=None, sde=False):
    """AdjointDEIS-1 (paper eq. 2.14 = B.21/B.22; SDE version §6.5 with factor 2).

    a_x(s) = (α_t/α_s) a_x(t) + c σ_s (e^h − 1) (α_t²/α_s²) a_x(t)ᵀ ∂ε/∂x_t
    a_p(s) = a_p(t)           + c σ_s (e^h − 1) (α_t/α_s)   a_x(t)ᵀ ∂ε/∂p     (p = z, θ)
    h = λ_s − λ_t < 0, c = 1 (ODE) or 2 (diffusion SDE, Prop. 3.1).  VJPs at (x_t, z, t).
    Shapes: a_x, v_x (b, ...); v_p shaped like p.  Returns (a_x(s), [Δa_p]).
    """
    big_v_x, big_v_rest = _scaled(schedule, t, vjps)
    return _adjoint_update(schedule, a_x, t, s, big_v_x, big_v_rest, sde)


def adjoint_deis_2m_step(schedule, a_x, t, s, vjps, prev=None, sde=False):
    """AdjointDEIS-2M (paper eqs. 2.15 = B.27, B.31; Algorithm 1 lines 10–16, typos fixed).

    D = (1 + 1/(2ρ)) V(t) − 1/(2ρ) V(r),  ρ = (λ_t − λ_r)/(λ_s − λ_t) = h_{i−1}/h_i,
    a_x(s) = (α_t/α_s) a_x(t) + c σ_s/α_s² (e^h − 1) D_x,   a_p(s) = a_p(t) + c σ_s/α_s (e^h − 1) D_p,
    with V(x; t) = α_t² a_x(t)ᵀ∂ε/∂x_t and V(p; t) = α_t a_x(t)ᵀ∂ε/∂p (eqs. 2.11, B.28).
    Without ``prev = (r, vjps_r)`` it is an AdjointDEIS-1 step (Algorithm 1's warm start).
    """
    if prev is None:
        return adjoint_deis_1_step(schedule, a_x, t, s, vjps, sde=sde)
    r, vjps_r = prev
    big_v_x, big_v_rest = _scaled(schedule, t, vjps)
    big_r_x, big_r_rest = _scaled(schedule, r, vjps_r)
    (_, _, l_t), (_, _, l_s), (_, _, l_r) = schedule.alpha_sigma_lam(t, s, r)
    rho = (l_t - l_r) / (l_s - l_t)
    w = 1.0 / (2.0 * rho)
    d_x = (1.0 + w) * big_v_x - w * big_r_x
    d_rest = [(1.0 + w) * v - w * vr for v, vr in zip(big_v_rest, big_r_rest)]
    return _adjoint_update(schedule, a_x, t, s, d_x, d_rest, sde)


FORWARD_STEPS = {1: ddim_step, 2: dpm_solver_2m_step}
ADJOINT_STEPS = {1: adjoint_deis_1_step, 2: adjoint_deis_2m_step}
