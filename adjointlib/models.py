"""The model convention and adapters to it.

Convention: ``model(x, t, z) -> eps`` with x of shape (b, ...), t of shape (b,) in the
schedule's time units (float64 for float64 states, float32 otherwise: a bf16 or fp16 state never
rounds the model's time), z the conditional information (tensor with batch dimension b, or
None), and eps ε_θ(x_t, z, t) ≈ −σ_t ∇log p_t(x_t) shaped like x (paper §1.1).
Adapters turn x₀-, v- and flow-velocity-prediction models into ε-prediction and wrap diffusers UNets;
``ClipDenoised`` is the DDPM/DiffAE sampling convention of clipping x̂₀, as an ε-model.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .schedules import NoiseSchedule
from .validation import FiniteGuard, check_model_output

__all__ = [
    "call_model",
    "model_vjp",
    "EpsilonFromX0",
    "EpsilonFromV",
    "EpsilonFromVelocity",
    "as_epsilon_model",
    "ClipDenoised",
    "Autocast",
    "exact_float32",
    "ieee_float32",
    "model_time_dtype",
    "DiffusersUNet",
    "PREDICTION_TYPES",
]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow_prediction")  # diffusers' names


def model_time_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the time passed to the model: float64 for float64 states, float32 for any other."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def call_model(model, x: torch.Tensor, t: float, z, guard=None, step: int = -1) -> torch.Tensor:
    """ε_θ(x, z, t) with t broadcast to shape (b,) in ``model_time_dtype(x.dtype)``.

    The output's shape, dtype and device are checked on the host; its finiteness is recorded in
    ``guard`` (a ``validation.FiniteGuard``, tested once per pass) or, without one, checked at once.
    Raises:
        TypeError, ValueError: the output is not a tensor like x (``check_model_output``).
        FloatingPointError: NaN/Inf in the output (without a guard).
    """
    t_batch = torch.full((x.shape[0],), float(t), dtype=model_time_dtype(x.dtype), device=x.device)
    eps = model(x, t_batch, z)
    check_model_output(eps, x, float(t))
    if guard is None:
        guard = FiniteGuard("model call")
        guard.watch(eps, step, t)
        guard.check()
    else:
        guard.watch(eps, step, t)
    return eps


def model_vjp(model, x: torch.Tensor, t: float, z, a_x: torch.Tensor, inputs, guard=None, step: int = -1):
    """One network evaluation and one reverse-mode pass (paper §7.6).

    Returns (eps, v_x, [v_p for p in inputs]) with v_x = a_xᵀ ∂ε/∂x and v_p = a_xᵀ ∂ε/∂p at
    (x, z, t).  ``inputs`` are tensors the model reads (z and/or parameters θ); a p the output
    does not depend on gets a zero VJP.  The graph of this call is freed on return, so memory
    holds one set of network activations at a time.  guard, step: as ``call_model``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        eps = call_model(model, x, t, z, guard, step)
        grads = torch.autograd.grad(eps, [x, *inputs], grad_outputs=a_x, allow_unused=True)
    v_x, *v_rest = grads
    v_x = torch.zeros_like(x) if v_x is None else v_x
    v_rest = [torch.zeros_like(p) if g is None else g for p, g in zip(inputs, v_rest)]
    return eps.detach(), v_x, v_rest


class _PredictionToEpsilon(nn.Module):
    """Base of the adapters: calls the wrapped model and converts its output with α_t, σ_t."""

    def __init__(self, model, schedule: NoiseSchedule):
        super().__init__()
        self.model, self.schedule = model, schedule

    def forward(self, x, t, z=None):
        shape = (-1,) + (1,) * (x.dim() - 1)
        alpha, sigma = self.schedule.alpha(t).view(shape), self.schedule.sigma(t).view(shape)
        return self.to_epsilon(x, self.model(x, t, z), alpha, sigma).to(x.dtype)


class EpsilonFromX0(_PredictionToEpsilon):
    """Data-prediction model → ε-prediction:  ε = (x − α_t x̂₀(x, t, z)) / σ_t."""

    @staticmethod
    def to_epsilon(x, x0_pred, alpha, sigma):
        return (x - alpha * x0_pred) / sigma


class EpsilonFromV(_PredictionToEpsilon):
    """v-prediction model (v = α_t ε − σ_t x₀, Salimans & Ho 2022) → ε = σ_t x + α_t v."""

    @staticmethod
    def to_epsilon(x, v_pred, alpha, sigma):
        return sigma * x + alpha * v_pred


