"""``blackbox``: an AdjointDPM-style continuous adjoint with a generic ODE solver (torchdiffeq).

AdjointDPM (Pan et al., ICLR 2024; paper A.12–A.13, derivations/adjointdpm.py) removes the
linear term of the PF-ODE with y = x/α and the VE noise level ν = e^{−λ} = σ/α:

    dy/dν = ε_θ(α(ν) y, z, t(ν)),   t(ν) = t_λ(−log ν),  α(ν) = α_{t(ν)}  (= 1/sqrt(1 + ν²) for VP schedules),

and hands it to ``torchdiffeq.odeint_adjoint``, which solves the adjoint (A.13) for
[y, a_y, a_z, a_θ] backwards with the same generic solver.  ``method="rk4"`` takes one
classical-RK (3/8 rule) step per interval of ``times`` (mapped to ν) and, as the AdjointDPM code,
asks for the solution at every grid time, so the backward pass restarts y from the stored forward
state at each grid time; ``method="dopri5"`` is adaptive with ``rtol``/``atol`` and only stores the
end point, so y is re-solved backwards.  ODE only; z a tensor or None (no per-step schedule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..models import call_model
from ..samplers import TorchdiffeqSampler
from .base import refuse_sampler

__all__ = ["NuODE", "Blackbox"]


class NuODE(nn.Module):
    """The PF-ODE in (ν, y): ``forward(ν, y) = ε_θ(α(ν) y, z, t(ν))``, shapes (b, ...) → (b, ...)."""

    def __init__(self, model, schedule, z):
        super().__init__()
        self.model, self.schedule, self.z = model, schedule, z

    def forward(self, nu, y):
        nu = float(nu.detach())
        t = self.schedule.t_of_lam(torch.tensor(-math.log(nu), dtype=torch.float64))
        t = t.clamp(self.schedule.t_min, self.schedule.t_max)  # a float32 ν's round-off can step a hair outside
        return call_model(self.model, y * float(self.schedule.alpha(t)), float(t), self.z)


@dataclass(frozen=True)
class Blackbox:
    """torchdiffeq's ``odeint_adjoint`` on dy/dν = ε (AdjointDPM).  seminorm: the seminorm for the adjoint's
    adaptive step control (Kidger et al. 2021).  Samplers: ``TorchdiffeqSampler`` ("rk4", "dopri5"); ODE only,
    z a tensor or None (no per-step schedule)."""

    seminorm: bool = True
    name = "blackbox"
    samplers = (TorchdiffeqSampler,)

    def prepare(self, plan) -> "Blackbox":
        """Raises:
            ValueError: another sampler kind, or a per-step z schedule.
            TypeError: seminorm not a bool.
            ImportError: torchdiffeq is not installed."""
        refuse_sampler(self, plan)
        if plan.conditions.per_step:
            raise ValueError("gradient='blackbox' needs z to be a tensor or None (no per-step schedule)")
        if not isinstance(self.seminorm, bool):
            raise TypeError(f"seminorm must be True or False, got {self.seminorm!r}")
        import torchdiffeq  # noqa: F401  (refuse at call time when it is missing)

        return self

    def differentiate(self, model, plan, x_T, params):
        """x_0 (b, ...) by torchdiffeq; gradients w.r.t. x_T, z (if it requires grad) and ``params``."""
        import torchdiffeq

        sampler, z = plan.sampler, plan.conditions.at(0)
        nu = torch.exp(-plan.schedule.lam(plan.times)).to(x_T.dtype).to(x_T.device)
        if sampler.method == "rk4":
            kwargs = dict(method="rk4")
        else:
            nu = nu[[0, -1]]  # step_t: land on ν_end instead of stepping past it to ν < 0
            kwargs = dict(method=sampler.method, rtol=sampler.rtol, atol=sampler.atol, options=dict(step_t=nu[1:]))
            if self.seminorm:
                kwargs["adjoint_options"] = dict(norm="seminorm")
        z_params = (z,) if z is not None and z.is_floating_point() and z.requires_grad else ()
        alpha_start, alpha_end = plan.schedule.alpha(plan.times[[0, -1]]).tolist()
        y = torchdiffeq.odeint_adjoint(NuODE(model, plan.schedule, z), x_T / alpha_start, nu,
                                       adjoint_params=tuple(params) + z_params, **kwargs)
        return y[-1] * alpha_end
