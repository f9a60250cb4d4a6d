"""``reversible``: an algebraically reversible sampler whose backward pass rebuilds its states exactly.

Base steps (derivations/reversible.py).  Each first-order exponential integrator is explicit
Euler(–Maruyama) in a frame v = x/κ where the diffusion equation has no linear term:

    form "data"  (DPM-Solver++, Lu et al. 2022b): ODE  v = x/σ,     dv = x_θ dμ,            μ = α/σ
                                                   SDE  v = αx/σ²,  dv = x_θ d(μ²) + dW(μ²)
    form "noise" (DPM-Solver, paper §7.3, eq. 3.6): ODE  v = x/α,     dv = ε_θ dν,            ν = σ/α
                                                   SDE  v = x/α,     dv = 2ε_θ dν + dW(ν²)

with x_θ = (x − σε_θ)/α.  One Euler step of these is DDIM (both ODE forms), SDE-DPM-Solver++1 or
SDE-DPM-Solver-1; the exponential midpoint rule (λ_r = (λ_s + λ_t)/2) is DPM-Solver++(2S) or
DPM-Solver-2.  Run from t to s (towards noise) the same formula is the step's time reversal, with
−ΔW for the SDE.

Coupling (McCallum & Foster 2024, eq. 2; the coupling of Rex, Blasingame & Liu 2025).  In the base's
own frame v, with Ψ(s → t, v) = v_t − v the base step written as an increment and ζ ∈ (0, 1], two
states (v, v̂) start from v_0 = v̂_0 = x_T/κ_T and

    v_{n+1} = ζ v_n + (1 − ζ) v̂_n + Ψ(t_n → t_{n+1}, v̂_n)
    v̂_{n+1} = v̂_n − Ψ(t_{n+1} → t_n, v_{n+1})

whose inverse is explicit:  v̂_n = v̂_{n+1} + Ψ(t_{n+1} → t_n, v_{n+1}),
v_n = (v_{n+1} − (1 − ζ) v̂_n − Ψ(t_n → t_{n+1}, v̂_n)) / ζ.  The output is x_0 = κ_0 v_N.  A step of the
pair has eigenvalues ≈ J_n (the flow's, per step) and ≈ ζ/J_n (a parasitic mode).  In the data frames
J_n = I + ΔC κ ∂x_θ/∂x with ΔC > 0 and ∂x_θ/∂x ⪰ 0 for a denoiser, so J_n ⪰ I: the parasitic mode is
damped forwards, and backwards the reconstruction's round-off grows by at most the flow's total
expansion in that frame (≈ σ_T/σ_0 for the ODE, α_0σ_T²/(α_Tσ_0²) for the SDE, times ∂x_0/∂x_T).  The
noise frames have ΔC < 0 (J_n ≺ I near the data) and amplify the truncation error forwards instead; so
does coupling the SDE in x/σ, where J_n ≈ e^{−h} wherever ∂x_θ/∂x ≈ 0 (chapter 07).
The backward pass walks the inverse, evaluating each Ψ once with a graph for both the reconstruction
and its VJP: the exact gradient of this discrete sampler with O(1) memory.  Both passes run their network
evaluations in IEEE float32 (``models.ieee_float32``: TF32 off on CUDA), and bf16/fp16 states or an
``Autocast`` model are refused, because the backward pass needs each evaluation to reproduce the forward
pass's: with evaluations reproducible only to a relative δ, the rebuilt states carry δ times the flow's
expansion in the frame (at most ≈ 1/σ_{t_end}, 95 on the linear schedule with t_min = 1e-3), and the
parasitic mode grows as ζ moves from 1.  Measured (tests/test_off_the_happy_path.py, toy model, N = 20,
δ = 1e-3): gradient error 22δ at ζ = 0.999 and 308δ at ζ = 0.9, against 2δ for the adjoint and checkpoint;
on an H200 with TF32 on, 0.22 (ODE) and 1.0 (SDE) for a small UNet (issue 13).  The SDE coupling is refused
in float32 altogether: its frame's dynamic range (≈ 1.5e6, above) makes float32 itself too coarse — on a CPU,
exact float32, the small UNet's gradient at N = 8 was 0.91 off float64 (the ODE coupling: 7.6e-4;
``benchmarks/gpu_check.py``).  Cost per step: 2 (Euler)
or 4 (midpoint) evaluations forwards, as many evaluations and VJPs backwards.  The error of the Euler
coupling behaves as O(h) + O((1 − ζ) h N): with N < 1/(1 − ζ) it has a floor ∝ (1 − ζ) rather than
order 1 (chapter 07).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from ..models import Autocast, call_model, ieee_float32
from ..plan import plan_sampling
from ..samplers import ReversibleSampler
from ..validation import FiniteGuard, check_model
from .base import model_tensors, refuse_sampler

__all__ = [
    "euler_increment",
    "midpoint_increment",
    "reversible_step",
    "reversible_step_inverse",
    "reversible_pair",
    "reversible_solve",
    "reversible_unsolve",
    "Reversible",
    "INCREMENTS",
]


def _frame(schedule, form, sde, *times):
    """Per time (floats): (κ, C, N, α, σ) with v = x/κ, drift clock C and noise clock N (module doc)."""
    t = torch.tensor([float(x) for x in times], dtype=torch.float64)
    out = []
    for a, sg in zip(schedule.alpha(t).tolist(), schedule.sigma(t).tolist()):
        if form == "noise":
            nu = sg / a
            out.append((a, (2.0 if sde else 1.0) * nu, nu * nu, a, sg))
        elif sde:
            mu = a / sg
            out.append((sg * sg / a, mu * mu, -mu * mu, a, sg))
        else:
            out.append((sg, a / sg, None, a, sg))
    return out


def _prediction(model, form, x, t, z, alpha, sigma, guard=None):
    """ε_θ(x, z, t) (form "noise") or x_θ = (x − σ ε_θ)/α (form "data").  (b, ...)."""
    eps = call_model(model, x, float(t), z, guard)
    return eps if form == "noise" else (x - sigma * eps) / alpha


def euler_increment(model, schedule, v, s, t, z, noise=None, form="data", sde=False, guard=None):
    """DDIM / SDE-DPM-Solver++1 (form "data") or DDIM / SDE-DPM-Solver-1 (form "noise", paper eq. 3.6)
    as explicit Euler(–Maruyama) in the form's frame v = x/κ (Lu et al. 2022, 2022b):

        v_t = v_s + (C_t − C_s) G(κ_s v_s, s) + sign(N_s − N_t) sqrt(|N_s − N_t|) ξ   (ξ = ``noise``, SDE only)

    with G = x_θ or ε_θ, returned as the increment v_t − v_s.  Either direction (s > t towards data;
    towards noise ξ enters as −ΔW).  v, ξ: (b, ...).
    Raises:
        ValueError: ``sde`` is true and ``noise`` is None.
    """
    (k_s, c_s, n_s, a_s, sg_s), (_, c_t, n_t, _, _) = _frame(schedule, form, sde, s, t)
    out = (c_t - c_s) * _prediction(model, form, k_s * v, s, z, a_s, sg_s, guard)
    if sde:
        if noise is None:
            raise ValueError("an SDE increment needs a noise tensor")
        out = out + math.copysign(math.sqrt(abs(n_s - n_t)), n_s - n_t) * noise
    return out


def midpoint_increment(model, schedule, v, s, t, z, noise=None, form="data", sde=False, guard=None):
    """DPM-Solver++(2S) (form "data") or DPM-Solver-2 (form "noise"; Lu et al. 2022, Alg. 1, r₁ = ½),
    the exponential midpoint rule with λ_r = (λ_s + λ_t)/2, ODE only, in the form's frame:

        v_r = v_s + (C_r − C_s) G(κ_s v_s, s),   v_t = v_s + (C_t − C_s) G(κ_r v_r, r),

    returned as the increment v_t − v_s.  v: (b, ...).
    """
    lam = schedule.lam(torch.tensor([float(s), float(t)], dtype=torch.float64))
    r = float(schedule.t_of_lam(lam.mean()))
    (k_s, c_s, _, a_s, sg_s), (_, c_t, _, _, _), (k_r, c_r, _, a_r, sg_r) = _frame(schedule, form, False, s, t, r)
    v_r = v + (c_r - c_s) * _prediction(model, form, k_s * v, s, z, a_s, sg_s, guard)
    return (c_t - c_s) * _prediction(model, form, k_r * v_r, r, z, a_r, sg_r, guard)


INCREMENTS = {"euler": euler_increment, "midpoint": midpoint_increment}


def reversible_step(increment, model, schedule, v, v_hat, s, t, z, noise, coupling, form="data", sde=False,
                    guard=None):
    """One McCallum–Foster step s → t (module doc).  Returns (v_t, v̂_t), each (b, ...)."""
    v_new = coupling * v + (1.0 - coupling) * v_hat + increment(model, schedule, v_hat, s, t, z, noise, form, sde,
                                                                guard)
    return v_new, v_hat - increment(model, schedule, v_new, t, s, z, noise, form, sde, guard)


def reversible_step_inverse(increment, model, schedule, v, v_hat, s, t, z, noise, coupling, form="data", sde=False):
    """The exact inverse of ``reversible_step``: (v_t, v̂_t) → (v_s, v̂_s), each (b, ...)."""
    v_hat_s = v_hat + increment(model, schedule, v, t, s, z, noise, form, sde)
    v_s = (v - (1.0 - coupling) * v_hat_s - increment(model, schedule, v_hat_s, s, t, z, noise, form, sde)) / coupling
    return v_s, v_hat_s


def _scales(plan):
    """κ at times[0] and times[-1] (the frame v = x/κ)."""
    (k_T, *_), (k_0, *_) = _frame(plan.schedule, plan.sampler.form, plan.sampler.sde, plan.times[0], plan.times[-1])
    return k_T, k_0


def _steps(plan):
    """Per sampling step i: (i, s, t, z_i, noise_i) of the plan."""
    for i in range(plan.steps):
        yield i, plan.times[i], plan.times[i + 1], plan.conditions.at(i), None if plan.noises is None else plan.noises[i]


def _coupling(plan):
    """(increment function, ζ, form, sde) of the plan's reversible sampler."""
    sampler = plan.sampler
    return INCREMENTS[sampler.base], float(sampler.coupling), sampler.form, sampler.sde


