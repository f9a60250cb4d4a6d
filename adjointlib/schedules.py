"""Noise schedules of Gaussian paths x_t = α_t x_0 + σ_t ε, written in the half log-SNR λ = log α − log σ.

``NoiseSchedule`` is any Gaussian path (α_t decreasing, σ_t increasing, both positive on [t_min, t_max]):
everything the samplers and adjoints use holds for it (derivations/gaussian_paths.py):

    λ(t)  = log α_t − log σ_t,   t_λ its inverse
    f(t)  = d log α / dt                                   (paper eq. 1.5)
    g²(t) = dσ²/dt − 2 f σ² = −2 σ_t² dλ/dt                 (paper eqs. 1.5, B.6)

``VPSchedule`` (variance preserving, α² + σ² = 1) is defined by one function, log α(t), its time derivative
and its inverse: σ = sqrt(−expm1(2 log α)) and g² = −2f.  ``RectifiedFlow`` is the straight path of flow
matching (SD3, Flux): α = 1 − t, σ = t, for which α² + σ² ≠ 1 and g² = 2t/(1 − t) ≠ −2f.
Derived in derivations/vp_sde.py and derivations/gaussian_paths.py.  Methods take and return tensors of
any shape, dtype (float32/float64) and device; integers are promoted to float64 and bf16/fp16 times to
float32, so a low-precision state never rounds a time (bf16 cannot hold t = 999).  Every schedule checks
at construction that λ is finite on [t_min, t_max]: at σ = 0 (e.g. t_min = 0 for the linear and cosine
schedules, or for rectified flow) λ = +∞ and at α = 0 (rectified flow's t = 1) λ = −∞, and the
exponential integrators' step h = λ_t − λ_s is infinite there.
"""
from __future__ import annotations

import abc
import math

import torch

from .grids import time_tolerance

__all__ = ["NoiseSchedule", "VPSchedule", "LinearVP", "CosineVP", "DiscreteVP", "RectifiedFlow"]


def _as_float(t) -> torch.Tensor:
    """t as a float32 or float64 tensor (integers → float64, bf16/fp16 → float32)."""
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        return t.to(torch.float64)
    return t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float32)


