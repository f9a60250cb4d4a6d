"""Time grids for sampling (t_start → t_end, decreasing), their validation, and the time tolerance.

The default grid is uniform in λ (DPM-Solver's "logSNR" spacing): the exponential
integrators' local errors are controlled by h = λ_t − λ_s (paper §4, Thm 2.1), so
equal h is the natural choice.  A grid may also be given explicitly as a sequence of times.
Times are in the schedule's unit (continuous t, or the diffusers timestep for ``DiscreteVP``).

``time_tolerance`` is the one place that decides when two times are the same time: grids
are compared (adjoint grid vs sampling grid, Brownian sub-grids, schedule ranges) to a
relative 1e-9 of the largest time.
"""
from __future__ import annotations

import numbers

import torch

__all__ = ["time_grid", "resolve_grid", "GRID_DTYPE", "TIME_RTOL", "time_tolerance", "grid_index"]

GRID_DTYPE = torch.float64  # grids and coefficients are always computed in float64
TIME_RTOL = 1e-9


def time_tolerance(*scales: float) -> float:
    """The absolute tolerance under which two times are equal: TIME_RTOL · max(1, |scale| for each scale)."""
    return TIME_RTOL * max([1.0] + [abs(float(s)) for s in scales])


def grid_index(grid: torch.Tensor, t: float) -> int | None:
    """Index i with grid[i] = t (within ``time_tolerance``), or None.  grid: 1-D float64 CPU tensor."""
    tol = time_tolerance(float(grid.abs().max()))
    match = torch.nonzero((grid - float(t)).abs() <= tol)
    return int(match[0]) if len(match) else None


def _step_count(steps, name: str) -> int | None:
    """``steps`` as an int when it is an integer (Python or numpy int, 0-dim integer tensor), else None."""
    if isinstance(steps, bool):
        raise TypeError(f"{name} must be a positive int or a decreasing sequence of times, got {steps!r}")
    if isinstance(steps, numbers.Integral):
        return int(steps)
    if isinstance(steps, torch.Tensor) and steps.dim() == 0 and not steps.is_floating_point():
        return int(steps)
    if isinstance(steps, numbers.Real) or (isinstance(steps, torch.Tensor) and steps.dim() == 0):
        raise TypeError(f"{name} must be a positive int (a number of steps) or a decreasing sequence of times, "
                        f"got the single number {steps!r}")
    return None


def time_grid(schedule, steps: int, t_start=None, t_end=None, spacing: str = "lambda") -> torch.Tensor:
    """Decreasing grid t_0 = t_start > t_1 > … > t_steps = t_end, float64 on the CPU.

    spacing="lambda": λ uniform between λ(t_start) and λ(t_end);  spacing="time": t uniform.
    Defaults: t_start = schedule.t_max, t_end = schedule.t_min.  Shape (steps + 1,), schedule's time unit.
    Raises:
        TypeError: ``steps`` is not an integer.
        ValueError: steps < 1, t_start <= t_end, an end outside the schedule's range, unknown spacing.
    """
    count = _step_count(steps, "steps")
    if count is None:
        raise TypeError(f"steps must be a positive int, got {type(steps).__name__}")
    if count < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    t_start = schedule.t_max if t_start is None else _time(t_start, "t_start")
    t_end = schedule.t_min if t_end is None else _time(t_end, "t_end")
    if not t_start > t_end:
        raise ValueError(f"need t_start > t_end (sampling runs from noise to data), got {t_start} <= {t_end}")
    ends = torch.tensor([t_start, t_end], dtype=GRID_DTYPE)
    schedule.check_times(ends, "t_start/t_end")
    if spacing == "lambda":
        lam = torch.linspace(float(schedule.lam(ends[0])), float(schedule.lam(ends[1])), count + 1, dtype=GRID_DTYPE)
        grid = schedule.t_of_lam(lam)
        grid[0], grid[-1] = ends[0], ends[1]
    elif spacing == "time":
        grid = torch.linspace(t_start, t_end, count + 1, dtype=GRID_DTYPE)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; use 'lambda' or 'time'")
    return grid


def _time(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        raise ValueError(f"{name} must be a single time, got a tensor of shape {tuple(value.shape)}")
    return float(value)


def _snap_to_ends(schedule, grid: torch.Tensor, eps: float) -> torch.Tensor:
    """A grid given in a low-precision dtype, with values within that dtype's rounding (2 eps) of the schedule's ends
    set to the ends (float32(0.999) = 0.99900001 is RectifiedFlow's t_max)."""
    slack = 2 * eps * max(1.0, abs(schedule.t_min), abs(schedule.t_max))
    grid = torch.where((grid > schedule.t_max) & (grid <= schedule.t_max + slack), schedule.t_max, grid)
    return torch.where((grid < schedule.t_min) & (grid >= schedule.t_min - slack), schedule.t_min, grid)


def resolve_grid(schedule, steps, t_start=None, t_end=None, name: str = "steps") -> torch.Tensor:
    """Turn ``steps`` (an integer N, or an explicit decreasing 1-D sequence of times) into a checked grid.

    Returns (N+1,) float64 on the CPU.  An explicit grid ignores t_start/t_end unless they are given, in
    which case its ends must equal them.
    Raises:
        TypeError: ``steps`` is a single non-integer number or not a sequence of numbers.
        ValueError: fewer than two times, not strictly decreasing, outside the schedule's range, or ends
            that differ from the given t_start/t_end.
    """
    count = _step_count(steps, name)
    if count is not None:
        if count < 1:
            raise ValueError(f"{name} must be a positive int, got {count}")
        return time_grid(schedule, count, t_start, t_end)
    try:
        grid = torch.as_tensor(steps.detach().cpu() if isinstance(steps, torch.Tensor) else steps, dtype=GRID_DTYPE)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a positive int or a decreasing sequence of times, "
                        f"got {type(steps).__name__}") from error
    if grid.dim() != 1:
        raise ValueError(f"{name} as an explicit grid must be 1-D, got shape {tuple(grid.shape)}")
    if grid.numel() < 2:
        raise ValueError(f"{name} as an explicit grid needs at least two times, got {grid.numel()}")
    if not bool(torch.isfinite(grid).all()):
        raise ValueError(f"{name} contains NaN or Inf: {grid.tolist()}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing (from t_start to t_end); got {grid.tolist()}")
    if isinstance(steps, torch.Tensor) and steps.dtype in (torch.float32, torch.float16, torch.bfloat16):
        grid = _snap_to_ends(schedule, grid, torch.finfo(steps.dtype).eps)
    schedule.check_times(grid, name)
    for end, value, label in ((grid[0], t_start, "t_start"), (grid[-1], t_end, "t_end")):
        if value is not None and abs(float(end) - _time(value, label)) > time_tolerance(float(grid[0])):
            raise ValueError(f"{name} runs from {float(grid[0])} to {float(grid[-1])} but must start and end at "
                             f"t_start={t_start}, t_end={t_end}")
    return grid