def reversible_pair(model, plan, x_T, guard=None):
    """The plan's reversible sampler from x_T: the pair (x_0, x̂_0) = κ_0 (v_N, v̂_N), each (b, ...).

    Differentiable by plain autograd unless run under ``torch.no_grad()``.
    Raises:
        FloatingPointError: the model returned NaN/Inf (checked once at the end).
    """
    own_guard = guard is None
    guard = FiniteGuard("reversible sampling") if own_guard else guard
    increment, zeta, form, sde = _coupling(plan)
    k_T, k_0 = _scales(plan)
    v = v_hat = x_T / k_T
    for _, s, t, z, noise in _steps(plan):
        v, v_hat = reversible_step(increment, model, plan.schedule, v, v_hat, s, t, z, noise, zeta, form, sde, guard)
    if own_guard:
        guard.check()
    return k_0 * v, k_0 * v_hat


def reversible_solve(model, schedule, x_T, z, times, *, sampler="reversible-ddim", noises=None):
    """Run a reversible sampler from x_T along ``times``: the pair (x_0, x̂_0) = κ_0 (v_N, v̂_N).

    sampler: "reversible-ddim" (DDIM base), "reversible-midpoint" (exponential midpoint base),
    "reversible-sde" (SDE-DPM-Solver(++)1 base with ``noises`` (N, *x_T.shape)) or a ``ReversibleSampler``
    (coupling ζ, form "data"/"noise": module doc).  x_T: (b, ...); z: None, (b, ...) or one tensor per step;
    times: an int N or a decreasing grid.  Differentiable by plain autograd unless under ``torch.no_grad()``.
    Returns two (b, ...) tensors.
    Raises:
        TypeError, ValueError: invalid arguments (``plan_sampling``) or a non-reversible sampler.
    """
    check_model(model)
    plan = plan_sampling(schedule, x_T, z, steps=times, sampler=sampler, noises=noises)
    refuse_sampler(Reversible(), plan)
    return reversible_pair(model, plan, x_T)