class NoiseSchedule(abc.ABC):
    """Base class: a Gaussian path x_t = α_t x_0 + σ_t ε on [t_min, t_max] (module doc).

    Subclasses implement the abstract ``alpha``, ``sigma``, ``lam``, ``t_of_lam``, ``d_alpha_dt`` and ``d_sigma_dt``
    (a subclass missing one cannot be instantiated: TypeError); the drift f, the squared diffusion g² (eq. 1.5) and
    the solver coefficients follow.
    """

    t_min: float
    t_max: float
    range_hint: str = ""  # appended to check_times' message

    @abc.abstractmethod
    def alpha(self, t) -> torch.Tensor:
        """α_t, the signal scale.  Shape of ``t``."""

    @abc.abstractmethod
    def sigma(self, t) -> torch.Tensor:
        """σ_t, the noise scale.  Shape of ``t``."""

    @abc.abstractmethod
    def lam(self, t) -> torch.Tensor:
        """Half log-SNR λ_t = log α_t − log σ_t (paper §1.2).  Shape of ``t``."""

    @abc.abstractmethod
    def t_of_lam(self, lam) -> torch.Tensor:
        """Inverse of λ: t_λ(λ_t) = t.  Shape of ``lam``."""

    @abc.abstractmethod
    def d_alpha_dt(self, t) -> torch.Tensor:
        """dα_t/dt, per unit of the schedule's time.  Shape of ``t``."""

    @abc.abstractmethod
    def d_sigma_dt(self, t) -> torch.Tensor:
        """dσ_t/dt, per unit of the schedule's time.  Shape of ``t``."""

    def f(self, t) -> torch.Tensor:
        """Drift coefficient f(t) = d log α_t / dt (paper eq. 1.5).  Shape of ``t``."""
        t = _as_float(t)
        return self.d_alpha_dt(t) / self.alpha(t)

    def g2(self, t) -> torch.Tensor:
        """Squared diffusion coefficient g²(t) = dσ²/dt − 2 f σ² (paper eq. 1.5) = −2σ² dλ/dt (B.6).  Shape of ``t``."""
        t = _as_float(t)
        sigma = self.sigma(t)
        return 2.0 * sigma * self.d_sigma_dt(t) - 2.0 * self.f(t) * sigma**2

    def alpha_sigma_lam(self, *times) -> list[tuple[float, float, float]]:
        """(α, σ, λ) as float64 Python numbers for each time: the scalar coefficients of solver steps."""
        t = torch.tensor([float(x) for x in times], dtype=torch.float64)
        return list(zip(self.alpha(t).tolist(), self.sigma(t).tolist(), self.lam(t).tolist()))

    def check_range(self) -> None:
        """Called by subclasses' constructors: t_min < t_max and λ finite at both ends.

        Raises:
            ValueError: t_min >= t_max, or λ(t_min) = +∞ (σ = 0) or λ(t_max) = −∞ (α = 0), naming the end.
        """
        if not self.t_min < self.t_max:
            raise ValueError(f"{type(self).__name__} needs t_min < t_max, got t_min={self.t_min}, t_max={self.t_max}")
        lam_lo, lam_hi = self.lam(torch.tensor([self.t_min, self.t_max], dtype=torch.float64)).tolist()
        if not (math.isfinite(lam_lo) and math.isfinite(lam_hi)):
            raise ValueError(
                f"{type(self).__name__}: λ(t_min={self.t_min}) = {lam_lo}, λ(t_max={self.t_max}) = {lam_hi}; "
                "both must be finite: at t_min, σ = 0 makes λ = +∞ and the last step's h = λ_t − λ_s infinite "
                "(use t_min > 0, e.g. 1e-3 as DPM-Solver); at t_max, α = 0 makes λ = −∞")

    def check_times(self, t: torch.Tensor, name: str = "t") -> None:
        """Raise ValueError if any time lies outside [t_min, t_max] (or is not finite).  t: any shape.

        Raises:
            ValueError: a time outside [t_min, t_max] (to ``grids.time_tolerance``) or NaN/Inf.
        """
        t = torch.as_tensor(t).detach()
        lo, hi = float(t.min()), float(t.max())
        slack = time_tolerance(self.t_max)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < self.t_min - slack or hi > self.t_max + slack:
            raise ValueError(
                f"{name} must lie in the schedule's range [{self.t_min}, {self.t_max}] "
                f"of {type(self).__name__}; got values in [{lo}, {hi}]{self.range_hint}"
            )


