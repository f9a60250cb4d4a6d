"""``backprop``: plain autograd through the discrete sampler (discretise-then-optimise).

The gradient is that of the discrete map x_T ↦ x_0 (DDIM, DPM-Solver-2M, SDE-DPM-Solver-1 with fixed
noises, or a reversible coupling) — exact for the sampler, O(h^k) from the continuous gradient.
Cost: N forward evaluations and N VJPs; memory: every step's network activations (O(N)).
Autograd's own saved tensors make in-place changes between forward and backward raise.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..samplers import ExponentialIntegrator, ReversibleSampler
from ..solvers import integrate
from .base import only_params_require_grad, refuse_sampler

__all__ = ["Backprop"]


@dataclass(frozen=True)
class Backprop:
    """Autograd through the sampler (no options).  Samplers: DDIM, DPM-Solver-2M, SDE-DPM-Solver-1, reversible."""

    name = "backprop"
    samplers = (ExponentialIntegrator, ReversibleSampler)

    def prepare(self, plan) -> "Backprop":
        """Raises ValueError for another sampler kind."""
        refuse_sampler(self, plan)
        return self

    def differentiate(self, model, plan, x_T, params):
        """x_0 (b, ...) with the whole autograd graph kept, for x_T, z and ``params`` only: the model's other
        parameters are not differentiated (as with every other method), which also spares their graph's memory."""
        with only_params_require_grad(model, params):
            if isinstance(plan.sampler, ReversibleSampler):
                from .reversible import reversible_pair

                return reversible_pair(model, plan, x_T)[0]
            return integrate(model, plan, x_T)[0]
