"""Encoders: find the x_T (and, for the SDE, the noises) that the sampler maps to a given x_0.

- ``ddim_invert``: exact DDIM inversion.  Each DDIM step x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε(x_s)
  is inverted by the fixed-point iteration x_s ← (α_s/α_t) (x_t + σ_t (e^h − 1) ε(x_s)), started
  from the usual inversion step (ε(x_t) in place of ε(x_s)), so that re-running DDIM returns x_0
  to float precision (when the iteration converges: small enough steps and a Lipschitz ε).
- ``ddim_invert_one_pass``: the usual DDIM inversion (DDIM paper §4.3, DiffAE, the paper's DiM with
  N_E = 250), i.e. that iteration's starting point alone: first-order accurate, not exact.
- ``cycle_sde_encode``: Cycle-SDE noise encoding (paper eq. 3.7; Wu & De la Torre 2023): draw
  x_{t_i} ~ q(x_{t_i} | x_0) independently, set the last state to x_0 itself, and solve each
  SDE-DPM-Solver-1 step (eq. 3.6) for its noise.  Re-running the SDE sampler with these noises
  reproduces x_0 to float precision.
Derived in derivations/sde_adjoint.py (3.7).
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .models import call_model
from .plan import plan_sampling
from .steps import ddim_step
from .validation import check_model, check_state

__all__ = ["ddim_invert", "ddim_invert_one_pass", "cycle_sde_encode"]


@torch.no_grad()
def ddim_invert(model, schedule, x0, z=None, *, steps, t_start=None, t_end=None, max_iters: int = 100,
                tol: float | None = None, progress: bool | None = None):
    """x_T such that DDIM over the same grid maps it to ``x0`` (fixed-point inversion, see module doc).

    x0: (b, ...); z as for ``sample``; steps: int or explicit grid (same as the sampler's).
    tol: a sample's iteration stops when max |Δx_s| ≤ tol · max(1, |x_s|_∞) over that sample.  By default
    tol = 8·eps(dtype), and an iteration that stalls at its round-off floor (|Δx_s| stops shrinking while
    already below sqrt(eps) · max(1, |x_s|_∞)) is accepted too: in float32 a network's own round-off can keep
    |Δx_s| a little above 8·eps.  Convergence is decided per sample and a converged sample is frozen while
    the others iterate, so a sample's x_T does not depend on its batch-mates (beyond the network's own
    batch-size-dependent round-off).
    Returns x_T, (b, ...).
    Raises:
        TypeError: ``model`` is not callable; ``schedule``, ``x0``, ``z`` or ``steps`` of the wrong type
            (``plan_sampling``); the model's output is not a tensor of x0's dtype and device.
        ValueError: ``max_iters`` is not a positive int or ``tol`` is not positive; an invalid ``x0``, ``z`` or grid
            (``steps``, ``t_start``, ``t_end``: ``plan_sampling``); the model's output has another shape.
        RuntimeError: a sample reaches neither stopping rule in ``max_iters`` iterations at some step (the message
            names the time and the number of such samples).
        FloatingPointError: the model returns NaN or Inf (``call_model``).
    """
    check_model(model)
    check_state(x0, "x0")
    plan = plan_sampling(schedule, x0, z, steps=steps, t_start=t_start, t_end=t_end)
    times = plan.times
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be a positive int, got {max_iters!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be positive or None, got {tol!r}")
    eps = torch.finfo(x0.dtype).eps
    limit, floor = (8 * eps, math.sqrt(eps)) if tol is None else (tol, 0.0)
    x_t = x0
    for i in tqdm(reversed(range(len(times) - 1)), total=len(times) - 1, desc="DDIM inversion",
                  disable=progress is not True, leave=False):
        s, t = times[i], times[i + 1]
        zi = plan.conditions.at(i)
        (a_s, _, l_s), (a_t, sg_t, l_t) = schedule.alpha_sigma_lam(s, t)
        h = l_t - l_s
        x_s = ddim_step(schedule, x_t, t, s, call_model(model, x_t, float(t), zi))
        active = torch.ones(len(x0), dtype=torch.bool, device=x0.device)
        previous = torch.full((len(x0),), math.inf, dtype=x0.dtype, device=x0.device)
        for _ in range(max_iters):
            new = (a_s / a_t) * (x_t + sg_t * math.expm1(h) * call_model(model, x_s, float(s), zi))
            change = (new - x_s).flatten(1).abs().amax(1)
            x_s = torch.where(active.view(-1, *[1] * (x0.dim() - 1)), new, x_s)
            scale = x_s.flatten(1).abs().amax(1).clamp(min=1.0)
            done = (change <= limit * scale) | ((previous <= change) & (change <= floor * scale))
            previous = torch.where(active, change, previous)
            active = active & ~done
            if not bool(active.any()):
                break
        else:
            raise RuntimeError(f"DDIM inversion did not converge at t={float(s):.6g} for {int(active.sum())} of "
                               f"{len(x0)} samples (largest last change {float(change[active].max()):.3g}); "
                               "use more steps")
        x_t = x_s
    return x_t


@torch.no_grad()
def ddim_invert_one_pass(model, schedule, x0, z=None, *, steps, t_start=None, t_end=None):
    """The usual (one-pass) DDIM inversion: each step towards noise uses ε at the current state.

    Song et al. 2021 (DDIM) §4.3; the encoding of DiffAE and of the paper's DiM (N_E steps).
        x_s = (α_s/α_t) (x_t + σ_t (e^h − 1) ε_θ(x_t, z, t)),   h = λ_t − λ_s,  s > t on the grid
    (ε at x_t in place of ``ddim_invert``'s ε(x_s)), so DDIM over the same grid returns x0 only up to a
    discretisation error that shrinks with the number of steps.
    x0: (b, ...); z, steps, t_start, t_end as for ``sample``.  Returns x_T, (b, ...).
    """
    check_model(model)
    check_state(x0, "x0")
    plan = plan_sampling(schedule, x0, z, steps=steps, t_start=t_start, t_end=t_end)
    times = plan.times
    x = x0
    for i in reversed(range(plan.steps)):
        s, t = times[i], times[i + 1]
        x = ddim_step(schedule, x, t, s, call_model(model, x, float(t), plan.conditions.at(i)))
    return x


@torch.no_grad()
def cycle_sde_encode(model, schedule, x0, z=None, *, steps, t_start=None, t_end=None, generator=None, draws=None):
    """(x_T, noises) for SDE-DPM-Solver-1 reproducing ``x0`` (paper eq. 3.7).

    ξ_i = (x_{t_{i+1}} − (α_t/α_s) x_{t_i} + 2σ_t (e^h − 1) ε_θ(x_{t_i}, z, t_i)) / (σ_t sqrt(e^{2h} − 1)),
    h = λ_{t_{i+1}} − λ_{t_i} > 0, with x_{t_i} = α_{t_i} x_0 + σ_{t_i} n_i (independent n_i) for
    i < N and x_{t_N} = x_0.  draws: the n_i, (N, b, ...) standard normals (default: drawn with
    ``generator``).  Shapes: x0 (b, ...) → x_T (b, ...), noises (N, b, ...).
    Raises:
        TypeError: ``model`` is not callable, ``generator`` is not a torch.Generator, or ``schedule``, ``x0``, ``z``
            or ``steps`` of the wrong type (``plan_sampling``); the model's output is not a tensor of x0's
            dtype and device.
        ValueError: ``draws`` is not (N, *x0.shape) of x0's dtype and device; an invalid ``x0``, ``z`` or grid
            (``steps``, ``t_start``, ``t_end``: ``plan_sampling``); the model's output has another shape.
        FloatingPointError: the model returns NaN or Inf (``call_model``).
    """
    check_model(model)
    check_state(x0, "x0")
    plan = plan_sampling(schedule, x0, z, steps=steps, t_start=t_start, t_end=t_end)
    times, n = plan.times, plan.steps
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    alphas, sigmas = schedule.alpha(times).tolist(), schedule.sigma(times).tolist()
    if draws is None:
        draws = torch.randn((n, *x0.shape), generator=generator, dtype=x0.dtype, device=x0.device)
    elif tuple(draws.shape) != (n, *x0.shape) or draws.dtype != x0.dtype or draws.device != x0.device:
        raise ValueError(f"draws must be {(n, *x0.shape)} {x0.dtype} on {x0.device}, "
                         f"got {tuple(draws.shape)} {draws.dtype} on {draws.device}")
    states = [alphas[i] * x0 + sigmas[i] * draws[i] for i in range(n)] + [x0]
    noises = torch.empty_like(draws)
    for i in range(n):
        (a_s, _, l_s), (a_t, sg_t, l_t) = schedule.alpha_sigma_lam(times[i], times[i + 1])
        h = l_t - l_s
        eps = call_model(model, states[i], float(times[i]), plan.conditions.at(i))
        noises[i] = (states[i + 1] - (a_t / a_s) * states[i] + 2 * sg_t * math.expm1(h) * eps) / (
            sg_t * math.sqrt(math.expm1(2 * h)))
    return states[0], noises