class VPSchedule(NoiseSchedule):
    """Base class: a variance-preserving schedule (α² + σ² = 1) given by log α(t) on [t_min, t_max].

    Subclasses implement ``log_alpha``, ``d_log_alpha_dt`` and ``t_of_log_alpha``.
    """

    @abc.abstractmethod
    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log α_t for t in the schedule's time unit.  Shape of ``t``."""

    @abc.abstractmethod
    def d_log_alpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        """d log α_t / dt = f(t) (paper eq. 1.5), per unit of the schedule's time.  Shape of ``t``."""

    @abc.abstractmethod
    def t_of_log_alpha(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """Inverse of log α: the time t (schedule's unit) with log α_t = ``log_alpha``.  Shape of ``log_alpha``."""

    def alpha(self, t) -> torch.Tensor:
        """α_t = exp(log α_t).  Shape of ``t``."""
        return torch.exp(self.log_alpha(_as_float(t)))

    def sigma(self, t) -> torch.Tensor:
        """σ_t = sqrt(1 − α_t²), computed as sqrt(−expm1(2 log α_t)).  Shape of ``t``."""
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(_as_float(t))))

    def lam(self, t) -> torch.Tensor:
        """Half log-SNR λ_t = log α_t − log σ_t (paper §1.2).  Shape of ``t``."""
        log_alpha = self.log_alpha(_as_float(t))
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def t_of_lam(self, lam) -> torch.Tensor:
        """Inverse of λ: t_λ(λ_t) = t, via log α = −½ log(1 + e^{−2λ}).  Shape of ``lam``."""
        lam = _as_float(lam)
        return self.t_of_log_alpha(-0.5 * torch.nn.functional.softplus(-2.0 * lam))

    def d_alpha_dt(self, t) -> torch.Tensor:
        """dα_t/dt = α_t f(t).  Shape of ``t``."""
        t = _as_float(t)
        return self.alpha(t) * self.f(t)

    def d_sigma_dt(self, t) -> torch.Tensor:
        """dσ_t/dt = −α_t² f(t)/σ_t (from α² + σ² = 1).  Shape of ``t``."""
        t = _as_float(t)
        return -self.alpha(t) ** 2 * self.f(t) / self.sigma(t)

    def f(self, t) -> torch.Tensor:
        """Drift coefficient f(t) = d log α_t / dt (paper eq. 1.5).  Shape of ``t``."""
        return self.d_log_alpha_dt(_as_float(t))

    def g2(self, t) -> torch.Tensor:
        """Squared diffusion coefficient g²(t) = −2σ_t² dλ_t/dt = −2 f(t) for α² + σ² = 1
        (paper eqs. 1.5, B.6).  Shape of ``t``."""
        return -2.0 * self.f(t)


