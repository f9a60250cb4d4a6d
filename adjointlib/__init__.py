"""adjointlib: gradients through diffusion-model samplers (AdjointDEIS, Blasingame & Liu, NeurIPS 2024).

Layout, bottom up: ``grids`` (time grids, the time tolerance), ``schedules`` (α, σ, λ: VP and rectified flow),
``validation`` (input checks), ``steps`` (stateless solver and adjoint steps), ``samplers`` (which sampler), ``plan``
(one call's resolved facts), ``models`` (the ε-model convention and adapters), ``guidance``
(classifier-free guidance as an ε-model), ``solvers`` (forward
sampling), ``adjoint`` (the AdjointDEIS pass), ``gradients`` (the gradient methods as peers: adjoint,
backprop, checkpoint, blackbox, reversible; NFE counting), ``sample`` (the dispatcher), ``encoders``
(DDIM inversion, Cycle-SDE), ``latent`` (latent text-to-image pipelines, the VAE decoder), ``brownian`` (consistent SDE noises), ``toy`` (exact Gaussian oracle),
``atomic`` (atomic file writes).  ``faces``, ``facemodel`` and ``morph`` are the face application on top.
"""
from . import gradients, latent, toy
from .adjoint import adjoint_deis
from .brownian import BrownianPath
from .encoders import cycle_sde_encode, ddim_invert, ddim_invert_one_pass
from .gradients import (GRADIENT_METHODS, Adjoint, Backprop, Blackbox, Checkpoint, CountingModel, Reversible,
                        reversible_solve, reversible_unsolve)
from .grids import time_grid
from .guidance import ClassifierFreeGuidance
from .models import (Autocast, ClipDenoised, DiffusersUNet, EpsilonFromV, EpsilonFromVelocity, EpsilonFromX0,
                     as_epsilon_model, exact_float32, ieee_float32)
from .plan import SamplingPlan, plan_sampling
from .sample import sample
from .samplers import SAMPLERS, ExponentialIntegrator, ReversibleSampler, TorchdiffeqSampler
from .schedules import CosineVP, DiscreteVP, LinearVP, NoiseSchedule, RectifiedFlow, VPSchedule
from .solvers import RECORD_MODES, Trajectory, integrate, solve

__all__ = [
    "sample", "solve", "integrate", "adjoint_deis", "Trajectory", "RECORD_MODES", "time_grid",
    "plan_sampling", "SamplingPlan",
    "SAMPLERS", "ExponentialIntegrator", "ReversibleSampler", "TorchdiffeqSampler",
    "GRADIENT_METHODS", "Adjoint", "Backprop", "Checkpoint", "Blackbox", "Reversible",
    "LinearVP", "CosineVP", "DiscreteVP", "VPSchedule", "NoiseSchedule", "RectifiedFlow",
    "ddim_invert", "ddim_invert_one_pass", "cycle_sde_encode", "BrownianPath",
    "DiffusersUNet", "ClipDenoised", "Autocast", "exact_float32", "ieee_float32", "EpsilonFromX0", "EpsilonFromV",
    "EpsilonFromVelocity", "ClassifierFreeGuidance",
    "as_epsilon_model", "toy", "gradients", "latent", "CountingModel", "reversible_solve", "reversible_unsolve",
]
__version__ = "0.2.0"