@torch.no_grad()
def reversible_unsolve(model, schedule, x_0, x_hat_0, z, times, *, sampler="reversible-ddim", noises=None):
    """Invert ``reversible_solve``: the pair (x_T, x̂_T) from (x_0, x̂_0), by exact inverse steps.

    Both returned tensors equal the x_T that produced (x_0, x̂_0), up to round-off.  Shapes (b, ...).
    Raises:
        TypeError, ValueError: invalid arguments (``plan_sampling``) or a non-reversible sampler.
    """
    check_model(model)
    plan = plan_sampling(schedule, x_0, z, steps=times, sampler=sampler, noises=noises)
    refuse_sampler(Reversible(), plan)
    increment, zeta, form, sde = _coupling(plan)
    k_T, k_0 = _scales(plan)
    v, v_hat = x_0 / k_0, x_hat_0 / k_0
    for _, s, t, z_i, noise in reversed(list(_steps(plan))):
        v, v_hat = reversible_step_inverse(increment, model, plan.schedule, v, v_hat, s, t, z_i, noise, zeta, form, sde)
    return k_T * v, k_T * v_hat


def _increment_vjp(increment, model, schedule, v, s, t, z_i, noise, form, sde, cotangent, inputs, guard):
    """Ψ(s → t, v) without graph, and the VJPs (cotangentᵀ ∂Ψ/∂v, [cotangentᵀ ∂Ψ/∂p for p in inputs])."""
    with torch.enable_grad():
        v = v.detach().requires_grad_(True)
        out = increment(model, schedule, v, s, t, z_i, noise, form, sde, guard)
        grads = torch.autograd.grad(out, [v, *inputs], grad_outputs=cotangent, allow_unused=True)
    vjp_v, *v_rest = grads
    return out.detach(), vjp_v, [torch.zeros_like(p) if g is None else g for p, g in zip(inputs, v_rest)]


