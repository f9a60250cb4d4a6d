"""A Brownian path shared by SDE solves on nested grids, for strong-convergence checks.

In y = x/α coordinates the SDE-DPM-Solver-1 noise term of a step s → t is
σ_t sqrt(e^{2h} − 1) ξ / α_t = sqrt(ρ_s − ρ_t) ξ with ρ = e^{−2λ} (derivations/sde_adjoint.py),
i.e. the increment B(ρ_s) − B(ρ_t) of one Brownian motion B in the clock ρ.  Sampling B on a
fine grid and summing its increments gives consistent noises for every coarser sub-grid.
"""
from __future__ import annotations

import torch

__all__ = ["BrownianPath"]


class BrownianPath:
    """B sampled at the times of ``fine_times`` (decreasing), for states of shape ``shape``."""

    def __init__(self, schedule, fine_times, shape, generator=None, dtype=torch.float64, device="cpu"):
        self.schedule = schedule
        self.fine_times = torch.as_tensor(fine_times, dtype=torch.float64)
        rho = torch.exp(-2.0 * schedule.lam(self.fine_times))
        std = torch.sqrt(rho[:-1] - rho[1:]).to(dtype=dtype, device=device)
        draws = torch.randn((len(std), *shape), generator=generator, dtype=dtype, device=device)
        self._cumulative = torch.cat([torch.zeros_like(draws[:1]), torch.cumsum(
            draws * std.view(-1, *([1] * len(shape))), 0)])
        self._rho = rho

    def noises(self, times) -> torch.Tensor:
        """Standard normal ξ_i for the grid ``times`` (a subset of the fine grid).  (N, *shape)."""
        times = torch.as_tensor(times, dtype=torch.float64)
        idx = [int(torch.argmin((self.fine_times - t).abs())) for t in times]
        if any(abs(float(self.fine_times[i] - t)) > 1e-9 * max(1.0, float(t)) for i, t in zip(idx, times)):
            raise ValueError("times must be a subset of the Brownian path's fine grid")
        out = []
        for a, b in zip(idx[:-1], idx[1:]):
            increment = self._cumulative[b] - self._cumulative[a]
            out.append(increment / torch.sqrt(self._rho[a] - self._rho[b]).to(increment.dtype))
        return torch.stack(out)
