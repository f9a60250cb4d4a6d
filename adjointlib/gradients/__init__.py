"""Every way to get the gradient through a sampler, behind ``sample(..., grad_method=...)``.

``adjoint`` (AdjointDEIS, the default) lives in ``adjointlib.adjoint``; the alternatives here share
one signature ``fn(model, schedule, x_T, z, times, *, order, sde, noises, params, **options) -> x_0``:

- ``backprop``: autograd through the discrete sampler (exact discrete gradient, O(N) activations);
- ``checkpoint``: the same with per-step gradient checkpointing (O(N) states, one step's activations);
- ``blackbox``: AdjointDPM-style torchdiffeq ``odeint_adjoint`` on the PF-ODE (RK4 or dopri5);
- ``reversible``: a McCallum–Foster reversible sampler (exact discrete gradient, O(1) memory).

``CountingModel`` counts forward evaluations and VJPs of any of them; ``adjointlib.gradients.compare``
(imported on its own) runs any method by name with its counts.
"""
from .backprop import backprop_sample
from .blackbox import blackbox_sample
from .checkpoint import checkpoint_sample
from .counting import CountingModel
from .reversible import reversible_sample, reversible_solve, reversible_unsolve

GRAD_METHODS = {
    "backprop": backprop_sample,
    "checkpoint": checkpoint_sample,
    "blackbox": blackbox_sample,
    "reversible": reversible_sample,
}

__all__ = ["GRAD_METHODS", "CountingModel", "backprop_sample", "checkpoint_sample", "blackbox_sample",
           "reversible_sample", "reversible_solve", "reversible_unsolve"]
