"""Classifier-free guidance as an ε-model, so that every sampler and gradient method applies to it unchanged.

Ho & Salimans 2022 (*Classifier-Free Diffusion Guidance*, eq. 6) with the scale convention of diffusers and
Imagen (Saharia et al. 2022), w = 1 + w_Ho:

    ε_w(x, z, t) = ε_θ(x, z_u, t) + w (ε_θ(x, z, t) − ε_θ(x, z_u, t)) = (1 − w) ε_u + w ε_c,

z the condition (e.g. a prompt's text embeddings), z_u the unconditional one (the empty prompt's embeddings, or a
negative prompt's).  w = 0 is the unconditional model, w = 1 the conditional one, w > 1 extrapolates.

**Which ODE the sampler solves.**  With ε = −σ_t ∇log p_t (paper §1.1), ε_w = −σ_t ∇log(p_{u,t}^{1−w} p_{c,t}^w):
ε_w is the ε of the *tilted* density p̃_t ∝ p_{u,t}^{1−w} p_{c,t}^w at every t.  In general that family is not the
marginal family of any single diffusion: Gaussian smoothing does not commute with taking powers and products, so
the forward process applied to p̃_0 gives densities other than p̃_t for t > 0 (Du et al. 2023, *Reduce, Reuse,
Recycle*, arXiv:2302.11552, discuss it for products of diffusion models; Gaussians of equal covariance are an
exception).  The guided PF-ODE dx/dt = f(t) x + g²(t)/(2σ_t) ε_w(x, z, t) therefore transports p̃_T to a
distribution that is in general not p̃_0, and it is a different vector field from the PF-ODE of either the
conditional or the unconditional model.  It is nevertheless an ODE of exactly the form the library integrates,
with ε_w as smooth as ε_θ: DDIM and DPM-Solver-2M converge to its solution at orders 1 and 2, and AdjointDEIS
(paper Alg. 1) is the exact continuous adjoint *of this field* — the gradient it converges to is that of the
guided sampler's limit, w.r.t. x_T, z, w, z_u and θ alike.  ``tests/test_guidance.py`` measures the orders, and
shows on exact Gaussian models that the guided ODE maps p̃_T onto p̃_0 when the two variances agree (p̃_t is then
a diffusion) and misses it by far when they differ.

**Prediction types.**  The adapters of ``adjointlib.models`` (x₀-prediction ε = (x − α_t x̂₀)/σ_t, v-prediction
ε = σ_t x + α_t v) and the flow-velocity adapter ε = x + (1 − t) v are affine in the prediction p,
ε = a_t x + b_t p, with a weight on x that does not depend on p.  Guidance mixes with weights (1 − w) + w = 1,
so a_t x passes through unchanged and guiding p then converting equals converting each branch then guiding ε:
``ClassifierFreeGuidance(EpsilonFromV(raw, schedule), ...)`` is ``EpsilonFromV(ClassifierFreeGuidance(raw,
...), schedule)`` up to rounding (the second is what diffusers' pipelines do: guide the raw output, convert in
the scheduler).  Either order is correct for affine adapters.  It is *not* so for ``ClipDenoised``, which is
nonlinear: diffusers guides first and then clips x̂₀ in the scheduler, i.e.
``ClipDenoised(ClassifierFreeGuidance(model, ...), schedule)``; clipping each branch before guiding is a
different field.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

__all__ = ["ClassifierFreeGuidance"]


class ClassifierFreeGuidance(nn.Module):
    """ε_w = ε_u + w (ε_c − ε_u) (Ho & Salimans 2022, eq. 6, diffusers' scale): an ε-model ``model(x, t, z)``.

    model: an ε-model in the library's convention (``adjointlib.models``): x (b, ...), t (b,) in the schedule's time
    unit (the diffusers timestep for ``DiscreteVP``), z with batch dimension b; e.g. ``DiffusersUNet(unet,
    conditioning="encoder")`` with z the prompt embeddings (b, L, D).  An nn.Module model is registered as a
    submodule, so its parameters θ are this module's parameters.
    scale: the guidance scale w (a number or a one-element tensor), stored as the 0-dim nn.Parameter ``scale``:
    ``adjointlib.sample(guided, ..., params=[guided.scale])`` returns dL/dw (and with ``params=None`` every
    parameter requiring grad is differentiated, w and θ included).  Its dtype is that of ``unconditional`` when
    floating (so ``.double()`` or ``.to(dtype)`` moves both), else the default dtype.
    unconditional: z_u, shape (1, ...) (broadcast to the batch) or (b, ...), the trailing shape, dtype and device of
    the z passed at call time.  A floating z_u is stored as the nn.Parameter ``unconditional`` with
    ``requires_grad=learn_unconditional`` (default False: a fixed empty-prompt embedding).  To differentiate a
    negative-prompt embedding, pass ``learn_unconditional=True`` (or call ``guided.unconditional.requires_grad_()``
    later) and include ``guided.unconditional`` in ``params`` (or leave ``params=None``).  An integer z_u (class
    labels) is stored as a buffer and cannot be learned.

    forward(x, t, z) -> ε_w, shaped like x: ONE batched network call on (cat([x, x]), cat([t, t]),
    cat([z_u expanded to b, z])) — unconditional half first, as diffusers' ``StableDiffusionPipeline`` does — split
    with ``chunk(2)``.  The batched call and two separate calls give the same ε_w up to rounding (a batch-dependent
    network, e.g. BatchNorm in training mode, would not).  Note that diffusers' pipelines skip guidance for
    guidance_scale <= 1 (they then use ε_c alone); this module applies the formula for every w.
    Raises (constructor):
        TypeError: ``model`` is not callable; ``scale`` is not a real number or a one-element floating tensor (bools
            are refused); ``unconditional`` is not a tensor; ``learn_unconditional`` is not a bool.
        ValueError: ``scale`` is NaN or infinite; ``unconditional`` is 0-dim, has an empty batch, contains NaN/Inf, or
            is an integer tensor with ``learn_unconditional=True``.
    """

    def __init__(self, model, scale, unconditional, *, learn_unconditional: bool = False):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t, z) -> eps, got {type(model).__name__}")
        if not isinstance(learn_unconditional, bool):
            raise TypeError(f"learn_unconditional must be True or False, got {learn_unconditional!r}")
        if not isinstance(unconditional, torch.Tensor):
            raise TypeError(f"unconditional must be a torch.Tensor of shape (1, ...) or (b, ...) (the unconditional "
                            f"embedding z_u), got {type(unconditional).__name__}")
        if unconditional.dim() == 0:
            raise ValueError("unconditional must have a batch dimension, shape (1, ...) or (b, ...); got a 0-dim "
                             "tensor (use unconditional[None] for a single embedding)")
        if unconditional.shape[0] == 0:
            raise ValueError(f"unconditional has an empty batch: shape {tuple(unconditional.shape)}")
        floating = unconditional.is_floating_point()
        if floating and not bool(torch.isfinite(unconditional).all()):
            raise ValueError("unconditional contains NaN or Inf")
        if not floating and learn_unconditional:
            raise ValueError(f"unconditional is a {unconditional.dtype} tensor (labels), which cannot have a gradient; "
                             "use learn_unconditional=False")
        dtype = unconditional.dtype if floating else torch.get_default_dtype()
        self.model = model
        self.scale = nn.Parameter(_scale_tensor(scale, dtype, unconditional.device))
        if floating:
            self.unconditional = nn.Parameter(unconditional.detach().clone(), requires_grad=learn_unconditional)
        else:
            self.register_buffer("unconditional", unconditional.detach().clone())

    def forward(self, x, t, z=None):
        """ε_w(x, z, t) = ε_u + w (ε_c − ε_u): x (b, ...), t (b,) in the schedule's time unit, z (b, ...) → (b, ...).

        Raises:
            ValueError: ``z`` is None (guidance needs a condition); ``unconditional``'s batch size is neither 1 nor
                b, or its trailing shape differs from z's; the model output's batch is not 2b.
            TypeError: ``unconditional``'s dtype differs from z's.
        """
        if z is None:
            raise ValueError("ClassifierFreeGuidance needs the condition z (e.g. prompt embeddings); got z=None")
        z_u = self.unconditional
        b = x.shape[0]
        if z_u.dim() != z.dim() or z_u.shape[1:] != z.shape[1:]:
            raise ValueError(f"unconditional has shape {tuple(z_u.shape)} but z has shape {tuple(z.shape)}: they must "
                             "agree after the batch dimension")
        if z_u.shape[0] not in (1, b):
            raise ValueError(f"unconditional has batch size {z_u.shape[0]}; expected 1 or the batch size of x, {b}")
        if z_u.dtype != z.dtype:
            raise TypeError(f"dtype mismatch: unconditional is {z_u.dtype} but z is {z.dtype} (convert the module "
                            "with .to(dtype) or pass z in unconditional's dtype)")
        z_u = z_u.to(z.device).expand(b, *z.shape[1:])
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([z_u, z]))
        if not isinstance(out, torch.Tensor) or out.shape[0] != 2 * b:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the guided model must return a batch of 2b = {2 * b} for the doubled batch, got {shape}")
        eps_u, eps_c = out.chunk(2)
        return eps_u + self.scale * (eps_c - eps_u)

    def extra_repr(self) -> str:
        return f"scale={float(self.scale.detach()):.6g}, unconditional={tuple(self.unconditional.shape)}"


def _scale_tensor(scale, dtype, device) -> torch.Tensor:
    """The guidance scale as a finite 0-dim tensor of ``dtype``.

    Raises:
        TypeError: a bool, or neither a real number nor a one-element floating tensor.
        ValueError: NaN or infinite.
    """
    if isinstance(scale, bool):
        raise TypeError(f"scale must be a real number, got the bool {scale}")
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1 or not scale.is_floating_point():
            raise TypeError(f"scale must be a real number or a one-element floating tensor, got a {scale.dtype} "
                            f"tensor of shape {tuple(scale.shape)}")
        value = scale.detach().reshape(()).to(device=device, dtype=dtype).clone()
    elif isinstance(scale, numbers.Real):
        value = torch.tensor(float(scale), dtype=dtype, device=device)
    else:
        raise TypeError(f"scale must be a real number or a one-element floating tensor, got {type(scale).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"scale must be finite, got {float(value)}")
    return value
