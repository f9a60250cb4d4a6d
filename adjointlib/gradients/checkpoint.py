"""``checkpoint``: autograd through the sampler with per-step gradient checkpointing.

Each step (one network evaluation and the solver update) runs under
``torch.utils.checkpoint.checkpoint``: only its inputs and outputs (the states x_{t_i} and, for
DPM-Solver-2M, the model outputs ε_i) are kept, and the step is re-run during the backward pass
to rebuild its activations.  The gradient is exactly backprop's (same operations, same order);
memory: O(N) states but one step's activations; cost: 2N forward evaluations and N VJPs.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from ..models import call_model
from ..solvers import check_conditions, condition_at
from ..steps import FORWARD_STEPS, sde_dpm_solver_1_step
from ..validation import check_noises, check_state

__all__ = ["checkpoint_sample"]


def _step(model, schedule, step_fn, x, s, t, z_i, prev, noise):
    eps = call_model(model, x, float(s), z_i)
    return step_fn(schedule, x, s, t, eps, prev=prev, noise=noise), eps


def checkpoint_sample(model, schedule, x_T, z, times, *, order=1, sde=False, noises=None, params=()):
    """x_0 by DDIM / DPM-Solver-2M / SDE-DPM-Solver-1 (as ``solve``), one checkpoint per step.

    Shapes as ``backprop_sample``; ``params`` is not needed (autograd reaches every tensor that
    requires grad).  Returns x_0, (b, ...).
    """
    check_state(x_T)
    steps = len(times) - 1
    check_conditions(z, x_T, steps)
    if order not in FORWARD_STEPS:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if sde:
        if order != 1:
            raise ValueError("sde=True samples with SDE-DPM-Solver-1 (eq. 3.6): order must be 1")
        check_noises(noises, steps, x_T)
    elif noises is not None:
        raise ValueError("noises were given but sde=False")
    step_fn = sde_dpm_solver_1_step if sde else FORWARD_STEPS[order]
    x, prev = x_T, None
    for i in range(steps):
        s, t = times[i], times[i + 1]
        noise = noises[i] if sde else None
        if torch.is_grad_enabled():
            x, eps = checkpoint(_step, model, schedule, step_fn, x, s, t, condition_at(z, i), prev, noise,
                                use_reentrant=False)
        else:
            x, eps = _step(model, schedule, step_fn, x, s, t, condition_at(z, i), prev, noise)
        prev = (s, eps) if order == 2 else None
    return x
