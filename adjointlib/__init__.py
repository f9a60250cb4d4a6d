"""adjointlib: gradients through diffusion-model samplers (AdjointDEIS, Blasingame & Liu, NeurIPS 2024).

Layout: ``schedules`` (α, σ, λ), ``grids`` (time grids), ``steps`` (stateless solver and adjoint
steps), ``solvers`` (forward sampling), ``adjoint`` (AdjointDEIS), ``sample`` (the differentiable
sampler), ``encoders`` (DDIM inversion, Cycle-SDE), ``models`` (the ε-model convention and
adapters), ``toy`` (exact Gaussian oracle), ``brownian`` (consistent SDE noises), ``gradients`` (the
alternatives to the adjoint: backprop, checkpoint, blackbox, reversible; NFE counting).
"""
from . import gradients, toy
from .adjoint import adjoint_deis
from .brownian import BrownianPath
from .encoders import cycle_sde_encode, ddim_invert, ddim_invert_one_pass
from .gradients import CountingModel, reversible_solve, reversible_unsolve
from .config import book_mode
from .grids import time_grid
from .models import (Autocast, ClipDenoised, DiffusersUNet, EpsilonFromV, EpsilonFromX0, as_epsilon_model,
                     exact_float32)
from .sample import sample
from .schedules import CosineVP, DiscreteVP, LinearVP, VPSchedule
from .solvers import Trajectory, solve

__all__ = [
    "sample", "solve", "adjoint_deis", "Trajectory", "time_grid", "book_mode",
    "LinearVP", "CosineVP", "DiscreteVP", "VPSchedule",
    "ddim_invert", "ddim_invert_one_pass", "cycle_sde_encode", "BrownianPath",
    "DiffusersUNet", "ClipDenoised", "Autocast", "exact_float32", "EpsilonFromX0", "EpsilonFromV", "as_epsilon_model", "toy",
    "gradients", "CountingModel", "reversible_solve", "reversible_unsolve",
]
__version__ = "0.1.0"
