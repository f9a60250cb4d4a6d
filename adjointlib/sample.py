"""``sample``: a differentiable sampler whose backward pass is AdjointDEIS.

The forward pass runs the sampler without an autograd graph; the backward pass solves the
adjoint (paper Alg. 1) with one network evaluation and one VJP per adjoint step, so only one
set of network activations is alive at any time whatever the number of steps.  Gradients
reach x_T, z (or each z_i of a per-step schedule) and every model parameter that requires grad.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch import nn

from .adjoint import adjoint_deis
from .gradients import GRAD_METHODS
from .grids import resolve_grid
from .solvers import check_conditions, draw_noises, solve
from .validation import check_state

__all__ = ["sample"]


class _AdjointSample(torch.autograd.Function):
    """inputs: (config, x_T, *z_tensors, *params) → x_0; backward = AdjointDEIS."""

    @staticmethod
    def forward(ctx, config, x_T, *tensors):
        n_z = config["n_z"]
        z_tensors = tensors[:n_z]
        z = config["z"] if n_z == 0 else (list(z_tensors) if config["scheduled"] else z_tensors[0])
        with torch.no_grad():
            x0, trajectory = solve(config["model"], config["schedule"], x_T.detach(), z, config["times"],
                                   order=config["order"], sde=config["sde"], noises=config["noises"],
                                   record=config["record"])
        ctx.config, ctx.trajectory, ctx.z = config, trajectory, z
        return x0

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x0):
        config = ctx.config
        params = config["params"]
        grad_xT, grad_z, grad_params = adjoint_deis(
            config["model"], config["schedule"], ctx.trajectory, grad_x0, ctx.z,
            adjoint_steps=config["adjoint_steps"], order=config["adjoint_order"], params=params)
        if config["n_z"] == 0:
            grads_z = []
        else:
            grads_z = list(grad_z) if config["scheduled"] else [grad_z]
        return (None, grad_xT, *grads_z, *grad_params)


def _differentiable_params(model, params):
    if params is not None:
        return tuple(params)
    if isinstance(model, nn.Module):
        return tuple(p for p in model.parameters() if p.requires_grad)
    return ()


def sample(model, schedule, x_T, z=None, *, steps, sde=False, order=1, adjoint_steps=None,
           adjoint_order=None, t_start=None, t_end=None, noises=None, generator=None, record=True,
           params=None, grad_method="adjoint", grad_options=None):
    """x_0 from x_T by DDIM / DPM-Solver-2M / SDE-DPM-Solver-1, differentiable by AdjointDEIS.

    Paper: Algorithm 1 and eqs. 2.14, 2.15, 3.6 (ODE: ``sde=False``; SDE: ``sde=True``).
    model(x, t, z) -> ε with t of shape (b,);  x_T: (b, ...);  z: None, (b, ...), or a list of
    one tensor per step (Thm 2.2).  steps: int N (grid uniform in λ from t_start to t_end,
    defaulting to the schedule's ends) or an explicit decreasing grid.  adjoint_steps /
    adjoint_order: the adjoint's grid (M steps or explicit) and order, default the sampler's.
    noises: (N, *x_T.shape) standard normals for the SDE (drawn with ``generator`` when None);
    the same noises are used by the backward pass.  record: keep the states for the adjoint
    (True) or recompute them backwards from x_0 (False, ODE only).  params: tensors whose
    gradient is wanted; default every parameter of ``model`` (an nn.Module) requiring grad.
    Returns x_0, shape of x_T; ``torch.autograd.grad(loss(x_0), [x_T, z, *params])`` runs AdjointDEIS.
    grad_method: "adjoint" (AdjointDEIS, above) or one of ``adjointlib.gradients.GRAD_METHODS``:
    "backprop", "checkpoint", "blackbox" (ODE; grad_options method/rtol/atol) or "reversible" (a
    reversible sampler, a different x_0; grad_options coupling); the adjoint_* and record
    arguments belong to "adjoint" only.
    """
    check_state(x_T)
    times = resolve_grid(schedule, steps, t_start, t_end)
    n_steps = len(times) - 1
    check_conditions(z, x_T, n_steps)
    if sde and not record:
        raise ValueError("SDE states cannot be recomputed backwards (paper Remark 3.1): use record=True")
    if sde and noises is None:
        noises = draw_noises(n_steps, x_T, generator)
    if grad_method != "adjoint":
        if grad_method not in GRAD_METHODS:
            raise ValueError(f"unknown grad_method {grad_method!r}; use 'adjoint' or one of {sorted(GRAD_METHODS)}")
        if adjoint_steps is not None or adjoint_order is not None or record is not True:
            raise ValueError("adjoint_steps, adjoint_order and record apply to grad_method='adjoint' only")
        return GRAD_METHODS[grad_method](model, schedule, x_T, z, times, order=order, sde=sde, noises=noises,
                                         params=_differentiable_params(model, params), **(grad_options or {}))
    if grad_options:
        raise ValueError("grad_options apply to grad_method other than 'adjoint'")
    scheduled = isinstance(z, (list, tuple))
    z_tensors = [] if z is None else (list(z) if scheduled else [z])
    z_tensors = [zi for zi in z_tensors if zi.is_floating_point()]
    if len(z_tensors) and scheduled and len(z_tensors) != n_steps:
        raise TypeError("a per-step z schedule must be all floating tensors")
    if record:  # keep the model outputs too only if the adjoint needs states off the sampling grid
        adjoint_grid = times if adjoint_steps is None else resolve_grid(
            schedule, adjoint_steps, float(times[0]), float(times[-1]), name="adjoint_steps")
        on_grid = all(bool(((times - tau).abs() <= 1e-9 * max(1.0, float(times.abs().max()))).any())
                      for tau in adjoint_grid)
        record = "states" if on_grid else True
    config = dict(
        model=model, schedule=schedule, times=times, order=order, sde=sde, noises=noises, record=record,
        adjoint_steps=adjoint_steps, adjoint_order=order if adjoint_order is None else adjoint_order,
        params=_differentiable_params(model, params), n_z=len(z_tensors), scheduled=scheduled, z=z,
    )
    return _AdjointSample.apply(config, x_T, *z_tensors, *config["params"])
