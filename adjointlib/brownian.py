"""Brownian increments: consistent SDE noises on nested grids (the one home of Brownian paths).

In the "noise" clock ρ = ν² = e^{−2λ} (y = x/α coordinates) the SDE-DPM-Solver-1 noise term of a step
s → t is σ_t sqrt(e^{2h} − 1) ξ / α_t = sqrt(ρ_s − ρ_t) ξ (derivations/sde_adjoint.py), i.e. the increment
B(ρ_s) − B(ρ_t) of one Brownian motion B in the clock ρ; the reversible SDE samplers in the data frame use
the clock μ² = e^{2λ} (``adjointlib.gradients.reversible``).  A path sampled on a fine grid gives, by summing
its increments, consistent standard normals for every coarser sub-grid: strong-convergence checks compare
solves on nested grids along one path.
"""
from __future__ import annotations

import math

import torch

from .grids import grid_index

__all__ = ["BrownianPath", "CLOCKS"]

CLOCKS = ("noise", "data")  # ρ = e^{−2λ} or μ² = e^{2λ}


class BrownianPath:
    """B sampled at the times of ``fine_times`` (decreasing, (K+1,)), for states of shape ``shape``.

    Built from fresh draws (``generator``, ``dtype``, ``device``) or, with ``from_noises``, from the standard
    normals of the fine grid's own steps.  clock: "noise" (ρ = e^{−2λ}, default) or "data" (μ² = e^{2λ}).
    Raises (constructor): ValueError for an unknown clock.
    """

    def __init__(self, schedule, fine_times, shape, generator=None, dtype=torch.float64, device="cpu",
                 clock: str = "noise", draws=None):
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        self.fine_times = torch.as_tensor(fine_times, dtype=torch.float64)
        self._clock = torch.exp((-2.0 if clock == "noise" else 2.0) * schedule.lam(self.fine_times))
        std = torch.sqrt((self._clock[1:] - self._clock[:-1]).abs())
        if draws is None:
            draws = torch.randn((len(std), *shape), generator=generator, dtype=dtype, device=device)
        weighted = draws * std.to(draws).view(-1, *([1] * (draws.dim() - 1)))
        self._cumulative = torch.cat([torch.zeros_like(draws[:1]), torch.cumsum(weighted, 0)])

    @classmethod
    def from_noises(cls, schedule, fine_times, fine_noises: torch.Tensor, clock: str = "noise") -> "BrownianPath":
        """The path whose fine-grid steps carry the standard normals ``fine_noises`` (K, ...)."""
        return cls(schedule, fine_times, fine_noises.shape[1:], clock=clock, draws=fine_noises)

    def noises(self, times) -> torch.Tensor:
        """Standard normals ξ_i for the grid ``times`` (a subset of the fine grid), (N, *shape).

        Raises:
            ValueError: a time that is not on the fine grid.
        """
        idx = [grid_index(self.fine_times, float(t)) for t in torch.as_tensor(times, dtype=torch.float64)]
        if any(i is None for i in idx):
            raise ValueError("times must be a subset of the Brownian path's fine grid")
        return torch.stack([(self._cumulative[b] - self._cumulative[a]) /
                            math.sqrt(abs(float(self._clock[b] - self._clock[a]))) for a, b in zip(idx[:-1], idx[1:])])
