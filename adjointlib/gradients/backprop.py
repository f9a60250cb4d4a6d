"""``backprop``: plain autograd through the discrete sampler (discretise-then-optimise).

The gradient is that of the discrete map x_T ↦ x_0 computed by ``solve`` (DDIM, DPM-Solver-2M,
SDE-DPM-Solver-1 with fixed noises) — exact for the sampler, O(h^k) from the continuous gradient.
Cost: N forward evaluations and N VJPs; memory: every step's network activations (O(N)).
"""
from __future__ import annotations

from ..solvers import solve

__all__ = ["backprop_sample"]


def backprop_sample(model, schedule, x_T, z, times, *, order=1, sde=False, noises=None, params=()):
    """x_0 = solve(x_T) with the autograd graph kept (paper §7.3 samplers, eq. 3.6 for the SDE).

    x_T: (b, ...); z: None, (b, ...) or one tensor per step; times: (N+1,) decreasing.
    ``params`` is accepted for the uniform signature and not needed: autograd reaches every
    tensor that requires grad.  Returns x_0, (b, ...).
    """
    return solve(model, schedule, x_T, z, times, order=order, sde=sde, noises=noises, record=False)[0]
