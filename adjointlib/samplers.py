"""The samplers, as values: which discrete map x_T ↦ x_0 is run, independently of how it is differentiated.

- ``ExponentialIntegrator``: "ddim" (DDIM = DPM-Solver-1, order 1), "dpm-solver-2m" (multistep, order 2)
  and "sde-dpm-solver-1" (paper eq. 3.6), the samplers of paper §7.3 (steps in ``adjointlib.steps``);
- ``ReversibleSampler``: the McCallum–Foster couplings of a base step ("reversible-ddim", "reversible-midpoint",
  "reversible-sde"; ``adjointlib.gradients.reversible``), a different x_0 from their base;
- ``TorchdiffeqSampler``: a generic torchdiffeq solver ("rk4", "dopri5") on the PF-ODE in (ν, y)
  (AdjointDPM, ``adjointlib.gradients.blackbox``).

``sample(..., sampler=...)`` takes a name of ``SAMPLERS`` or one of these values; each gradient method
lists the sampler kinds it can differentiate and refuses the others (no method switches samplers).
"""
from __future__ import annotations

from dataclasses import dataclass

from .steps import FORWARD_STEPS, sde_dpm_solver_1_step
from .validation import resolve_choice

__all__ = ["ExponentialIntegrator", "ReversibleSampler", "TorchdiffeqSampler", "SAMPLERS", "resolve_sampler"]


@dataclass(frozen=True)
class ExponentialIntegrator:
    """DDIM (order 1), DPM-Solver-2M (order 2) or, with ``sde``, SDE-DPM-Solver-1 (order 1).

    Raises (constructor): ValueError for an order other than 1 or 2, or an SDE of order 2.
    """

    order: int = 1
    sde: bool = False

    def __post_init__(self):
        if self.order not in (1, 2) or isinstance(self.order, bool):
            raise ValueError(f"order must be 1 or 2, got {self.order!r}")
        if self.sde and self.order != 1:
            raise ValueError("the SDE sampler is SDE-DPM-Solver-1 (eq. 3.6): order must be 1")

    @property
    def name(self) -> str:
        return "sde-dpm-solver-1" if self.sde else ("ddim" if self.order == 1 else "dpm-solver-2m")

    @property
    def step(self):
        """The step function of ``adjointlib.steps`` (uniform signature)."""
        return sde_dpm_solver_1_step if self.sde else FORWARD_STEPS[self.order]


@dataclass(frozen=True)
class ReversibleSampler:
    """A McCallum–Foster reversible coupling (``adjointlib.gradients.reversible``) of a base step.

    base "euler" (DDIM, or with ``sde`` SDE-DPM-Solver(++)1) or "midpoint" (exponential midpoint, ODE only);
    coupling ζ ∈ (0, 1]; form "data" (x_θ frame, default) or "noise" (ε frame).
    Raises (constructor): ValueError for an unknown base or form, an SDE midpoint, or ζ outside (0, 1].
    """

    base: str = "euler"
    sde: bool = False
    coupling: float = 0.999
    form: str = "data"

    def __post_init__(self):
        if self.base not in ("euler", "midpoint"):
            raise ValueError(f"base must be 'euler' or 'midpoint', got {self.base!r}")
        if self.sde and self.base != "euler":
            raise ValueError("the reversible SDE sampler has an Euler base only")
        if self.form not in ("data", "noise"):
            raise ValueError(f"form must be 'data' or 'noise', got {self.form!r}")
        if isinstance(self.coupling, bool) or not 0.0 < float(self.coupling) <= 1.0:
            raise ValueError(f"coupling ζ must lie in (0, 1], got {self.coupling!r}")

    @property
    def name(self) -> str:
        return "reversible-sde" if self.sde else f"reversible-{'ddim' if self.base == 'euler' else 'midpoint'}"


@dataclass(frozen=True)
class TorchdiffeqSampler:
    """A torchdiffeq solver on dy/dν = ε (``adjointlib.gradients.blackbox``): "rk4" on the grid mapped to ν, or an
    adaptive method (e.g. "dopri5") from the first to the last time with ``rtol``/``atol``.  ODE only.
    Raises (constructor):
        TypeError: ``method`` is not a string.
        ValueError: ``rtol`` or ``atol`` is not positive.
    """

    method: str = "rk4"
    rtol: float = 1e-5
    atol: float = 1e-5
    sde = False

    def __post_init__(self):
        if not isinstance(self.method, str):
            raise TypeError(f"method must be a torchdiffeq method name, got {type(self.method).__name__}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError(f"rtol and atol must be positive, got {self.rtol}, {self.atol}")

    @property
    def name(self) -> str:
        return self.method


SAMPLERS = {
    "ddim": ExponentialIntegrator(1),
    "dpm-solver-2m": ExponentialIntegrator(2),
    "sde-dpm-solver-1": ExponentialIntegrator(1, sde=True),
    "reversible-ddim": ReversibleSampler("euler"),
    "reversible-midpoint": ReversibleSampler("midpoint"),
    "reversible-sde": ReversibleSampler("euler", sde=True),
    "rk4": TorchdiffeqSampler("rk4"),
    "dopri5": TorchdiffeqSampler("dopri5"),
}


def resolve_sampler(sampler):
    """A sampler value from a name of ``SAMPLERS`` or a sampler value itself (``validation.resolve_choice``).

    Raises:
        ValueError: an unknown name.
        TypeError: neither a name nor a sampler value.
    """
    return resolve_choice(sampler, SAMPLERS, (ExponentialIntegrator, ReversibleSampler, TorchdiffeqSampler),
                          "sampler", "sampler", "adjointlib.ReversibleSampler(coupling=0.99)")
