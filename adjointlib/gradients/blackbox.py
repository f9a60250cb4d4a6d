"""``blackbox``: an AdjointDPM-style continuous adjoint with a generic ODE solver (torchdiffeq).

AdjointDPM (Pan et al., ICLR 2024; paper A.12–A.13, derivations/adjointdpm.py) removes the
linear term of the PF-ODE with y = x/α and the VE noise level ν = e^{−λ} = σ/α:

    dy/dν = ε_θ(α(ν) y, z, t(ν)),   α(ν) = 1/sqrt(1 + ν²),  t(ν) = t_λ(−log ν),

and hands it to ``torchdiffeq.odeint_adjoint``, which solves the adjoint (A.13) for
[y, a_y, a_z, a_θ] backwards with the same generic solver.  ``method="rk4"`` takes one
classical-RK (3/8 rule) step per interval of ``times`` (mapped to ν) and, as the AdjointDPM code,
asks for the solution at every grid time, so the backward pass restarts y from the stored forward
state at each grid time; ``method="dopri5"`` is adaptive with ``rtol``/``atol`` and only stores the
end point, so y is re-solved backwards.  ODE only; z a tensor or None (no per-step schedule).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models import call_model
from ..solvers import check_conditions
from ..validation import check_state

__all__ = ["NuODE", "blackbox_sample"]


class NuODE(nn.Module):
    """The PF-ODE in (ν, y): ``forward(ν, y) = ε_θ(α(ν) y, z, t(ν))``, shapes (b, ...) → (b, ...)."""

    def __init__(self, model, schedule, z):
        super().__init__()
        self.model, self.schedule, self.z = model, schedule, z

    def forward(self, nu, y):
        nu = float(nu.detach())
        t = float(self.schedule.t_of_lam(torch.tensor(-math.log(nu), dtype=torch.float64)))
        return call_model(self.model, y / math.sqrt(1.0 + nu * nu), t, self.z)


def blackbox_sample(model, schedule, x_T, z, times, *, order=1, sde=False, noises=None, params=(),
                    method="rk4", rtol=1e-5, atol=1e-5, seminorm=True):
    """x_0 by a generic ODE solver on dy/dν = ε, differentiated by ``torchdiffeq.odeint_adjoint``.

    method: "rk4" (fixed grid: ``times`` mapped to ν; ``order`` is ignored, RK4 is order 4) or any
    adaptive torchdiffeq method such as "dopri5" (from times[0] to times[-1] with ``rtol``/``atol``;
    ``seminorm`` uses the seminorm for the adjoint's step control, Kidger et al. 2021).
    x_T: (b, ...); z: None or (b, ...); params: tensors θ whose gradient is wanted.  Returns x_0.
    """
    import torchdiffeq

    if sde or noises is not None:
        raise ValueError("grad_method='blackbox' integrates the PF-ODE only (torchdiffeq has no SDE adjoint)")
    if isinstance(z, (list, tuple)):
        raise ValueError("grad_method='blackbox' needs z to be a tensor or None (no per-step schedule)")
    check_state(x_T)
    check_conditions(z, x_T, len(times) - 1)
    nu = torch.exp(-schedule.lam(times)).to(x_T.dtype).to(x_T.device)
    if method == "rk4":
        kwargs = dict(method="rk4")
    else:
        nu = nu[[0, -1]]  # step_t: land on ν_end instead of stepping past it to ν < 0
        kwargs = dict(method=method, rtol=rtol, atol=atol, options=dict(step_t=nu[1:]))
        if seminorm:
            kwargs["adjoint_options"] = dict(norm="seminorm")
    z_params = (z,) if z is not None and z.is_floating_point() and z.requires_grad else ()
    func = NuODE(model, schedule, z)
    y = torchdiffeq.odeint_adjoint(func, x_T * math.sqrt(1.0 + float(nu[0]) ** 2), nu,
                                   adjoint_params=tuple(params) + z_params, **kwargs)
    return y[-1] / math.sqrt(1.0 + float(nu[-1]) ** 2)
