"""Time grids for sampling (t_start → t_end, decreasing) and their validation.

The default grid is uniform in λ (DPM-Solver's "logSNR" spacing): the exponential
integrators' local errors are controlled by h = λ_t − λ_s (paper §4, Thm 2.1), so
equal h is the natural choice.  A grid may also be given explicitly as a tensor.
"""
from __future__ import annotations

import torch

from .schedules import VPSchedule

__all__ = ["time_grid", "resolve_grid", "GRID_DTYPE"]

GRID_DTYPE = torch.float64  # grids and coefficients are always computed in float64


def time_grid(schedule: VPSchedule, steps: int, t_start=None, t_end=None, spacing: str = "lambda") -> torch.Tensor:
    """Decreasing grid t_0 = t_start > t_1 > … > t_steps = t_end, float64 on the CPU.

    spacing="lambda": λ uniform between λ(t_start) and λ(t_end);  spacing="time": t uniform.
    Defaults: t_start = schedule.t_max, t_end = schedule.t_min.  Shape (steps + 1,).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    t_start = schedule.t_max if t_start is None else float(t_start)
    t_end = schedule.t_min if t_end is None else float(t_end)
    if not t_start > t_end:
        raise ValueError(f"need t_start > t_end (sampling runs from noise to data), got {t_start} <= {t_end}")
    ends = torch.tensor([t_start, t_end], dtype=GRID_DTYPE)
    schedule.check_times(ends, "t_start/t_end")
    if spacing == "lambda":
        lam = torch.linspace(float(schedule.lam(ends[0])), float(schedule.lam(ends[1])), steps + 1, dtype=GRID_DTYPE)
        grid = schedule.t_of_lam(lam)
        grid[0], grid[-1] = ends[0], ends[1]
    elif spacing == "time":
        grid = torch.linspace(t_start, t_end, steps + 1, dtype=GRID_DTYPE)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; use 'lambda' or 'time'")
    return grid


def resolve_grid(schedule: VPSchedule, steps, t_start=None, t_end=None, name: str = "steps") -> torch.Tensor:
    """Turn ``steps`` (an int, or an explicit decreasing 1-D sequence of times) into a checked grid."""
    if isinstance(steps, int) and not isinstance(steps, bool):
        return time_grid(schedule, steps, t_start, t_end)
    grid = torch.as_tensor(steps, dtype=GRID_DTYPE).detach().cpu().flatten()
    if grid.numel() < 2:
        raise ValueError(f"{name} as an explicit grid needs at least two times, got {grid.numel()}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing (from t_start to t_end); got {grid.tolist()}")
    schedule.check_times(grid, name)
    return grid
