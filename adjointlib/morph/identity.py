"""The identity loss a morph is optimised for (paper eq. 5.1, from Morph-PIPE)."""
from __future__ import annotations

import torch

__all__ = ["identity_loss"]


def identity_loss(system, morph: torch.Tensor, v_a: torch.Tensor, v_b: torch.Tensor) -> torch.Tensor:
    """L*_ID of each morph: the identity loss plus the imbalance penalty.

    Paper eq. 5.1 (paper-notes §8.2): with v_ab = F(x_0^(ab)) and d the FR system's distance
    (cosine distance 1 − cos for MobileFaceNet, as the paper),
        L_ID = d(v_ab, v_a) + d(v_ab, v_b),  L_diff = |d(v_ab, v_a) − d(v_ab, v_b)|,  L*_ID = L_ID + L_diff.
    system: a ``adjointlib.faces.FaceRecognizer`` (differentiable in its input).
    Shapes: morph (b, 3, S, S) canonical crops in [-1, 1]; v_a, v_b (b, D) -> (b,).
    Raises:
        ValueError: ``v_a`` and ``v_b`` differ in shape, or their batch size is not that of ``morph``.
    """
    if v_a.shape != v_b.shape or v_a.shape[0] != morph.shape[0]:
        raise ValueError(f"need v_a, v_b of shape (b, D) with b = {morph.shape[0]} morphs, "
                         f"got {tuple(v_a.shape)} and {tuple(v_b.shape)}")
    v_ab = system(morph)
    d_a, d_b = system.distance(v_ab, v_a.to(v_ab)), system.distance(v_ab, v_b.to(v_ab))
    return d_a + d_b + (d_a - d_b).abs()
