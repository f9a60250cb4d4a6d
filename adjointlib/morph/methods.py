"""Named morphing methods: each a ``MorphSettings`` preset (the rows of the paper's Table 1 and ours).

All start from DiM (paper Alg. 2) on the same grid N = 20 and, except "dim", run 50 steps of plain
gradient descent with η = 0.1 on (x_T, z) for L*_ID (paper §8.6; Table 1's η, paper-notes §8.9).
"""
from __future__ import annotations

from .optimise import MorphSettings

__all__ = ["METHODS", "method_settings"]

METHODS = {
    "dim": MorphSettings(n_opt=0),                                     # DiM alone (paper Alg. 2)
    "adjointdeis1_ode": MorphSettings(),                               # Table 1, AdjointDEIS-1 (ODE)
    "adjointdeis1_sde": MorphSettings(sampler="sde-dpm-solver-1"),     # Table 1, AdjointDEIS-1 (SDE)
    "adjointdeis2m_ode": MorphSettings(gradient_options={"order": 2}),  # second-order adjoint, DDIM states
    "checkpoint": MorphSettings(gradient="checkpoint"),                # exact discrete gradient
    "reversible": MorphSettings(sampler="reversible-ddim", gradient="reversible"),  # McCallum-Foster sampler
}


def method_settings(name: str, gradient_options: dict | None = None, **overrides) -> MorphSettings:
    """The preset ``name`` with some fields replaced (e.g. lr=0.01) and gradient options added (e.g.
    {"steps": 10} or {"recompute": True} for the adjoint presets); None values are ignored.

    Raises:
        ValueError: an unknown preset (or an invalid combination, from ``MorphSettings``).
    """
    if name not in METHODS:
        raise ValueError(f"unknown morph method {name!r}; choose from {sorted(METHODS)}")
    preset = METHODS[name].to_dict()
    options = {**preset["gradient_options"], **{k: v for k, v in (gradient_options or {}).items() if v is not None}}
    fields = {**preset, **{k: v for k, v in overrides.items() if v is not None}, "gradient_options": options}
    return MorphSettings(**fields)
