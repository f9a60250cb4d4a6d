"""Every way to get the gradient through a sampler, as peers behind ``sample(..., gradient=...)``.

Each method is a small frozen value implementing the protocol of ``adjointlib.gradients.base``:

- ``adjoint`` (``Adjoint``): AdjointDEIS, the continuous adjoint by exponential integrators (O(1) activations);
- ``backprop`` (``Backprop``): autograd through the discrete sampler (exact discrete gradient, O(N) activations);
- ``checkpoint`` (``Checkpoint``): the same with per-step checkpointing (O(N) states, one step's activations);
- ``blackbox`` (``Blackbox``): AdjointDPM-style torchdiffeq ``odeint_adjoint`` on the PF-ODE (RK4 or dopri5);
- ``reversible`` (``Reversible``): the exact gradient of a McCallum–Foster reversible sampler, O(1) memory.

``GRADIENT_METHODS`` (the one registry) maps the names to the default values; ``resolve_gradient`` turns a
name or value into a value.  ``CountingModel`` counts forward evaluations and VJPs of any of them;
``adjointlib.gradients.compare`` (imported on its own) runs any method by label with its counts.
"""
from .adjoint import Adjoint
from .backprop import Backprop
from .blackbox import Blackbox
from .checkpoint import Checkpoint
from .counting import CountingModel
from .reversible import Reversible, reversible_solve, reversible_unsolve
from ..validation import resolve_choice

GRADIENT_METHODS = {
    "adjoint": Adjoint(),
    "backprop": Backprop(),
    "checkpoint": Checkpoint(),
    "blackbox": Blackbox(),
    "reversible": Reversible(),
}


def resolve_gradient(gradient):
    """A gradient method value from a name of ``GRADIENT_METHODS`` or a method value (``validation.resolve_choice``).

    Raises:
        ValueError: an unknown name.
        TypeError: neither a name nor a method value.
    """
    return resolve_choice(gradient, GRADIENT_METHODS, (Adjoint, Backprop, Checkpoint, Blackbox, Reversible),
                          "gradient", "gradient method", "adjointlib.Adjoint(order=2)")


__all__ = ["GRADIENT_METHODS", "resolve_gradient", "Adjoint", "Backprop", "Checkpoint", "Blackbox", "Reversible",
           "CountingModel", "reversible_solve", "reversible_unsolve"]