class LinearVP(VPSchedule):
    """Linear-β VP schedule of Song et al. (2021) on continuous t ∈ [t_min, 1].

    Paper eq. (I.1): log α_t = −(β₁ − β₀) t²/4 − β₀ t/2;  f = −β(t)/2;  g² = β(t) = β₀ + (β₁ − β₀) t.
    Inverse (dpm-solver's NoiseScheduleVP): with u = 2(β₁ − β₀) log(1 + e^{−2λ}),
    t = u / (sqrt(β₀² + u) + β₀) / (β₁ − β₀).
    Raises (constructor):
        ValueError: not ``beta_max > beta_min > 0``; ``t_min`` >= 1, or a ``t_min`` where λ is not finite (t_min = 0:
            σ = 0; ``check_range``).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        if not beta_max > beta_min > 0:
            raise ValueError(f"need beta_max > beta_min > 0, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.t_min, self.t_max = float(t_min), 1.0
        if not self.t_min > 0.0:
            raise ValueError(f"LinearVP needs 0 < t_min < 1 (σ = 0 at t = 0 makes λ(0) = +∞), got t_min={self.t_min}")
        self.check_range()

    def log_alpha(self, t):
        return -0.25 * (self.beta_max - self.beta_min) * t**2 - 0.5 * self.beta_min * t

    def d_log_alpha_dt(self, t):
        return -0.5 * (self.beta_max - self.beta_min) * t - 0.5 * self.beta_min

    def t_of_log_alpha(self, log_alpha):
        db = self.beta_max - self.beta_min
        u = -4.0 * db * log_alpha  # = 2 db log(1 + e^{-2λ})
        return u / (torch.sqrt(self.beta_min**2 + u) + self.beta_min) / db

    def __repr__(self):
        return f"LinearVP(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CosineVP(VPSchedule):
    """Cosine VP schedule of Nichol & Dhariwal (2021), continuous t ∈ [t_min, 0.9946].

    log α_t = log cos(π/2 · (t + s)/(1 + s)) − log cos(π/2 · s/(1 + s)), s = 0.008;
    f(t) = −π/(2(1 + s)) · tan(π/2 · (t + s)/(1 + s)).  t_max = 0.9946 as in dpm-solver,
    where the schedule is still well conditioned.
    Raises (constructor):
        ValueError: ``t_min`` < 0 or ``t_max`` >= 1; ``t_min`` >= ``t_max``, or λ not finite at an end (t_min = 0:
            σ = 0; ``check_range``).
    """

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946):
        self.s = float(s)
        self.t_min, self.t_max = float(t_min), float(t_max)
        self._log_alpha_0 = math.log(math.cos(math.pi / 2 * self.s / (1 + self.s)))
        if not (self.t_min > 0.0 and self.t_max < 1.0):
            raise ValueError(f"CosineVP needs 0 < t_min < t_max < 1 (σ = 0 at t = 0, α = 0 at t = 1), got t_min={self.t_min}, "
                             f"t_max={self.t_max}")
        self.check_range()

    def log_alpha(self, t):
        return torch.log(torch.cos(math.pi / 2 * (t + self.s) / (1 + self.s))) - self._log_alpha_0

    def d_log_alpha_dt(self, t):
        return -math.pi / (2 * (1 + self.s)) * torch.tan(math.pi / 2 * (t + self.s) / (1 + self.s))

    def t_of_log_alpha(self, log_alpha):
        angle = torch.arccos(torch.exp(log_alpha + self._log_alpha_0))
        return 2 * (1 + self.s) / math.pi * angle - self.s

    def __repr__(self):
        return f"CosineVP(s={self.s})"


class DiscreteVP(VPSchedule):
    """Discrete DDPM schedule from ᾱ_n = alphas_cumprod[n], n = 0..N−1 (time unit: the training step).

    log α is interpolated piecewise-linearly in t between the integer steps, as in
    dpm-solver's discrete NoiseScheduleVP, so t may be fractional: α_n = sqrt(ᾱ_n),
    σ_n = sqrt(1 − ᾱ_n).  t_min = 0, t_max = N − 1.  Model time = t (the diffusers timestep).
    Times outside [0, N − 1] are refused, never extrapolated: a ValueError for CPU tensors, NaN for
    tensors on an accelerator (checking them there would cost a synchronisation per call; the
    samplers' ``FiniteGuard`` then reports the NaN with its step).  The table is float64; it is
    read in float32 for float32/bf16/fp16 times.
    Raises (constructor): ValueError for fewer than two entries, entries outside (0, 1), or a table
    that is not strictly decreasing.
    """

    def __init__(self, alphas_cumprod):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if ac.numel() < 2:
            raise ValueError("alphas_cumprod needs at least two entries")
        if not bool(((ac > 0) & (ac < 1)).all()):
            raise ValueError("alphas_cumprod must lie strictly between 0 and 1")
        if not bool((ac[1:] < ac[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self._log_alphas = 0.5 * torch.log(ac)
        self.t_min, self.t_max = 0.0, float(ac.numel() - 1)

    @classmethod
    def from_diffusers(cls, scheduler) -> "DiscreteVP":
        """Build from any diffusers scheduler exposing ``alphas_cumprod`` (DDPM, DDIM, DPMSolver…).

        Raises:
            TypeError: ``scheduler`` has no ``alphas_cumprod``.
            ValueError: its ``alphas_cumprod`` has fewer than two entries, entries outside (0, 1), or is not strictly
                decreasing (``DiscreteVP``).
        """
        if not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(f"{type(scheduler).__name__} has no 'alphas_cumprod' attribute")
        return cls(scheduler.alphas_cumprod)

    def _table(self, like: torch.Tensor) -> torch.Tensor:
        return self._log_alphas.to(device=like.device, dtype=like.dtype)

    def _segment(self, t: torch.Tensor):
        n = self._log_alphas.numel()
        idx = torch.clamp(torch.floor(t), 0, n - 2).long()
        return idx, t - idx.to(t.dtype)

    def _inside(self, t: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        if t.device.type == "cpu":
            self.check_times(t)
            return value
        return torch.where((t >= self.t_min) & (t <= self.t_max), value, torch.full_like(value, math.nan))

    def log_alpha(self, t):
        table = self._table(t)
        idx, frac = self._segment(t)
        return self._inside(t, table[idx] + frac * (table[idx + 1] - table[idx]))

    def d_log_alpha_dt(self, t):
        table = self._table(t)
        idx, _ = self._segment(t)
        return self._inside(t, table[idx + 1] - table[idx])

    def t_of_log_alpha(self, log_alpha):
        table = self._table(log_alpha)
        descending = -table  # increasing in n
        target = -log_alpha
        idx = torch.clamp(torch.searchsorted(descending, target.contiguous()) - 1, 0, table.numel() - 2)
        lo, hi = table[idx], table[idx + 1]
        return idx.to(log_alpha.dtype) + (log_alpha - lo) / (hi - lo)

    def __repr__(self):
        return f"DiscreteVP(N={self._log_alphas.numel()})"


class RectifiedFlow(NoiseSchedule):
    """The rectified-flow / flow-matching path of SD3 and Flux: α_t = 1 − t, σ_t = t, continuous t ∈ [t_min, t_max].

    λ = log((1 − t)/t), t_λ(λ) = 1/(1 + e^λ), f = −1/(1 − t), g² = 2t/(1 − t) (eq. 1.5; not −2f: α² + σ² ≠ 1).
    Time unit: diffusers' flow-matching sigma (``FlowMatchEulerDiscreteScheduler.sigmas``); its timestep is
    1000 t.  Both ends must lie strictly inside (0, 1): λ(1) = −∞ and λ(0) = +∞, where the exponential
    integrators' coefficients are ∞·0 (derivations/gaussian_paths.py); the defaults 1 − 1e-3 and 1e-3 start
    from α_T = 1e-3 and stop at σ = 1e-3.  A diffusers loop from sigma 1 to 0 differs from ours in its first
    and last steps only (see ``adjointlib.models.EpsilonFromVelocity``).  Every sampler and gradient method applies,
    but the AdjointDEIS gradient w.r.t. x_T converges late here: the ε-form adjoint carries α_0/α_T ≈ 10³ over a λ
    interval of 13.8 (README, chapter 11: 23 % off at N = 100 with 2M on the exact toy, where backprop is 0.12 %).
    Raises (constructor):
        ValueError: not ``0 < t_min < t_max < 1``.
    """

    range_hint = ("; the unit is the flow-matching sigma t in (0, 1), not the timestep 1000 t, and a diffusers "
                  "FlowMatch scheduler's sigmas run from 1 (α = 0) to 0 (σ = 0), where λ is infinite: pass the sigmas "
                  "inside (0, 1), e.g. scheduler.sigmas[1:-1], or a RectifiedFlow(t_min=, t_max=) that contains them")

    def __init__(self, t_min: float = 1e-3, t_max: float = 1.0 - 1e-3):
        self.t_min, self.t_max = float(t_min), float(t_max)
        if not 0.0 < self.t_min < self.t_max < 1.0:
            raise ValueError(f"RectifiedFlow needs 0 < t_min < t_max < 1 (λ(0) = +∞, λ(1) = −∞), got "
                             f"t_min={self.t_min}, t_max={self.t_max}")
        self.check_range()

    def alpha(self, t):
        return 1.0 - _as_float(t)

    def sigma(self, t):
        return _as_float(t).clone()

    def lam(self, t):
        t = _as_float(t)
        return torch.log1p(-t) - torch.log(t)

    def t_of_lam(self, lam):
        return torch.sigmoid(-_as_float(lam))

    def d_alpha_dt(self, t):
        return torch.full_like(_as_float(t), -1.0)

    def d_sigma_dt(self, t):
        return torch.ones_like(_as_float(t))

    def __repr__(self):
        return f"RectifiedFlow(t_min={self.t_min}, t_max={self.t_max})"