class EpsilonFromVelocity(_PredictionToEpsilon):
    """Flow-matching velocity model (u = dx/dt along the path = α̇_t x₀ + σ̇_t ε; diffusers' "flow_prediction",
    SD3 / Flux) → ε = (α_t u − α̇_t x) / (α_t σ̇_t − α̇_t σ_t);  for rectified flow (α = 1 − t, σ = t) ε = x + (1 − t) u.

    derivations/gaussian_paths.py (``velocity_adapter``).  With this adapter DDIM on ``RectifiedFlow`` is the
    Euler step in t, x_{t'} = x_t + (t' − t) u(x_t, t): our DDIM on the grid of a diffusers
    ``FlowMatchEulerDiscreteScheduler``'s sigmas (after its shift) equals its loop step for step, for every step
    whose two ends lie inside (0, 1).  Its first step from sigma 1 (α = 0: ε = x whatever u) and last step to
    sigma 0 (λ = +∞) are outside the λ-form; sample on a grid inside (0, 1) (``RectifiedFlow``'s defaults).
    Guidance commutes with this adapter (ε is affine in u with weights summing to 1).
    """

    def forward(self, x, t, z=None):
        shape = (-1,) + (1,) * (x.dim() - 1)
        alpha, sigma = self.schedule.alpha(t).view(shape), self.schedule.sigma(t).view(shape)
        d_alpha, d_sigma = self.schedule.d_alpha_dt(t).view(shape), self.schedule.d_sigma_dt(t).view(shape)
        u = self.model(x, t, z)
        return ((alpha * u - d_alpha * x) / (alpha * d_sigma - d_alpha * sigma)).to(x.dtype)


