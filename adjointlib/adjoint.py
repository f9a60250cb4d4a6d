"""AdjointDEIS: solve the adjoint of the diffusion ODE/SDE from x_0 back to x_T.

``adjoint_deis`` integrates the adjoint state [a_x, a_z, a_θ] from t_end to t_start with
AdjointDEIS-1 or -2M (paper eqs. 2.14, 2.15/B.31, Algorithm 1; SDE: Prop. 3.1, factor 2),
one network evaluation and one VJP per step, on its own grid of M steps (M may differ from
the sampling grid's N — "decoupled grids", paper §6.6).  Its grid, order and record mode come
from the plan's prepared ``adjointlib.gradients.Adjoint`` (resolved once, at call time).

Where the states x_t at the adjoint grid come from:
- recorded: the sampling trajectory's states (and model outputs when the adjoint grid has times off
  the sampling grid: record "states+eps").  A time on the sampling grid uses the recorded state itself.
  A time τ strictly inside a sampling step s → t (s > τ > t) uses one step of the same kind from the
  recorded x_s with the recorded ε_θ(x_s) (no extra network evaluation): a DDIM step for the ODE; for
  the SDE an SDE-DPM-Solver-1 step whose noise is the Brownian-bridge mean of the recorded step noise ξ,
  sqrt((ρ_s − ρ_τ)/(ρ_s − ρ_t)) ξ with ρ = e^{−2λ} (derivations/sde_adjoint.py).
- recomputed (record "none"; ODE only): starting from x_0, each adjoint step also moves the state from
  t to s with the inverse sampler step (DDIM or DPM-Solver-2M run towards noise), reusing the ε_θ(x_t)
  of the VJP, so recomputation costs no extra network evaluation (paper Table 5, "record ✗").  SDE
  states cannot be recomputed (the paper's Remark 3.1).

With a per-step z schedule every sampling step boundary lies on the adjoint grid, each adjoint step
uses the z of the sampling step containing it, and the gradient of z_i is the sum of the a_z
increments inside step i (paper Thm 2.2 and notes §5.4); the 2M history restarts where z changes
value, since V is not smooth across a jump of z.
"""
from __future__ import annotations

import math

import torch

from .grids import grid_index
from .models import model_vjp
from .plan import SamplingPlan
from .solvers import Trajectory
from .steps import ADJOINT_STEPS, FORWARD_STEPS, ddim_step, sde_dpm_solver_1_step
from .validation import FiniteGuard

__all__ = ["adjoint_deis", "state_on_recorded_trajectory"]

_RECORD_RANK = {"none": 0, "states": 1, "states+eps": 2}


def state_on_recorded_trajectory(plan: SamplingPlan, trajectory: Trajectory, tau: float) -> torch.Tensor:
    """x_τ from the recorded trajectory: the recorded state, or one step from the recorded
    state before τ (DDIM for the ODE; SDE-DPM-Solver-1 with Brownian-bridge-mean noise).  (b, ...).

    Raises:
        ValueError: τ is off the sampling grid and the trajectory has no recorded model outputs.
    """
    times, schedule = plan.times, plan.schedule
    index = grid_index(times, tau)
    if index is not None:
        return trajectory.states[index]
    i = int(torch.nonzero(times > tau)[-1])
    if not trajectory.eps:
        raise ValueError(f"t={tau:.6g} is off the sampling grid and the trajectory has no recorded model "
                         "outputs: solve with record='states+eps'")
    s, t = times[i], times[i + 1]
    x_s, eps_s = trajectory.states[i], trajectory.eps[i]
    if not plan.sampler.sde:
        return ddim_step(schedule, x_s, s, tau, eps_s)
    (_, _, l_s), (_, _, l_tau), (_, _, l_t) = schedule.alpha_sigma_lam(s, tau, t)
    fraction = math.expm1(-2.0 * (l_tau - l_s)) / math.expm1(-2.0 * (l_t - l_s))
    return sde_dpm_solver_1_step(schedule, x_s, s, tau, eps_s, noise=math.sqrt(fraction) * plan.noises[i])


def adjoint_deis(model, plan: SamplingPlan, trajectory: Trajectory, grad_x0: torch.Tensor, params=()):
    """Gradients of L(x_0) w.r.t. x_T, z and θ by AdjointDEIS (paper Alg. 1, eqs. 2.14, 2.15; Prop. 3.1).

    plan: a ``SamplingPlan`` whose gradient is a prepared ``Adjoint`` (grid, order, record mode);
    trajectory: the forward solve of that plan (``integrate(model, plan, x_T, record=plan.gradient.record)``);
    grad_x0: ∂L/∂x_0 = a_x(t_end), (b, ...); params: tensors θ the model reads whose gradient is wanted.
    Returns (a_x(T) shaped like x_T, [a_z for each tensor of ``plan.conditions.inputs()``], [a_θ]).
    Raises:
        ValueError: the plan's gradient is not a prepared adjoint, the trajectory recorded less than the
            plan needs, or grad_x0 has the wrong shape.
        FloatingPointError: the model returned NaN/Inf during the adjoint pass.
    """
    adjoint = plan.gradient
    if getattr(adjoint, "name", None) != "adjoint":
        raise ValueError("adjoint_deis needs a plan prepared with gradient='adjoint' (plan.with_gradient)")
    if _RECORD_RANK[trajectory.record] < _RECORD_RANK[adjoint.record]:
        raise ValueError(f"the adjoint needs record={adjoint.record!r} but the trajectory has {trajectory.record!r}")
    if grad_x0.shape != trajectory.x0.shape:
        raise ValueError(f"grad_x0 has shape {tuple(grad_x0.shape)}, expected {tuple(trajectory.x0.shape)}")
    schedule, grid, conditions = plan.schedule, adjoint.times, plan.conditions
    step_fn, recorded = ADJOINT_STEPS[adjoint.order], adjoint.record != "none"
    guard = FiniteGuard("adjoint pass")
    leaves = [v.detach().requires_grad_(True) for v in conditions.inputs()]
    leaf_conditions = conditions.with_inputs(leaves)
    grads_z = [torch.zeros_like(v) for v in leaves]
    grads_params = [torch.zeros_like(p) for p in params]
    a_x, x_state, prev, prev_eps = grad_x0, trajectory.x0, None, None

    for j in reversed(range(len(grid) - 1)):
        t, s = grid[j + 1], grid[j]
        cell = adjoint.cells[j]
        if adjoint.restarts[j]:
            prev, prev_eps = None, None
        z_cell = leaf_conditions.at(cell)
        inputs = ([z_cell] if leaves else []) + list(params)
        x_t = state_on_recorded_trajectory(plan, trajectory, float(t)) if recorded else x_state
        eps, v_x, v_rest = model_vjp(model, x_t, float(t), z_cell, a_x, inputs, guard, j)
        vjps = (v_x, *v_rest)
        a_x, increments = step_fn(schedule, a_x, t, s, vjps, prev=prev, sde=plan.sampler.sde)
        if leaves:
            inc_z, *increments = increments
            grads_z[cell if conditions.per_step else 0] += inc_z
        for k, inc in enumerate(increments):
            grads_params[k] += inc
        if not recorded:
            x_state = FORWARD_STEPS[adjoint.order](schedule, x_t, t, s, eps, prev=prev_eps)
        prev, prev_eps = (t, vjps), (t, eps)
    guard.check()
    return a_x, grads_z, grads_params
