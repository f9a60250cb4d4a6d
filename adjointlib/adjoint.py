"""AdjointDEIS: solve the adjoint of the diffusion ODE/SDE from x_0 back to x_T.

``adjoint_deis`` integrates the adjoint state [a_x, a_z, a_θ] from t_end to t_start with
AdjointDEIS-1 or -2M (paper eqs. 2.14, 2.15/B.31, Algorithm 1; SDE: Prop. 3.1, factor 2),
one network evaluation and one VJP per step, on its own grid of M steps (M may differ from
the sampling grid's N — "decoupled grids", paper §6.6).

Where the states x_t at the adjoint grid come from:
- recorded (default): the sampling trajectory's states (``sample`` also keeps the model outputs
  when the adjoint grid has times off the sampling grid).  A time on the sampling grid uses
  the recorded state itself.  A time τ strictly inside a sampling step s → t (s > τ > t) uses
  one step of the same kind from the recorded x_s with the recorded ε_θ(x_s) (no extra network
  evaluation): a DDIM step for the ODE; for the SDE an SDE-DPM-Solver-1 step whose noise is
  the Brownian-bridge mean of the recorded step noise ξ, sqrt((ρ_s − ρ_τ)/(ρ_s − ρ_t)) ξ with
  ρ = e^{−2λ} (derivations/sde_adjoint.py).
- recomputed (``trajectory.states`` empty; ODE only): starting from x_0, each adjoint step
  also moves the state from t to s with the inverse sampler step (DDIM or DPM-Solver-2M run
  towards noise), reusing the ε_θ(x_t) of the VJP, so recomputation costs no extra network
  evaluation (paper Table 5, "record ✗").  SDE states cannot be recomputed (the paper's
  Remark 3.1): recording is required.

With a per-step z schedule every sampling step boundary must lie on the adjoint grid, each
adjoint step uses the z of the sampling step containing it, and the gradient of z_i is the
sum of the a_z increments inside step i (paper Thm 2.2 and notes §5.4); the 2M history is
restarted where z changes (a new tensor object), since V is not smooth across a jump of z.
"""
from __future__ import annotations

import math

import torch

from .grids import resolve_grid
from .models import model_vjp
from .solvers import Trajectory, condition_at
from .steps import ADJOINT_STEPS, FORWARD_STEPS, ddim_step, sde_dpm_solver_1_step

__all__ = ["adjoint_deis", "state_on_recorded_trajectory"]


def _time_tolerance(times: torch.Tensor) -> float:
    return 1e-9 * max(1.0, float(times.abs().max()))


def _sampling_step_containing(times: torch.Tensor, lo: float, hi: float) -> int:
    """Index i of the sampling step [times[i+1], times[i]] that contains [lo, hi]."""
    tol = _time_tolerance(times)
    for i in range(len(times) - 1):
        if float(times[i + 1]) - tol <= lo and hi <= float(times[i]) + tol:
            return i
    raise ValueError(
        f"adjoint step [{lo:.6g}, {hi:.6g}] crosses a sampling step boundary; with a per-step z schedule "
        "every sampling time must also be an adjoint time (e.g. adjoint_steps a multiple of steps)"
    )


def state_on_recorded_trajectory(schedule, trajectory: Trajectory, tau: float) -> torch.Tensor:
    """x_τ from the recorded trajectory: the recorded state, or one step from the recorded
    state before τ (DDIM for the ODE; SDE-DPM-Solver-1 with Brownian-bridge-mean noise).  (b, ...)."""
    times = trajectory.times
    tol = _time_tolerance(times)
    match = torch.nonzero((times - tau).abs() <= tol)
    if len(match):
        return trajectory.states[int(match[0])]
    i = int(torch.nonzero(times > tau)[-1])
    if not trajectory.eps:
        raise ValueError(f"t={tau:.6g} is off the sampling grid and the trajectory has no recorded model "
                         "outputs: solve with record=True")
    s, t = times[i], times[i + 1]
    x_s, eps_s = trajectory.states[i], trajectory.eps[i]
    if not trajectory.sde:
        return ddim_step(schedule, x_s, s, tau, eps_s)
    (_, _, l_s), (_, _, l_tau), (_, _, l_t) = schedule.alpha_sigma_lam(s, tau, t)
    fraction = math.expm1(-2.0 * (l_tau - l_s)) / math.expm1(-2.0 * (l_t - l_s))
    return sde_dpm_solver_1_step(schedule, x_s, s, tau, eps_s, noise=math.sqrt(fraction) * trajectory.noises[i])


