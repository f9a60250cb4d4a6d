"""Forward samplers over a time grid: DDIM, DPM-Solver-2M and SDE-DPM-Solver-1.

``solve`` runs one of them from x_T at times[0] to x_0 at times[-1] and, when asked,
records the states and model outputs it visits (the "recorded states" of paper §6.6
and Table 5), so that the adjoint can evaluate its VJPs on the sampling trajectory.

Conditional information z is None, one tensor for all steps, or a per-step schedule
(a list/tuple with one tensor per step: step i, from times[i] to times[i+1], uses z[i];
paper Thm 2.2).  DPM-Solver-2M restarts with a DDIM step where z changes (a new tensor object),
since its finite difference of ε would otherwise straddle the jump.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from .models import call_model
from .steps import FORWARD_STEPS, sde_dpm_solver_1_step
from .validation import check_condition, check_noises, check_state

__all__ = ["Trajectory", "solve", "sampler_step", "condition_at", "check_conditions", "draw_noises"]


@dataclass
class Trajectory:
    """What a forward solve visited.

    times: (N+1,) float64, decreasing.  states[i]: x at times[i], (b, ...) (states[0] = x_T,
    states[-1] = x_0), eps[i]: ε_θ(states[i], z_i, times[i]) for i < N — both empty when not
    recorded.  x0: the output, (b, ...).  noises: (N, b, ...) or None.
    """

    times: torch.Tensor
    x0: torch.Tensor
    states: list
    eps: list
    noises: torch.Tensor | None
    order: int
    sde: bool


def condition_at(z, step: int):
    """The conditional information of forward step ``step`` (z itself unless z is a schedule)."""
    return z[step] if isinstance(z, (list, tuple)) else z


def check_conditions(z, x: torch.Tensor, steps: int) -> None:
    """Validate z: None, a tensor, or a list/tuple of ``steps`` tensors (one per step)."""
    if z is None:
        return
    if isinstance(z, (list, tuple)):
        if len(z) != steps:
            raise ValueError(f"a per-step z schedule needs one z per step: got {len(z)} for {steps} steps")
        for i, zi in enumerate(z):
            check_condition(zi, x, f"z[{i}]")
    else:
        check_condition(z, x)


def draw_noises(steps: int, x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noises for an SDE solve, shape (steps, *x.shape), x's dtype and device."""
    return torch.randn((steps, *x.shape), generator=generator, dtype=x.dtype, device=x.device)


def sampler_step(x_T, z, steps: int, *, order: int, sde: bool, noises):
    """Validate a sampler's inputs and return its step function (DDIM, DPM-Solver-2M or SDE-DPM-Solver-1)."""
    check_state(x_T)
    check_conditions(z, x_T, steps)
    if order not in FORWARD_STEPS:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if sde:
        if order != 1:
            raise ValueError("sde=True samples with SDE-DPM-Solver-1 (eq. 3.6): order must be 1")
        check_noises(noises, steps, x_T)
    elif noises is not None:
        raise ValueError("noises were given but sde=False")
    return sde_dpm_solver_1_step if sde else FORWARD_STEPS[order]


def solve(model, schedule, x_T, z, times, *, order: int = 1, sde: bool = False, noises=None,
          record: bool | str = True, progress: bool | None = None):
    """Sample x_0 from x_T along ``times`` (paper eqs. 3.6 and §7.3).

    ODE: order 1 = DDIM, order 2 = DPM-Solver-2M.  SDE (``sde=True``): SDE-DPM-Solver-1 with
    ``noises`` of shape (N, *x_T.shape).  record: True (states and model outputs), "states" (states
    only: enough for an adjoint whose grid is a subset of ``times``) or False (neither).
    Returns (x_0, Trajectory).  Runs without building an autograd graph only if
    called under ``torch.no_grad()``; otherwise it is differentiable by plain autograd.
    """
    steps = len(times) - 1
    step_fn = sampler_step(x_T, z, steps, order=order, sde=sde, noises=noises)

    x, prev = x_T, None
    if record not in (True, False, "states"):
        raise ValueError(f"record must be True, False or 'states', got {record!r}")
    states, eps_list = ([x_T], []) if record else ([], [])
    for i in tqdm(range(steps), desc="sampling", disable=progress is not True, leave=False):
        s, t = times[i], times[i + 1]
        z_i = condition_at(z, i)
        if i > 0 and z_i is not condition_at(z, i - 1):
            prev = None  # z jumps here: restart the multistep history with a first-order step
        eps = call_model(model, x, float(s), z_i)
        x = step_fn(schedule, x, s, t, eps, prev=prev, noise=noises[i] if sde else None)
        prev = (s, eps)
        if record:
            states.append(x)
        if record is True:
            eps_list.append(eps)
    return x, Trajectory(times, x, states, eps_list, noises, order, sde)
