"""DiM: the diffusion-morph initialisation (paper Algorithm 2, from Blasingame & Liu 2024).

Encode both faces (z = E(x_0), and x_T by inverting the sampler), blend the noises spherically and
the codes linearly.  The ODE inverts DDIM exactly (``ddim_invert``: fixed-point inversion on the
sampling grid, so DiM's contributors are reproduced to float precision); the SDE encodes each face
with Cycle-SDE (paper eq. 3.7) and blends x_T *and* each step's noise by slerp — the paper does not
say which noises its SDE morph uses (paper-notes §7.1); blending both contributors' noises is this
library's choice, so that the SDE morph starts from the SDE analogue of DiM.  Both faces are encoded
with the same intermediate draws n_i (common random numbers), so that the blend of a face with itself
is that face's own encoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..encoders import cycle_sde_encode, ddim_invert

__all__ = ["slerp", "lerp", "MorphStart", "dim_start"]


def slerp(a: torch.Tensor, b: torch.Tensor, w: float = 0.5) -> torch.Tensor:
    """Spherical interpolation of each sample (all non-batch dimensions flattened).

    Paper Algorithm 2, line 7: slerp(a, b; w) = sin((1−w)θ)/sin θ · a + sin(wθ)/sin θ · b,
    cos θ = <a, b>/(|a||b|); falls back to lerp when θ ≈ 0.  Shapes: (b, ...) x2 -> (b, ...).
    Raises:
        ValueError: ``a`` and ``b`` differ in shape.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (torch.nn.functional.cosine_similarity(fa, fb, dim=1)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos).unsqueeze(1)
    sin = torch.sin(theta)
    safe = sin.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - w) * theta) / torch.where(safe, sin, 1.0), torch.full_like(sin, 1 - w))
    wb = torch.where(safe, torch.sin(w * theta) / torch.where(safe, sin, 1.0), torch.full_like(sin, w))
    return (wa * fa + wb * fb).view_as(a)


def lerp(a: torch.Tensor, b: torch.Tensor, w: float = 0.5) -> torch.Tensor:
    """Linear interpolation (1 − w) a + w b (paper Algorithm 2, line 8).  Shapes: (b, ...) x2 -> (b, ...)."""
    return torch.lerp(a, b, w)


@dataclass
class MorphStart:
    """DiM's blended start: x_T (b, C, S, S), z (b, z_dim) or None, SDE noises (N, b, C, S, S) or None,
    and the network evaluations the encoding took (``encode_nfe``, both faces in one batch)."""

    x_T: torch.Tensor
    z: torch.Tensor | None
    noises: torch.Tensor | None
    encode_nfe: int


def dim_start(model, x_a: torch.Tensor, x_b: torch.Tensor, *, steps, sde: bool = False, w: float = 0.5,
              generator: torch.Generator | None = None, draws: torch.Tensor | None = None) -> MorphStart:
    """DiM (paper Algorithm 2) up to the blend: encode a and b, slerp x_T (and SDE noises), lerp z.

    model: a ``FaceDiffusionModel`` (``encode``, ``eps_model``, ``schedule``); x_a, x_b: (b, 3, S, S)
    faces in [-1, 1]; steps: the sampling grid (int N or explicit), which the inversion uses too, so
    that sampling an unblended start returns its face.  ``encode_nfe`` counts the ε evaluations of
    encoding a and b together (one batch of 2b, as the paper counts, H.2).  SDE only: draws (N, b, 3, S, S),
    the Cycle-SDE draws n_i shared by a and b (default: drawn with ``generator``).
    Raises:
        ValueError: ``x_a`` and ``x_b`` differ in shape; an invalid ``steps`` or ``draws`` (``ddim_invert``,
            ``cycle_sde_encode``).
        TypeError: ``steps`` of the wrong type (``plan_sampling``).
        RuntimeError: the DDIM inversion does not converge (ODE only, ``ddim_invert``).
    """
    from ..gradients import CountingModel

    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    with torch.no_grad():
        both = torch.cat([x_a, x_b])
        z = model.encode(both)
        counter = CountingModel(model.eps_model)
        if sde:
            n_steps = steps if isinstance(steps, int) else len(steps) - 1
            if draws is None:
                draws = torch.randn((n_steps, *x_a.shape), generator=generator, dtype=x_a.dtype, device=x_a.device)
            x_T, noises = cycle_sde_encode(counter, model.schedule, both, z, steps=steps,
                                           draws=torch.cat([draws, draws], dim=1))
        else:
            x_T, noises = ddim_invert(counter, model.schedule, both, z, steps=steps), None
    b = len(x_a)
    return MorphStart(
        x_T=slerp(x_T[:b], x_T[b:], w),
        z=None if z is None else lerp(z[:b], z[b:], w),
        noises=None if noises is None else torch.stack([slerp(n[:b], n[b:], w) for n in noises]),
        encode_nfe=counter.forwards,
    )
