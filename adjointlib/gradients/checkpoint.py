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

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from ..models import call_model
from ..samplers import ExponentialIntegrator
from ..validation import FiniteGuard
from .base import model_tensors, refuse_sampler

__all__ = ["Checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    """Per-step checkpointed backprop (no options).  Samplers: DDIM, DPM-Solver-2M, SDE-DPM-Solver-1."""

    name = "checkpoint"
    samplers = (ExponentialIntegrator,)

    def prepare(self, plan) -> "Checkpoint":
        """Raises ValueError for another sampler kind."""
        refuse_sampler(self, plan)
        return self

    def differentiate(self, model, plan, x_T, params):
        """x_0 (b, ...), one checkpointed node per step; z changes restart the 2M history as in ``integrate``."""
        order, times, conditions = plan.sampler.order, plan.times, plan.conditions
        guard, backward_guard = FiniteGuard("sampling"), FiniteGuard("checkpoint backward pass")
        x, eps = x_T, None
        for i in range(plan.steps):
            keep_history = order == 2 and not conditions.changes[i]
            x, eps = _CheckpointedStep.apply(plan, model, i, (guard, backward_guard), len(params), x,
                                             eps if keep_history else None, conditions.at(i), *params)
        guard.check()
        return x


def _step(plan, model, i, x, eps_prev, z_i, guard=None):
    """Step i of the plan's sampler from x with the previous model output: (x_next, ε_i)."""
    s, t = plan.times[i], plan.times[i + 1]
    eps_s = call_model(model, x, float(s), z_i, guard, i)
    prev = None if eps_prev is None else (plan.times[i - 1], eps_prev)
    noise = None if plan.noises is None else plan.noises[i]
    return plan.sampler.step(plan.schedule, x, s, t, eps_s, prev=prev, noise=noise), eps_s


class _CheckpointedStep(torch.autograd.Function):
    """(plan, model, i, (forward guard, backward guard), n_params, x, eps_prev, z_i, *params) → (x_next, ε_i);
    backward re-runs step i.  The backward guard is checked by step 0, the last to run backwards."""

    @staticmethod
    def forward(ctx, plan, model, i, guards, n_params, x, eps_prev, z_i, *params):
        with torch.no_grad():
            x_next, eps = _step(plan, model, i, x, eps_prev, z_i, guards[0])
        ctx.plan, ctx.model, ctx.i, ctx.backward_guard = plan, model, i, guards[1]
        ctx.has_eps_prev, ctx.has_z = eps_prev is not None, z_i is not None
        ctx.save_for_backward(x, *([eps_prev] if eps_prev is not None else []), *([z_i] if z_i is not None else []),
                              *params, *model_tensors(model))
        ctx.n_params = n_params
        return x_next, eps

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x_next, grad_eps):
        saved = list(ctx.saved_tensors)  # raises if an input, θ or a model tensor changed in place
        x = saved.pop(0)
        eps_prev = saved.pop(0) if ctx.has_eps_prev else None
        z_i = saved.pop(0) if ctx.has_z else None
        params = saved[:ctx.n_params]
        leaves = [None if v is None or not v.is_floating_point() else v.detach().requires_grad_(True)
                  for v in (x, eps_prev, z_i)]
        with torch.enable_grad():
            x_next, eps = _step(ctx.plan, ctx.model, ctx.i,
                                *[leaf if leaf is not None else v for leaf, v in zip(leaves, (x, eps_prev, z_i))],
                                guard=ctx.backward_guard)
            wrt = [v for v in leaves if v is not None] + params
            grads = iter(torch.autograd.grad([x_next, eps], wrt, grad_outputs=[grad_x_next, grad_eps],
                                             allow_unused=True))
        out = [None if leaf is None else next(grads) for leaf in leaves]
        if ctx.i == 0:
            ctx.backward_guard.check()
        return (None, None, None, None, None, *out, *grads)
