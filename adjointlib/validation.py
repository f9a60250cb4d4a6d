"""Input checks shared by the samplers, the adjoint and the encoders.

Each check raises an exception whose message names the problem (shape, dtype,
device, time grid, non-finite model output) instead of letting a NaN propagate.
"""
from __future__ import annotations

import torch

__all__ = ["check_state", "check_condition", "check_model_output", "check_noises"]


def check_state(x: torch.Tensor, name: str = "x_T") -> None:
    """x must be a floating tensor of shape (batch, ...) with finite entries."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape (batch, ...), got a 0-dim tensor")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")


def check_condition(z: torch.Tensor, x: torch.Tensor, name: str = "z") -> None:
    """z (conditional information) must share x's device and dtype and its batch size."""
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


def check_model_output(eps: torch.Tensor, x: torch.Tensor, t: float) -> None:
    """The ε-model must return a finite tensor shaped like its input x."""
    if not isinstance(eps, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(eps).__name__}")
    if eps.shape != x.shape:
        raise ValueError(
            f"model output has shape {tuple(eps.shape)} but its input x has shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(eps).all()):
        raise FloatingPointError(f"model returned NaN or Inf at t={t:.6g}")


def check_noises(noises: torch.Tensor, steps: int, x: torch.Tensor) -> None:
    """SDE noises must have shape (steps, *x.shape) and x's device and dtype."""
    if not isinstance(noises, torch.Tensor):
        raise TypeError(f"noises must be a tensor of shape (steps, *x_T.shape), got {type(noises).__name__}")
    expected = (steps, *x.shape)
    if tuple(noises.shape) != expected:
        raise ValueError(f"noises must have shape {expected} (steps, *x_T.shape), got {tuple(noises.shape)}")
    if noises.device != x.device or noises.dtype != x.dtype:
        raise ValueError(
            f"noises ({noises.dtype}, {noises.device}) must match x_T ({x.dtype}, {x.device})"
        )