@dataclass(frozen=True)
class Reversible:
    """The exact gradient of a reversible sampler with O(1) memory (no options; the coupling ζ and the frame
    belong to the sampler).  Samplers: ``ReversibleSampler`` ("reversible-ddim", "reversible-midpoint",
    "reversible-sde")."""

    name = "reversible"
    samplers = (ReversibleSampler,)

    def prepare(self, plan) -> "Reversible":
        """Raises ValueError for another sampler kind."""
        refuse_sampler(self, plan)
        return self

    def differentiate(self, model, plan, x_T, params):
        """x_0 (b, ...); the backward pass rebuilds (v_i, v̂_i) by exact inverse steps and back-propagates each.

        Raises:
            TypeError: a bf16/fp16 state, a float32 state with an SDE sampler, or an ``Autocast`` model (their
                rounding is not invertible: module doc).
        """
        if x_T.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"gradient='reversible' needs float32 or float64 states, got x_T in {x_T.dtype}: its "
                            "backward pass needs every evaluation to reproduce the forward pass (module doc)")
        if plan.sampler.sde and x_T.dtype != torch.float64:
            raise TypeError(f"gradient='reversible' with an SDE sampler needs float64 states, got x_T in {x_T.dtype}: "
                            "its frame's dynamic range (α_0σ_T²/(α_Tσ_0²) ≈ 1.5e6 on the linear schedule) turns float32 "
                            "rounding into an O(1) gradient error (measured 0.91, module doc)")
        if isinstance(model, Autocast) or isinstance(getattr(model, "model", None), Autocast):
            raise TypeError("gradient='reversible' cannot differentiate an Autocast (mixed-precision) model: its "
                            "backward pass needs every evaluation to reproduce the forward pass (module doc)")
        z_inputs = plan.conditions.inputs()
        return _ReversibleSample.apply(plan, model, len(z_inputs), len(params), x_T, *z_inputs, *params)


