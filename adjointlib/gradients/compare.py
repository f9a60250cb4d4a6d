"""Run any gradient method by name and count its network work: the common harness of chapter 07 and
benchmarks/grad_*.py.

``METHODS`` (``SDE_METHODS``) maps a label ("adjoint-2M", "backprop-1", "reversible-2", "blackbox-rk4",
...) to the ``sample`` keywords that select it; ``gradient_with_counts`` returns the gradients of <c, x_0> w.r.t.
x_T, z and θ together with the forward evaluations of the sampling pass, and the forward evaluations
and VJPs of the backward pass (paper §7.2: NFE = forward + VJP evaluations).
"""
from __future__ import annotations

import torch

from ..sample import sample
from .adjoint import Adjoint
from .counting import CountingModel

__all__ = ["METHODS", "SDE_METHODS", "THEORETICAL_ORDER", "gradient_with_counts"]

METHODS = {
    "adjoint-1": dict(sampler="ddim"),
    "adjoint-2M": dict(sampler="dpm-solver-2m"),
    "adjoint-1 (recomputed)": dict(sampler="ddim", gradient=Adjoint(recompute=True)),
    "adjoint-2M (recomputed)": dict(sampler="dpm-solver-2m", gradient=Adjoint(recompute=True)),
    "backprop-1": dict(sampler="ddim", gradient="backprop"),
    "backprop-2M": dict(sampler="dpm-solver-2m", gradient="backprop"),
    "checkpoint-1": dict(sampler="ddim", gradient="checkpoint"),
    "checkpoint-2M": dict(sampler="dpm-solver-2m", gradient="checkpoint"),
    "blackbox-rk4": dict(sampler="rk4", gradient="blackbox"),
    "blackbox-dopri5": dict(sampler="dopri5", gradient="blackbox"),
    "reversible-1": dict(sampler="reversible-ddim", gradient="reversible"),
    "reversible-2": dict(sampler="reversible-midpoint", gradient="reversible"),
}
SDE_METHODS = {  # SDE-DPM-Solver-1 sampling (the reversible sampler: SDE-DPM-Solver++1 coupled)
    "adjoint-1": dict(sampler="sde-dpm-solver-1"),
    "adjoint-2M": dict(sampler="sde-dpm-solver-1", gradient=Adjoint(order=2)),
    "backprop-1": dict(sampler="sde-dpm-solver-1", gradient="backprop"),
    "checkpoint-1": dict(sampler="sde-dpm-solver-1", gradient="checkpoint"),
    "reversible-1": dict(sampler="reversible-sde", gradient="reversible"),
}

# Global order of the gradient error in h ∝ 1/N (blackbox-dopri5 is adaptive: none).  SDE: strong order 1.
THEORETICAL_ORDER = {"adjoint-1": 1, "adjoint-2M": 2, "adjoint-1 (recomputed)": 1, "adjoint-2M (recomputed)": 2,
                     "backprop-1": 1, "backprop-2M": 2, "checkpoint-1": 1, "checkpoint-2M": 2, "blackbox-rk4": 4,
                     "reversible-1": 1, "reversible-2": 2}


def gradient_with_counts(model, schedule, x_T, z, cotangent, method, steps, *, sde=False, noises=None, params=None,
                         **overrides):
    """Gradients of <cotangent, x_0> for ``METHODS[method]`` (``SDE_METHODS[method]`` when sde) and its work.

    model: an ε-model (wrapped in a ``CountingModel`` here); x_T, cotangent: (b, ...); z: None or
    (b, ...); params: tensors θ (default the model's parameters requiring grad); overrides: ``sample`` keywords
    that replace the label's (e.g. ``sampler=ReversibleSampler(form="noise")`` or ``gradient=Adjoint(steps=40)``).  Returns ({"x_T": (b, ...), "z": (b, ...) or None,
    "theta": flat (P,)}, {"forward": n, "backward_forward": n, "backward_vjp": n, "total": n}).
    """
    counter = CountingModel(model)
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    x_T = x_T.detach().clone().requires_grad_(True)
    z = None if z is None else z.detach().clone().requires_grad_(True)
    kwargs = dict((SDE_METHODS if sde else METHODS)[method], **overrides)
    x0 = sample(counter, schedule, x_T, z, steps=steps, noises=noises, params=params, **kwargs)
    forward = counter.forwards
    wrt = [x_T] + ([z] if z is not None else []) + params
    grads = torch.autograd.grad((cotangent * x0).sum(), wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]
    theta = torch.cat([g.flatten() for g in grads[1 + (z is not None):]]) if params else torch.zeros(0)
    counts = dict(forward=forward, backward_forward=counter.forwards - forward, backward_vjp=counter.vjps,
                  total=counter.total)
    return dict(x_T=grads[0], z=grads[1] if z is not None else None, theta=theta), counts
