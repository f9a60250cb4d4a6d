"""The protocol every gradient method implements, and what they share.

A gradient method is a small frozen value (its options) with

- ``name``: its key in ``adjointlib.GRADIENT_METHODS``;
- ``samplers``: the sampler kinds (``adjointlib.samplers``) it differentiates; it refuses the others;
- ``prepare(plan) -> method``: call-time validation and resolution against a plan without gradient
  (the adjoint resolves its grid, order and record mode here); returns the prepared method;
- ``differentiate(model, plan, x_T, params) -> x_0``: runs the plan's sampler and returns x_0 with an
  autograd node whose backward pass is the method (one compact ``torch.autograd.Function`` each).

Each Function saves, with ``save_for_backward``, the inputs its backward pass reads (z, θ) and every
parameter and buffer of the model, so an in-place change between forward and backward raises as plain
autograd does instead of returning the gradient of a model that no longer exists.
"""
from __future__ import annotations

import contextlib

from torch import nn

from ..validation import check_params

__all__ = ["refuse_sampler", "model_tensors", "differentiable_params", "only_params_require_grad"]


def refuse_sampler(method, plan) -> None:
    """Refuse a plan whose sampler kind is not among ``method.samplers``.

    Raises:
        ValueError: ``plan.sampler`` is an instance of none of ``method.samplers`` (the message names both).
    """
    if not isinstance(plan.sampler, method.samplers):
        from . import GRADIENT_METHODS

        names = ", ".join(kind.__name__ for kind in method.samplers)
        takers = [name for name, other in GRADIENT_METHODS.items() if isinstance(plan.sampler, other.samplers)]
        raise ValueError(f"gradient={method.name!r} differentiates {names} samplers, not sampler="
                         f"{plan.sampler.name!r}; sampler={plan.sampler.name!r} is differentiated by gradient="
                         f"{' or '.join(map(repr, takers))} (also when you only sample, under torch.no_grad())")


def model_tensors(model) -> tuple:
    """Every parameter and buffer of ``model`` if it is an nn.Module (else ()): saved to detect in-place changes."""
    if not isinstance(model, nn.Module):
        return ()
    return tuple(model.parameters()) + tuple(model.buffers())


def differentiable_params(model, params) -> tuple:
    """``params`` checked (``validation.check_params``), or every parameter of an nn.Module model requiring grad.

    Raises:
        TypeError: params is not an iterable of floating tensors.
    """
    if params is not None:
        return check_params(params)
    if isinstance(model, nn.Module):
        return tuple(p for p in model.parameters() if p.requires_grad)
    return ()


@contextlib.contextmanager
def only_params_require_grad(model, params):
    """Within the block, the parameters of an nn.Module ``model`` that are not in ``params`` do not require grad, so
    autograd through the model records (and keeps memory for) the gradients of x, z and ``params`` only; their flags
    are restored on exit.  A no-op for other callables."""
    if not isinstance(model, nn.Module):
        yield
        return
    wanted = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in wanted]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