def adjoint_deis(model, schedule, trajectory: Trajectory, grad_x0: torch.Tensor, z=None, *,
                 adjoint_steps=None, order: int = 1, params=()):
    """Gradients of L(x_0) w.r.t. x_T, z and θ by AdjointDEIS-``order`` (paper Alg. 1, eqs. 2.14, 2.15).

    grad_x0: ∂L/∂x_0 = a_x(t_end), shape (b, ...).  z: as given to the sampler (None, tensor, or
    per-step list).  adjoint_steps: None (the sampling grid), an int M (uniform in λ between the
    sampling grid's ends) or an explicit decreasing grid with the same ends.  params: tensors
    θ the model reads whose gradient is wanted.
    Returns (a_x(T) shaped like x_T, a_z (None, a tensor, or a list per sampling step), [a_θ]).
    """
    if order not in ADJOINT_STEPS:
        raise ValueError(f"adjoint order must be 1 or 2, got {order!r}")
    times = trajectory.times
    grid = times if adjoint_steps is None else resolve_grid(
        schedule, adjoint_steps, float(times[0]), float(times[-1]), name="adjoint_steps")
    tol = _time_tolerance(times)
    if abs(float(grid[0] - times[0])) > tol or abs(float(grid[-1] - times[-1])) > tol:
        raise ValueError("the adjoint grid must start and end at the sampling grid's t_start and t_end")
    recorded = len(trajectory.states) > 0
    if not recorded and trajectory.sde:
        raise ValueError("SDE states cannot be recomputed backwards (paper Remark 3.1): sample with record=True")
    if grad_x0.shape != trajectory.x0.shape:
        raise ValueError(f"grad_x0 has shape {tuple(grad_x0.shape)}, expected {tuple(trajectory.x0.shape)}")

    scheduled = isinstance(z, (list, tuple))
    step_fn = ADJOINT_STEPS[order]
    a_x = grad_x0
    grads_z = [None] * (len(z) if scheduled else 1)
    grads_params = [torch.zeros_like(p) for p in params]
    x_state, prev, prev_eps, prev_z = trajectory.x0, None, None, None

    for j in reversed(range(len(grid) - 1)):
        t, s = grid[j + 1], grid[j]
        cell = _sampling_step_containing(times, float(t), float(s)) if scheduled else 0
        z_cell = condition_at(z, cell)
        if scheduled and z_cell is not prev_z:
            prev, prev_eps = None, None
        z_leaf = None
        if z_cell is not None and z_cell.is_floating_point():
            z_leaf = z_cell.detach().requires_grad_(True)
        inputs = ([z_leaf] if z_leaf is not None else []) + list(params)
        x_t = state_on_recorded_trajectory(schedule, trajectory, float(t)) if recorded else x_state
        eps, v_x, v_rest = model_vjp(model, x_t, float(t), z_leaf if z_leaf is not None else z_cell, a_x, inputs)
        vjps = (v_x, *v_rest)
        a_x, increments = step_fn(schedule, a_x, t, s, vjps, prev=prev, sde=trajectory.sde)
        if z_leaf is not None:
            inc_z, *increments = increments
            grads_z[cell] = inc_z if grads_z[cell] is None else grads_z[cell] + inc_z
        for k, inc in enumerate(increments):
            grads_params[k] += inc
        if not recorded:
            x_state = FORWARD_STEPS[order](schedule, x_t, t, s, eps, prev=prev_eps)
        prev, prev_eps, prev_z = (t, vjps), (t, eps), z_cell

    if z is None:
        grad_z = None
    elif scheduled:
        grad_z = [torch.zeros_like(zi) if g is None else g for zi, g in zip(z, grads_z)]
    else:
        grad_z = grads_z[0] if grads_z[0] is not None else None
    return a_x, grad_z, grads_params
