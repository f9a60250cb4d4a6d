"""Input checks shared by the samplers, the gradient methods and the encoders: the one home of validation.

Each check raises at call time with a message that names the argument and the problem (shape, dtype,
device, time grid) instead of letting a NaN or a wrong number propagate.  Non-finite model outputs are
caught by ``FiniteGuard`` without a device-to-host synchronisation per network evaluation.
"""
from __future__ import annotations

import torch

__all__ = ["check_state", "check_condition", "check_model_output", "check_noises", "check_model",
           "check_params", "resolve_choice", "FiniteGuard"]


def check_state(x, name: str = "x_T") -> None:
    """x must be a floating tensor of shape (batch, ...) with finite entries.

    Raises:
        TypeError: not a tensor, or not floating (integer and bool states are refused).
        ValueError: 0-dim, empty batch, or NaN/Inf entries.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape (batch, ...), got a 0-dim tensor")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch: shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def check_condition(z, x: torch.Tensor, name: str = "z") -> None:
    """z (conditional information) must share x's device and batch size, and x's dtype if floating.

    Raises:
        TypeError: not a tensor, or a floating dtype other than x's.
        ValueError: another device, no batch dimension or another batch size, NaN/Inf entries.
    """
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(z).__name__}")
    if z.device != x.device:
        raise ValueError(f"device mismatch: {name} is on {z.device} but x_T is on {x.device}")
    if z.is_floating_point() and z.dtype != x.dtype:
        raise TypeError(f"dtype mismatch: {name} is {z.dtype} but x_T is {x.dtype}")
    if z.dim() == 0 or z.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must have the batch size of x_T as first dimension: "
            f"{name}.shape={tuple(z.shape)}, x_T.shape={tuple(x.shape)}"
        )
    if z.is_floating_point() and not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def check_model_output(eps, x: torch.Tensor, t: float) -> None:
    """The ε-model must return a tensor shaped like its input x, of x's dtype and device (host-side checks only).

    Raises:
        TypeError: not a tensor, or another dtype.
        ValueError: another shape or device.
    """
    if not isinstance(eps, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(eps).__name__} at t={t:.6g}")
    if eps.shape != x.shape:
        raise ValueError(
            f"model output has shape {tuple(eps.shape)} but its input x has shape {tuple(x.shape)} (t={t:.6g})"
        )
    if eps.dtype != x.dtype or eps.device != x.device:
        raise TypeError(f"model output is {eps.dtype} on {eps.device} but its input x is {x.dtype} on {x.device} "
                        f"(t={t:.6g}); cast the output to x's dtype (e.g. adjointlib.Autocast does)")


def check_noises(noises, steps: int, x: torch.Tensor) -> None:
    """SDE noises must have shape (steps, *x.shape), x's device and dtype, and finite entries.

    Raises:
        TypeError: not a tensor.
        ValueError: another shape, dtype or device, or NaN/Inf entries.
    """
    if not isinstance(noises, torch.Tensor):
        raise TypeError(f"noises must be a tensor of shape (steps, *x_T.shape), got {type(noises).__name__}")
    expected = (steps, *x.shape)
    if tuple(noises.shape) != expected:
        raise ValueError(f"noises must have shape {expected} (steps, *x_T.shape), got {tuple(noises.shape)}")
    if noises.device != x.device or noises.dtype != x.dtype:
        raise ValueError(
            f"noises ({noises.dtype}, {noises.device}) must match x_T ({x.dtype}, {x.device})"
        )
    if not bool(torch.isfinite(noises).all()):
        raise ValueError("noises contains NaN or Inf")


def check_model(model) -> None:
    """The ε-model must be callable as model(x, t, z).

    Raises:
        TypeError: not callable.
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, t, z) -> ε, got {type(model).__name__}")


def check_params(params) -> tuple:
    """``params`` (the tensors θ whose gradient is wanted) as a tuple of floating tensors.

    Raises:
        TypeError: not an iterable of tensors, or a non-floating tensor.
    """
    if isinstance(params, torch.Tensor):
        raise TypeError("params must be an iterable of tensors (e.g. [w] or model.parameters()), got one tensor")
    try:
        params = tuple(params)
    except TypeError as error:
        raise TypeError(f"params must be an iterable of tensors, got {type(params).__name__}") from error
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] must be a tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"params[{i}] must be floating to have a gradient, got {p.dtype}")
    return params


def resolve_choice(value, registry: dict, kinds: tuple, argument: str, noun: str, example: str):
    """``registry[value]`` for a name, ``value`` itself for an instance of ``kinds`` (the samplers' and gradient
    methods' "name or value" arguments).

    Raises:
        ValueError: an unknown name (the message lists the names).
        TypeError: neither a name nor an instance of ``kinds``.
    """
    if isinstance(value, str):
        if value not in registry:
            raise ValueError(f"unknown {noun} {value!r} for {argument}=; use one of {sorted(registry)} or a value "
                             f"such as {example}")
        return registry[value]
    if isinstance(value, kinds):
        return value
    raise TypeError(f"{argument} must be a name of {sorted(registry)} or a value such as {example}, "
                    f"got {type(value).__name__}")


class FiniteGuard:
    """Collects "is this model output finite?" flags on the device and tests them once.

    ``watch(eps, step, t)`` appends a 0-dim device flag (no synchronisation); ``check()`` stacks them and
    synchronises once, raising at the first non-finite output with its step and time.  One guard per
    sampling pass and one per adjoint pass replace a host synchronisation per network evaluation.
    ``what`` names the pass in the message ("sampling", "adjoint pass", ...).
    """

    def __init__(self, what: str):
        self.what, self._flags, self._where = what, [], []

    def watch(self, eps: torch.Tensor, step: int, t: float) -> torch.Tensor:
        """Record whether ``eps`` is finite; returns ``eps`` unchanged."""
        self._flags.append(torch.isfinite(eps).all())
        self._where.append((step, float(t)))
        return eps

    def check(self) -> None:
        """Raises:
            FloatingPointError: a watched output had NaN or Inf (the first one is named)."""
        if not self._flags:
            return
        ok = torch.stack(self._flags).cpu()
        self._flags = []
        if not bool(ok.all()):
            step, t = self._where[int(torch.nonzero(~ok)[0])]
            raise FloatingPointError(f"the model returned NaN or Inf at step {step} (t={t:.6g}) of the {self.what}")