class _ReversibleSample(torch.autograd.Function):
    """(plan, model, n_z, n_params, x_T, *z_inputs, *params) → x_0; backward: exact inverse steps + VJPs."""

    @staticmethod
    def forward(ctx, plan, model, n_z, n_params, x_T, *tensors):
        with torch.no_grad(), ieee_float32():
            pair = reversible_pair(model, plan, x_T.detach())
        ctx.plan, ctx.model, ctx.n_z, ctx.n_params = plan, model, n_z, n_params
        ctx.save_for_backward(*pair, *tensors, *model_tensors(model))
        return pair[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x0):
        x0, x_hat_0, *saved = ctx.saved_tensors  # raises if z, θ or a model tensor changed in place
        plan, n_z = ctx.plan, ctx.n_z
        leaves = [zi.detach().requires_grad_(True) for zi in saved[:n_z]]
        params = saved[n_z:n_z + ctx.n_params]
        conditions = plan.conditions.with_inputs(leaves)
        grads_z = [torch.zeros_like(leaf) for leaf in leaves]
        grads_params = [torch.zeros_like(p) for p in params]
        increment, zeta, form, sde = _coupling(plan)
        model, schedule = ctx.model, plan.schedule
        k_T, k_0 = _scales(plan)
        v, v_hat = x0 / k_0, x_hat_0 / k_0
        a_v, a_v_hat = k_0 * grad_x0, torch.zeros_like(grad_x0)
        guard = FiniteGuard("reversible backward pass")

        def accumulate(step, v_rest, sign):
            if n_z:
                grads_z[step if conditions.per_step else 0].add_(sign * v_rest[0])
            for g, v in zip(grads_params, v_rest[1 if n_z else 0:]):
                g.add_(sign * v)

        with ieee_float32():
            for i, s, t, _, noise in reversed(list(_steps(plan))):
                z_i = conditions.at(i)
                inputs = ([z_i] if n_z else []) + list(params)
                # v̂_{i+1} = v̂_i − Ψ(t → s, v_{i+1})
                back, vjp_v, v_rest = _increment_vjp(increment, model, schedule, v, t, s, z_i, noise, form, sde,
                                                     a_v_hat, inputs, guard)
                v_hat_s = v_hat + back
                a_v = a_v - vjp_v
                accumulate(i, v_rest, -1.0)
                # v_{i+1} = ζ v_i + (1 − ζ) v̂_i + Ψ(s → t, v̂_i)
                fwd, vjp_v_hat, v_rest = _increment_vjp(increment, model, schedule, v_hat_s, s, t, z_i, noise, form,
                                                        sde, a_v, inputs, guard)
                v, v_hat = (v - (1.0 - zeta) * v_hat_s - fwd) / zeta, v_hat_s
                a_v_hat = a_v_hat + (1.0 - zeta) * a_v + vjp_v_hat
                a_v = zeta * a_v
                accumulate(i, v_rest, 1.0)
        guard.check()
        return (None, None, None, None, (a_v + a_v_hat) / k_T, *grads_z, *grads_params)