def as_epsilon_model(model, schedule: NoiseSchedule, prediction_type: str = "epsilon"):
    """Wrap ``model(x, t, z)`` predicting ``prediction_type`` (diffusers names) as an ε-model.

    Raises:
        ValueError: ``prediction_type`` is not one of ``PREDICTION_TYPES`` ("epsilon", "sample", "v_prediction",
            "flow_prediction").
    """
    if prediction_type == "epsilon":
        return model
    if prediction_type == "sample":
        return EpsilonFromX0(model, schedule)
    if prediction_type == "v_prediction":
        return EpsilonFromV(model, schedule)
    if prediction_type == "flow_prediction":
        return EpsilonFromVelocity(model, schedule)
    raise ValueError(f"unknown prediction type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


class ClipDenoised(nn.Module):
    """An ε-model whose implied clean image is clipped: DDPM's and DiffAE's ``clip_denoised`` sampling.

    Ho et al. 2020 (sampling with x̂₀ clipped to the data range); diffusers' ``clip_sample``.
        x̂₀ = (x − σ_t ε_θ(x, z, t)) / α_t,   ε̃ = (x − α_t clamp(x̂₀, −bound, bound)) / σ_t
    x: (b, ...), t: (b,), output shaped like x.  Where x̂₀ is inside the range ε̃ = ε_θ (up to rounding).
    Near t = T, α_t is small (σ_t/α_t ≈ 156 at t = 999 of the linear-β DDPM schedule), so a small ε error
    becomes a large x̂₀ error; clipping stops it from saturating the sample.  ε̃ is itself an ε-model: sampling,
    inversion and every adjoint apply to it unchanged (its Jacobian is piecewise: ∂ε̃/∂x = I/σ_t on
    clipped entries), but it is a different ODE from that of ε_θ, and the convergence orders assume a
    smooth model.
    Raises (constructor):
        ValueError: ``bound`` is not positive.
    """

    def __init__(self, model, schedule: NoiseSchedule, bound: float = 1.0):
        super().__init__()
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.model, self.schedule, self.bound = model, schedule, float(bound)

    def forward(self, x, t, z=None):
        shape = (-1,) + (1,) * (x.dim() - 1)
        alpha, sigma = self.schedule.alpha(t).view(shape), self.schedule.sigma(t).view(shape)
        x0_pred = (x - sigma * self.model(x, t, z)) / alpha
        return ((x - alpha * x0_pred.clamp(-self.bound, self.bound)) / sigma).to(x.dtype)


def exact_float32(device) -> None:
    """On CUDA, turn TF32 off for matrix products and cuDNN convolutions (PyTorch allows TF32, a 10-bit mantissa,
    for convolutions by default), so that float32 networks run in IEEE float32 as on a CPU: gradients then differ
    from the CPU's by round-off (~1e-6) instead of ~1e-3 (``../shared/reference/gpu-figures.md``), and DDIM
    inversion's round-off stopping rule holds.  Uses the ``allow_tf32`` flags (torch >= 2.9 refuses to read them
    once set through the newer ``fp32_precision`` API).  A no-op for other devices.  device: str or torch.device.
    """
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def ieee_float32():
    """Within the block, CUDA float32 matrix products and cuDNN convolutions run in IEEE float32 (TF32 off);
    the previous settings are restored on exit.  The reversible gradient method runs its network steps
    inside it: its backward pass needs every evaluation to reproduce the forward pass's, and TF32's 10-bit
    mantissa made its gradient 0.22 (ODE) and 1.0 (SDE) off on an H200 (issue 13;
    ``adjointlib.gradients.reversible``).  No effect on CPUs.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


class Autocast(nn.Module):
    """An ε-model evaluated under ``torch.autocast`` (mixed precision), returning the state's dtype.

    model(x, t, z) runs with convolutions and matrix products in ``dtype`` (bf16 by default) on x's device
    type; the output is cast back to x.dtype, so samplers, adjoints and VJPs keep float32 states and see a
    model with a relative error of about 1e-2 (bf16's 8-bit mantissa).  Gradients flow through autocast as
    through any op.  Not for the reversible method (its inverse amplifies each evaluation's rounding).
    x: (b, ...), t: (b,), output shaped like x.
    Raises (constructor):
        ValueError: ``dtype`` is neither torch.bfloat16 nor torch.float16.
    """

    def __init__(self, model, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        self.model, self.dtype = model, dtype

    def forward(self, x, t, z=None):
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x, t, z).to(x.dtype)


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` in the ``model(x, t, z)`` convention.

    conditioning: None (unconditional), "class" (z → ``class_labels``, e.g. a continuous code
    through a class-embedding layer) or "encoder" (z → ``encoder_hidden_states``).
    Time mapping: with ``DiscreteVP`` the schedule's time is the diffusers timestep, so
    ``time_scale=1``; for a model trained on continuous t ∈ [0, 1] with timesteps 1000·t use
    ``time_scale=1000``.  Learned-variance outputs (2C channels) are cut to the ε half.
    Raises (constructor):
        ValueError: ``conditioning`` is not None, "class" or "encoder".
    """

    def __init__(self, unet: nn.Module, conditioning: str | None = None, time_scale: float = 1.0):
        super().__init__()
        if conditioning not in (None, "class", "encoder"):
            raise ValueError(f"unknown conditioning {conditioning!r}; use None, 'class' or 'encoder'")
        self.unet, self.conditioning, self.time_scale = unet, conditioning, float(time_scale)

    def forward(self, x, t, z=None):
        """ε_θ(x, z, t): x (b, C, H, W), t (b,) in the schedule's time unit (times ``time_scale`` gives the UNet's
        timestep), z passed as set by ``conditioning``; output (b, C, H, W).

        Raises:
            ValueError: ``z`` is given to an unconditional model (``conditioning`` None).
        """
        kwargs = {}
        if self.conditioning == "class":
            kwargs["class_labels"] = z
        elif self.conditioning == "encoder":
            kwargs["encoder_hidden_states"] = z
        elif z is not None:
            raise ValueError("this DiffusersUNet is unconditional (conditioning=None) but z was given; for a "
                             "UNet2DConditionModel use conditioning='encoder' (z = encoder_hidden_states), for a class "
                             "embedding conditioning='class'")
        out = self.unet(x, t * self.time_scale, **kwargs).sample
        return out[:, : x.shape[1]] if out.shape[1] == 2 * x.shape[1] else out

    @classmethod
    def from_pipeline_parts(cls, unet, scheduler, conditioning: str | None = None):
        """(ε-model, schedule) from a diffusers UNet and scheduler.

        A DDPM-family scheduler (``alphas_cumprod``) gives a ``DiscreteVP`` (time unit: the diffusers timestep)
        and honours its ``prediction_type`` ("epsilon", "sample", "v_prediction").  A flow-matching scheduler
        (``FlowMatch*``, or ``use_flow_sigmas``) gives ``RectifiedFlow()`` (time unit: the sigma t ∈ (0, 1)) and
        an ``EpsilonFromVelocity`` model whose network timestep is t · ``num_train_timesteps``, as diffusers'
        flow pipelines call it.
        Raises:
            TypeError: a scheduler of neither kind (``DiscreteVP.from_diffusers``).
            ValueError: ``conditioning`` is unknown, or the scheduler's table or prediction type is invalid.
        """
        from .schedules import DiscreteVP, RectifiedFlow

        if type(scheduler).__name__.startswith("FlowMatch") or getattr(scheduler.config, "use_flow_sigmas", False):
            schedule = RectifiedFlow()
            model = cls(unet, conditioning, time_scale=scheduler.config.num_train_timesteps)
            return EpsilonFromVelocity(model, schedule), schedule
        schedule = DiscreteVP.from_diffusers(scheduler)
        prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")
        return as_epsilon_model(cls(unet, conditioning), schedule, prediction_type), schedule
