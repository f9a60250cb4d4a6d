"""``checkpoint``: autograd through the sampler with per-step gradient checkpointing.

Each step (one network evaluation and the solver update) is one autograd node that runs under
``torch.no_grad()`` and keeps only its inputs — the state x_{t_i} and, for DPM-Solver-2M, the previous
model output ε_{i−1} (its outputs x_{t_{i+1}}, ε_i are the next step's inputs).  Its backward pass
re-runs the step with a graph and returns the VJPs w.r.t. x, ε_{i−1}, z and θ: the gradient is
backprop's (same operations; only the order in which θ's per-step terms are summed may differ, by
round-off); memory: O(N) states but one step's activations; cost: 2N forward evaluations and N VJPs.
(``torch.utils.checkpoint`` without reentrancy would also keep each step's graph nodes, about a
megabyte per UNet step; with reentrancy it cannot return θ-gradients to ``torch.autograd.grad``.)
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..models import call_model
from ..solvers import condition_at, sampler_step

__all__ = ["checkpoint_sample"]


class _CheckpointedStep(torch.autograd.Function):
    """inputs: (step, x, eps_prev, z_i, *params) → (x_next, eps); ``step(x, eps_prev, z_i)`` is the closure."""

    @staticmethod
    def forward(ctx, step, x, eps_prev, z_i, *params):
        with torch.no_grad():
            x_next, eps = step(x, eps_prev, z_i)
        ctx.step, ctx.n_params = step, len(params)
        ctx.save_for_backward(x, eps_prev, z_i, *params)
        return x_next, eps

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x_next, grad_eps):
        x, eps_prev, z_i, *params = ctx.saved_tensors
        leaves = [None if v is None or not v.is_floating_point() else v.detach().requires_grad_(True)
                  for v in (x, eps_prev, z_i)]
        with torch.enable_grad():
            x_next, eps = ctx.step(*[leaf if leaf is not None else v for leaf, v in zip(leaves, (x, eps_prev, z_i))])
            wrt = [v for v in leaves if v is not None] + params
            grads = iter(torch.autograd.grad([x_next, eps], wrt, grad_outputs=[grad_x_next, grad_eps],
                                             allow_unused=True))
        out = [None if leaf is None else next(grads) for leaf in leaves]
        return (None, *out, *grads)


def checkpoint_sample(model, schedule, x_T, z, times, *, order=1, sde=False, noises=None, params=()):
    """x_0 by DDIM / DPM-Solver-2M / SDE-DPM-Solver-1 (as ``solve``), one checkpointed node per step.

    Like ``solve``, DPM-Solver-2M restarts with a first-order step where a per-step z changes (a new tensor).
    x_T: (b, ...); z: None, (b, ...) or one tensor per step; times: (N+1,) decreasing; params: the
    tensors θ whose gradient is wanted (``sample`` passes the model's parameters requiring grad).
    Returns x_0, (b, ...).
    """
    steps = len(times) - 1
    step_fn = sampler_step(x_T, z, steps, order=order, sde=sde, noises=noises)
    x, eps = x_T, None
    for i in range(steps):
        s, t = times[i], times[i + 1]
        r = times[i - 1] if i else None
        noise = noises[i] if sde else None

        def step(x, eps_prev, z_i, s=s, t=t, r=r, noise=noise):
            eps_s = call_model(model, x, float(s), z_i)
            prev = None if eps_prev is None else (r, eps_prev)
            return step_fn(schedule, x, s, t, eps_s, prev=prev, noise=noise), eps_s

        z_i = condition_at(z, i)
        restart = i > 0 and z_i is not condition_at(z, i - 1)  # as ``solve``: a z jump restarts the 2M history
        x, eps = _CheckpointedStep.apply(step, x, eps if order == 2 and not restart else None, z_i, *params)
    return x
