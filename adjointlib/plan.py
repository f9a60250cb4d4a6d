"""The sampling plan: every fact about one differentiable sampling call, resolved once at call time.

``plan_sampling`` validates the arguments of ``sample`` (and of ``solve``, the encoders and the gradient
methods) and returns an immutable ``SamplingPlan``: the schedule, the sampler, the sampling grid, the
conditional information as explicit per-step values with the steps where its value changes, the SDE
noises, and the prepared gradient method (for the adjoint: its grid, order, record mode and, for each
adjoint step, the sampling step containing it).  The samplers and the gradient methods read the plan;
none of them re-resolves any of it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .grids import resolve_grid
from .samplers import resolve_sampler
from .schedules import NoiseSchedule
from .validation import check_condition, check_noises, check_state

__all__ = ["Conditions", "SamplingPlan", "plan_sampling", "conditions_of"]


@dataclass(frozen=True)
class Conditions:
    """The conditional information z of each sampling step.

    values: one entry per step (a tensor, or None when the model is unconditional); ``per_step``: the user
    gave a list (paper Thm 2.2), so each step's z has its own gradient; ``changes[i]``: step i's z differs
    *in value* from step i − 1's (``changes[0]`` is False).  Multistep histories restart exactly there, so
    equal-valued copies give the same samples and gradients as one shared tensor, to round-off.
    """

    values: tuple
    per_step: bool
    changes: tuple

    def at(self, step: int):
        """z of sampling step ``step`` (from times[step] to times[step + 1])."""
        return self.values[step]

    def inputs(self) -> tuple:
        """The tensors whose gradients are returned: each step's z (per-step), or the one z; floating only."""
        tensors = self.values if self.per_step else self.values[:1]
        return tuple(v for v in tensors if v is not None and v.is_floating_point())

    def with_inputs(self, tensors) -> "Conditions":
        """The same schedule with ``inputs()`` replaced by ``tensors`` (e.g. detached leaves)."""
        tensors = list(tensors)
        if not tensors:
            return self
        if self.per_step:
            return replace(self, values=tuple(tensors))
        return replace(self, values=tuple(tensors[:1]) * len(self.values))


def conditions_of(z, x: torch.Tensor, steps: int) -> Conditions:
    """Validate z (None, a tensor, or a list/tuple of ``steps`` tensors) and find where its value changes.

    Equality is by value (one batched comparison, one synchronisation per call), never by identity.
    Raises:
        TypeError: z is neither None, a tensor nor a list/tuple of tensors; a per-step list mixes floating and
            non-floating tensors; dtype mismatch with x.
        ValueError: a per-step list of the wrong length; batch size or device mismatch.
    """
    if z is None:
        return Conditions((None,) * steps, False, (False,) * steps)
    if isinstance(z, torch.Tensor):
        check_condition(z, x)
        return Conditions((z,) * steps, False, (False,) * steps)
    if not isinstance(z, (list, tuple)):
        raise TypeError(f"z must be None, a tensor, or a list of one tensor per step; got {type(z).__name__}")
    if len(z) != steps:
        raise ValueError(f"a per-step z schedule needs one z per step: got {len(z)} for {steps} steps")
    for i, zi in enumerate(z):
        check_condition(zi, x, f"z[{i}]")
    floating = {zi.is_floating_point() for zi in z}
    if len(floating) > 1:
        raise TypeError("a per-step z schedule must be all floating tensors or all non-floating ones")
    differ = []
    for prev, cur in zip(z[:-1], z[1:]):
        if cur is prev:
            differ.append(torch.zeros((), dtype=torch.bool, device=x.device))
        elif cur.shape != prev.shape or cur.dtype != prev.dtype:
            differ.append(torch.ones((), dtype=torch.bool, device=x.device))
        else:
            differ.append((cur != prev).any())
    changes = (False,) + (tuple(torch.stack(differ).cpu().tolist()) if differ else ())
    return Conditions(tuple(z), True, changes)


@dataclass(frozen=True)
class SamplingPlan:
    """Everything one sampling call needs, resolved (module doc).

    schedule: the noise schedule; sampler: a value of ``adjointlib.samplers``; times: (N+1,) float64 CPU,
    decreasing, in the schedule's unit; conditions: ``Conditions``; noises: (N, *x_T.shape) standard normals
    for an SDE sampler, else None; gradient: the prepared gradient method (None for a plain solve).
    """

    schedule: NoiseSchedule
    sampler: object
    times: torch.Tensor
    conditions: Conditions
    noises: torch.Tensor | None
    gradient: object = None

    @property
    def steps(self) -> int:
        """N, the number of sampling steps."""
        return len(self.times) - 1

    def with_gradient(self, gradient) -> "SamplingPlan":
        """The same sampling with another gradient method (a name or a method value), prepared for this plan."""
        from .gradients import resolve_gradient

        return replace(self, gradient=resolve_gradient(gradient).prepare(replace(self, gradient=None)))


def plan_sampling(schedule, x_T, z=None, *, steps, sampler="ddim", gradient=None, t_start=None, t_end=None,
                  noises=None, generator=None) -> SamplingPlan:
    """Validate the arguments of a sampling call and resolve them into a ``SamplingPlan``.

    schedule: a ``NoiseSchedule`` (VP or rectified flow); x_T: (b, ...) floating; z: None, (b, ...) or a list of N tensors (b, ...);
    steps: an int N (grid uniform in λ from t_start to t_end, default the schedule's ends) or an explicit
    decreasing grid (schedule's time unit); sampler: a name of ``adjointlib.SAMPLERS`` or a sampler value;
    gradient: a name of ``adjointlib.GRADIENT_METHODS``, a method value, or None; noises: (N, *x_T.shape)
    for an SDE sampler (drawn with ``generator`` when None).
    Raises:
        TypeError, ValueError: any argument that is invalid, named in the message (schedule, x_T, z, steps,
            t_start/t_end, sampler, noises, generator, gradient and the gradient's own options).
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be an adjointlib NoiseSchedule (LinearVP, CosineVP, DiscreteVP, RectifiedFlow, ...), "
                        f"got {type(schedule).__name__}")
    check_state(x_T)
    sampler = resolve_sampler(sampler)
    times = resolve_grid(schedule, steps, t_start, t_end)
    n = len(times) - 1
    conditions = conditions_of(z, x_T, n)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if sampler.sde:
        if noises is None:
            if generator is not None and generator.device != x_T.device:
                raise ValueError(f"generator is on {generator.device} but x_T is on {x_T.device}")
            noises = torch.randn((n, *x_T.shape), generator=generator, dtype=x_T.dtype, device=x_T.device)
        else:
            check_noises(noises, n, x_T)
    elif noises is not None or generator is not None:
        raise ValueError(f"noises and generator are for SDE samplers; sampler {sampler.name!r} is an ODE sampler")
    plan = SamplingPlan(schedule, sampler, times, conditions, noises)
    return plan if gradient is None else plan.with_gradient(gradient)
