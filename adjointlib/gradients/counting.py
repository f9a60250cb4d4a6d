"""Counting network work: forward evaluations and vector–Jacobian products, separately.

``CountingModel(model)`` behaves like ``model`` (same call convention and parameters) and counts
every call (``forwards``) and every backward pass that reaches one of its outputs (``vjps``, via a
tensor hook), so one counter measures any gradient method: autograd, checkpointing (whose
recomputations are forwards), AdjointDEIS and torchdiffeq's adjoint alike (paper §7.2, H.2).
"""
from __future__ import annotations

from torch import nn

__all__ = ["CountingModel"]


class CountingModel(nn.Module):
    """``model(x, t, z)`` with counters ``forwards``, ``vjps`` and ``total = forwards + vjps``.

    A VJP is counted each time a gradient flows into an output, i.e. once per output per
    backward pass; outputs computed without grad (no_grad or nothing requiring grad) get none.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Set both counters to zero."""
        self.forwards, self.vjps = 0, 0

    @property
    def total(self) -> int:
        return self.forwards + self.vjps

    def _count_vjp(self, grad):
        self.vjps += 1
        return grad

    def forward(self, x, t, z=None):
        self.forwards += 1
        eps = self.model(x, t, z)
        if eps.requires_grad:
            eps.register_hook(self._count_vjp)
        return eps
