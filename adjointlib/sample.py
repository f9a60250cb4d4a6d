"""``sample``: a sampler differentiable by the gradient method of your choice (default AdjointDEIS).

The call is resolved once into a ``SamplingPlan`` (``adjointlib.plan``): grid, sampler, z schedule,
noises and the prepared gradient method, all validated before any network evaluation; the method then
runs the sampler and attaches its backward pass.
"""
from __future__ import annotations

from .gradients.base import differentiable_params
from .plan import plan_sampling
from .validation import check_model

__all__ = ["sample"]


def sample(model, schedule, x_T, z=None, *, steps, sampler="ddim", gradient="adjoint", t_start=None, t_end=None,
           noises=None, generator=None, params=None):
    """x_0 from x_T, differentiable w.r.t. x_T, z (each z_i of a per-step schedule) and θ.

    model(x, t, z) -> ε with t of shape (b,) in the schedule's time unit (continuous t, or the diffusers
    timestep for ``DiscreteVP``); x_T: (b, ...) floating; z: None, (b, ...) or a list of one tensor per step
    (paper Thm 2.2; equal-valued steps behave exactly as one shared tensor).
    steps: an int N (grid uniform in λ from t_start to t_end, default the schedule's ends) or an explicit
    decreasing grid.  sampler: "ddim" (default), "dpm-solver-2m", "sde-dpm-solver-1" (paper eq. 3.6), the
    reversible couplings "reversible-ddim" / "reversible-midpoint" / "reversible-sde", or torchdiffeq's "rk4" /
    "dopri5" (``adjointlib.SAMPLERS``, or a sampler value).  gradient: "adjoint" (AdjointDEIS, paper Alg. 1;
    ``adjointlib.Adjoint(order=, steps=, recompute=)`` for its options), "backprop", "checkpoint", "blackbox"
    or "reversible" (``adjointlib.GRADIENT_METHODS``); a method refuses a sampler it cannot differentiate.
    noises: (N, *x_T.shape) standard normals for an SDE sampler (drawn with ``generator`` when None); the
    backward pass uses the same.  params: tensors θ whose gradient is wanted; default every parameter of
    ``model`` (an nn.Module) requiring grad.
    Returns x_0, shape and dtype of x_T; ``torch.autograd.grad(loss(x_0), [x_T, z, *params])`` runs the method.
    Raises:
        TypeError, ValueError: any invalid argument, at call time, naming it (``plan_sampling``).
        FloatingPointError: the model returned NaN/Inf (after the pass, naming the step and time).
        RuntimeError: (backward) z, θ or a model tensor was changed in place between forward and backward.
    """
    check_model(model)
    plan = plan_sampling(schedule, x_T, z, steps=steps, sampler=sampler, gradient=gradient, t_start=t_start,
                         t_end=t_end, noises=noises, generator=generator)
    return plan.gradient.differentiate(model, plan, x_T, differentiable_params(model, params))
