"""``adjoint``: AdjointDEIS (paper Alg. 1), the continuous adjoint solved by exponential integrators.

The forward pass runs the sampler without an autograd graph and keeps what the adjoint needs (its record
mode); the backward pass is ``adjointlib.adjoint.adjoint_deis``: one network evaluation and one VJP per
adjoint step, so only one set of network activations is alive at a time whatever the number of steps.
The gradient is that of the continuous ODE/SDE (optimise-then-discretise): it converges to the discrete
sampler's gradient at the adjoint's order as the steps shrink, and differs from it at a fixed N.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.autograd.function import once_differentiable

from ..adjoint import adjoint_deis
from ..grids import grid_index, resolve_grid, time_tolerance
from ..samplers import ExponentialIntegrator
from ..solvers import integrate
from .base import model_tensors, refuse_sampler

__all__ = ["Adjoint", "PreparedAdjoint"]


@dataclass(frozen=True)
class Adjoint:
    """AdjointDEIS options.  order: 1 or 2 (AdjointDEIS-1 / -2M; default the sampler's order); steps: the adjoint
    grid, None (the sampling grid), an int M (uniform in λ between the sampling grid's ends) or an explicit
    decreasing grid with the same ends (paper §6.6); recompute: rebuild the states backwards from x_0 instead of
    recording them (ODE only, paper Table 5).  Samplers: DDIM, DPM-Solver-2M, SDE-DPM-Solver-1."""

    order: int | None = None
    steps: object = None
    recompute: bool = False
    name = "adjoint"
    samplers = (ExponentialIntegrator,)

    def prepare(self, plan) -> "PreparedAdjoint":
        """Resolve grid, order, record mode and the sampling step of each adjoint step, at call time.

        Raises:
            ValueError: another sampler kind, an order other than 1/2, an adjoint grid whose ends differ from the
                sampling grid's, recompute with an SDE, or (per-step z) an adjoint step that crosses a sampling
                step boundary.
            TypeError: recompute is not a bool, or steps of the wrong type.
        """
        refuse_sampler(self, plan)
        order = plan.sampler.order if self.order is None else self.order
        if isinstance(order, bool) or order not in (1, 2):
            raise ValueError(f"the adjoint's order must be 1 or 2, got {self.order!r}")
        if not isinstance(self.recompute, bool):
            raise TypeError(f"recompute must be True or False, got {self.recompute!r}")
        times = plan.times
        grid = times if self.steps is None else resolve_grid(
            plan.schedule, self.steps, float(times[0]), float(times[-1]), name="the adjoint grid (Adjoint steps)")
        if self.recompute:
            if plan.sampler.sde:
                raise ValueError("SDE states cannot be recomputed backwards (paper Remark 3.1): use recompute=False")
            record = "none"
        else:
            on_grid = all(grid_index(times, float(tau)) is not None for tau in grid)
            record = "states" if on_grid else "states+eps"
        cells = []
        for j in range(len(grid) - 1):
            lo, hi = float(grid[j + 1]), float(grid[j])
            cell = int(torch.nonzero(times > lo + time_tolerance(float(times[0])))[-1])
            if plan.conditions.per_step and hi > float(times[cell]) + time_tolerance(float(times[0])):
                raise ValueError(
                    f"adjoint step [{lo:.6g}, {hi:.6g}] crosses a sampling step boundary; with a per-step z schedule "
                    "every sampling time must also be an adjoint time (e.g. adjoint steps a multiple of steps)")
            cells.append(cell)
        changes = plan.conditions.changes
        restarts = [False] * len(cells)
        for j in range(len(cells) - 1):  # step j follows step j + 1 in the backward pass
            restarts[j] = any(changes[k] for k in range(cells[j] + 1, cells[j + 1] + 1))
        return PreparedAdjoint(order, grid, record, tuple(cells), tuple(restarts))


@dataclass(frozen=True)
class PreparedAdjoint:
    """An ``Adjoint`` resolved for one plan: order, times (M+1,) float64, record (a ``RECORD_MODES`` value),
    cells[j] (the sampling step containing adjoint step j, from times[j] to times[j+1]) and restarts[j] (z
    changes value between adjoint steps j + 1 and j: the 2M history restarts)."""

    order: int
    times: torch.Tensor
    record: str
    cells: tuple
    restarts: tuple
    name = "adjoint"

    def differentiate(self, model, plan, x_T, params):
        """x_0 of the plan's sampler; its backward pass is AdjointDEIS.  x_T (b, ...) → x_0 (b, ...)."""
        z_inputs = plan.conditions.inputs()
        return _AdjointDEIS.apply(plan, model, len(z_inputs), len(params), x_T, *z_inputs, *params)


class _AdjointDEIS(torch.autograd.Function):
    """(plan, model, n_z, n_params, x_T, *z_inputs, *params) → x_0; backward = ``adjoint_deis``."""

    @staticmethod
    def forward(ctx, plan, model, n_z, n_params, x_T, *tensors):
        with torch.no_grad():
            x0, trajectory = integrate(model, plan, x_T.detach(), record=plan.gradient.record)
        ctx.plan, ctx.model, ctx.trajectory, ctx.n_z, ctx.n_params = plan, model, trajectory, n_z, n_params
        ctx.save_for_backward(*tensors, *model_tensors(model))
        return x0

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x0):
        saved = ctx.saved_tensors  # raises if z, θ or any model tensor was changed in place since forward
        z_inputs, params = saved[:ctx.n_z], saved[ctx.n_z:ctx.n_z + ctx.n_params]
        plan = replace(ctx.plan, conditions=ctx.plan.conditions.with_inputs(z_inputs))
        grad_x_T, grads_z, grads_params = adjoint_deis(ctx.model, plan, ctx.trajectory, grad_x0, params)
        return (None, None, None, None, grad_x_T, *grads_z, *grads_params)
