"""Forward sampling with the exponential integrators: DDIM, DPM-Solver-2M and SDE-DPM-Solver-1.

``integrate`` runs the plan's sampler from x_T at times[0] to x_0 at times[-1] and, when asked,
records the states and model outputs it visits (the "recorded states" of paper §6.6 and Table 5),
so that the adjoint can evaluate its VJPs on the sampling trajectory.  ``solve`` is the same with
the plan built from explicit arguments.

Conditional information: step i, from times[i] to times[i+1], uses the plan's z of step i (paper
Thm 2.2).  DPM-Solver-2M restarts with a DDIM step where z changes value, since its finite
difference of ε would otherwise straddle the jump.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from .models import call_model
from .plan import SamplingPlan, plan_sampling
from .samplers import ExponentialIntegrator
from .validation import FiniteGuard, check_model

__all__ = ["Trajectory", "RECORD_MODES", "integrate", "solve"]

#: What a forward solve keeps: states and model outputs, states only, or nothing (the adjoint then
#: recomputes the states backwards, ODE only).
RECORD_MODES = ("states+eps", "states", "none")


@dataclass(frozen=True)
class Trajectory:
    """What a forward solve visited.

    x0: the output, (b, ...).  record: one of ``RECORD_MODES``.  states[i]: x at times[i], (b, ...)
    (states[0] = x_T, states[-1] = x_0), empty unless recorded; eps[i]: ε_θ(states[i], z_i, times[i])
    for i < N, empty unless record is "states+eps".
    """

    x0: torch.Tensor
    record: str
    states: tuple = ()
    eps: tuple = ()


def integrate(model, plan: SamplingPlan, x_T: torch.Tensor, record: str = "none", progress: bool | None = None,
              guard: FiniteGuard | None = None):
    """Sample x_0 from x_T by the plan's exponential integrator (paper eqs. 3.6 and §7.3).

    Returns (x_0 (b, ...), Trajectory).  Differentiable by plain autograd unless run under
    ``torch.no_grad()``.  ``guard`` collects the finiteness of every model output; without one, a guard
    is made and checked at the end of the pass (one synchronisation per pass).
    Raises:
        ValueError: an unknown record mode, or a sampler that is not an exponential integrator.
        FloatingPointError: the model returned NaN/Inf (naming the step and time).
    """
    if record not in RECORD_MODES:
        raise ValueError(f"record must be one of {RECORD_MODES}, got {record!r}")
    if not isinstance(plan.sampler, ExponentialIntegrator):
        raise ValueError(f"integrate runs DDIM, DPM-Solver-2M and SDE-DPM-Solver-1, not {plan.sampler.name!r}")
    own_guard = guard is None
    guard = FiniteGuard("sampling") if own_guard else guard
    step_fn, times, conditions = plan.sampler.step, plan.times, plan.conditions
    x, prev = x_T, None
    keep_states, keep_eps = record != "none", record == "states+eps"
    states, eps_list = [x_T], []
    for i in tqdm(range(plan.steps), desc="sampling", disable=progress is not True, leave=False):
        s, t = times[i], times[i + 1]
        if conditions.changes[i]:
            prev = None  # z jumps here: restart the multistep history with a first-order step
        eps = call_model(model, x, float(s), conditions.at(i), guard, i)
        x = step_fn(plan.schedule, x, s, t, eps, prev=prev, noise=None if plan.noises is None else plan.noises[i])
        prev = (s, eps)
        if keep_states:
            states.append(x)
        if keep_eps:
            eps_list.append(eps)
    if own_guard:
        guard.check()
    if record == "none":
        return x, Trajectory(x, record)
    return x, Trajectory(x, record, tuple(states), tuple(eps_list))


def solve(model, schedule, x_T, z, times, *, sampler="ddim", noises=None, record: str = "none",
          progress: bool | None = None):
    """Sample x_0 from x_T along ``times`` with DDIM, DPM-Solver-2M or SDE-DPM-Solver-1 (paper §7.3, eq. 3.6).

    model(x, t, z) -> ε; x_T: (b, ...); z: None, (b, ...) or one tensor per step; times: an int N or a
    decreasing grid (schedule's time unit); sampler: "ddim", "dpm-solver-2m" or "sde-dpm-solver-1" (with
    ``noises`` (N, *x_T.shape)); record: one of ``RECORD_MODES``.  Returns (x_0 (b, ...), Trajectory).
    Differentiable by plain autograd unless called under ``torch.no_grad()``.
    Raises:
        TypeError, ValueError: invalid arguments (``plan_sampling``), or another sampler kind.
        FloatingPointError: the model returned NaN/Inf.
    """
    check_model(model)
    plan = plan_sampling(schedule, x_T, z, steps=times, sampler=sampler, noises=noises)
    return integrate(model, plan, x_T, record, progress)
