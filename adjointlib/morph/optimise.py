"""DiM + gradient descent: optimise the morph's x_T and z for the identity loss (paper §5).

One optimisation step runs the sampler from (x_T, z), scores x_0 with L*_ID (eq. 5.1) and takes the
gradient w.r.t. x_T and z with the chosen gradient method — AdjointDEIS by default (paper Alg. 1),
or any ``adjointlib.gradients`` method through ``sample(..., gradient=...)``.  The loss is summed
over the batch, so each morph gets its own gradient whatever the batch size (the released code's
mean made the step size depend on the batch, paper-notes §11).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import torch
from tqdm import tqdm

from ..gradients import CountingModel, resolve_gradient
from ..models import Autocast
from ..sample import sample
from ..samplers import resolve_sampler
from .identity import identity_loss

__all__ = ["MorphSettings", "MorphResult", "optimise_morph", "OPTIMISERS"]

OPTIMISERS = ("sgd", "adam")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class MorphSettings:
    """How a morph is optimised; defaults are the paper's main experiment (§8.6, η as Table 1, errata).

    steps N (sampling and DDIM-inversion grid), n_opt optimisation steps, lr η, optimiser "sgd"
    (plain x ← x − η ∇, as the released code) or "adam" (betas (0.5, 0.9), as Greedy-DiM);
    sampler: a name of ``adjointlib.SAMPLERS`` ("ddim"; "sde-dpm-solver-1" starts from Cycle-SDE noises);
    gradient: a name of ``adjointlib.GRADIENT_METHODS`` and gradient_options the options of its value
    (e.g. {"steps": 10, "order": 2, "recompute": True} for ``Adjoint``), validated by the method itself;
    precision "fp32", or "bf16" to evaluate the ε-model under bf16 autocast while optimising
    (``adjointlib.Autocast``; DiM's inversion and the final sample stay float32; the reversible method refuses it).
    Raises (constructor): ValueError or TypeError for an unknown sampler, gradient, option, precision or optimiser,
    a sampler the gradient method cannot differentiate, n_opt < 0, steps < 1 or lr <= 0.
    """

    steps: int = 20
    n_opt: int = 50
    lr: float = 0.1
    optimiser: str = "sgd"
    sampler: str = "ddim"
    gradient: str = "adjoint"
    gradient_options: dict = field(default_factory=dict)
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; use one of {PRECISIONS}")
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"unknown optimiser {self.optimiser!r}; use one of {OPTIMISERS}")
        if self.n_opt < 0 or self.steps < 1:
            raise ValueError(f"need n_opt >= 0 and steps >= 1, got n_opt={self.n_opt}, steps={self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        sampler, method = resolve_sampler(self.sampler), self.gradient_method()
        if not isinstance(sampler, method.samplers):
            raise ValueError(f"gradient {self.gradient!r} cannot differentiate sampler {self.sampler!r}")
        if self.precision != "fp32" and self.gradient == "reversible":
            raise ValueError("the reversible method cannot run in bf16: its inverse amplifies the model's rounding")

    @property
    def sde(self) -> bool:
        """Whether the sampler is an SDE sampler (the morph then starts from Cycle-SDE noises)."""
        return resolve_sampler(self.sampler).sde

    def gradient_method(self):
        """The gradient method value, e.g. ``Adjoint(steps=10)``, built (and checked) from gradient and its options.

        Raises:
            ValueError: ``gradient`` is not a name of ``adjointlib.GRADIENT_METHODS``, or ``gradient_options`` has a key
                that is no option of that method (option values are checked when sampling).
            TypeError: ``gradient`` is neither a name nor a method value.
        """
        method = resolve_gradient(self.gradient)
        known = [f.name for f in fields(method)]
        unknown = sorted(set(self.gradient_options) - set(known))
        if unknown:
            raise ValueError(f"gradient {self.gradient!r} has no option {unknown}; its options are {known}")
        return replace(method, **self.gradient_options)

    def sample_options(self) -> dict:
        """Keyword arguments of ``adjointlib.sample`` for these settings (θ is never optimised: params=())."""
        return dict(steps=self.steps, sampler=self.sampler, gradient=self.gradient_method(), params=())

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MorphResult:
    """Optimised morphs x_0 (b, 3, S, S); losses (n_opt + 1, b): L*_ID before each step and after the
    last; NFE per batch: ``forwards`` and ``vjps`` of the ε-model during optimisation and final sampling."""

    x0: torch.Tensor
    losses: torch.Tensor
    forwards: int
    vjps: int


def _sample(model, counter, x_T, z, noises, settings):
    return sample(counter, model.schedule, x_T, z, noises=noises, **settings.sample_options())


def optimise_morph(model, system, x_T: torch.Tensor, z, v_a: torch.Tensor, v_b: torch.Tensor,
                   settings: MorphSettings, noises: torch.Tensor | None = None,
                   progress: bool | None = None, loss_fn=identity_loss) -> MorphResult:
    """Gradient descent on (x_T, z) for L*_ID (paper §5, eq. 5.1), from DiM's start.

    model: ``FaceDiffusionModel``; system: the loss FR network; x_T (b, 3, S, S); z (b, z_dim) or None;
    v_a, v_b (b, D) the contributors' embeddings; noises (N, b, 3, S, S) for the SDE (fixed while
    optimising).  loss_fn(system, x0, v_a, v_b) -> (b,) losses, L*_ID by default (another loss, e.g. for
    an ablation, must keep that signature).  progress True: a bar over the optimisation steps with its ETA
    and the batch's mean loss (None or False: none, the library default; the morph job passes True).
    Returns the morphs of the final (x_T, z) and the loss history.
    Raises:
        ValueError: ``settings`` has an SDE sampler and ``noises`` is None.
        TypeError, ValueError: invalid ``x_T``, ``z`` or ``noises`` for the sampling call (``adjointlib.sample``).
        FloatingPointError: the loss becomes NaN or Inf (lower ``settings.lr``), or the model returns NaN/Inf.
    """
    if settings.sde and noises is None:
        raise ValueError("the SDE morph needs its noises (from dim_start(..., sde=True))")
    counter = CountingModel(model.eps_model)
    fast = counter if settings.precision == "fp32" else Autocast(counter, torch.bfloat16)
    x_T = x_T.detach().clone().requires_grad_(True)
    leaves = [x_T]
    if z is not None:
        z = z.detach().clone().requires_grad_(True)
        leaves.append(z)
    if settings.optimiser == "sgd":
        optimiser = torch.optim.SGD(leaves, lr=settings.lr)
    else:
        optimiser = torch.optim.Adam(leaves, lr=settings.lr, betas=(0.5, 0.9))
    losses = []
    bar = tqdm(range(settings.n_opt), desc=f"optimising {x_T.shape[0]} morph{'s' * (x_T.shape[0] > 1)}",
               unit="step", disable=progress is not True, leave=False)
    for _ in bar:
        x0 = _sample(model, fast, x_T, z, noises, settings)
        loss = loss_fn(system, x0, v_a, v_b)
        if not bool(torch.isfinite(loss).all()):
            raise FloatingPointError("the identity loss became NaN/Inf; lower the learning rate")
        losses.append(loss.detach())
        if progress is True:
            bar.set_postfix_str(f"mean loss {float(loss.detach().mean()):.4f}")  # one refresh per step (seconds)
        optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimiser.step()
    with torch.no_grad():
        x0 = _sample(model, counter, x_T, z, noises, settings)
        losses.append(loss_fn(system, x0, v_a, v_b))
    return MorphResult(x0=x0.detach(), losses=torch.stack(losses), forwards=counter.forwards, vjps=counter.vjps)
