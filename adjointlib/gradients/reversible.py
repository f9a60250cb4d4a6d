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
and its VJP: the exact gradient of this discrete sampler with O(1) memory.  Cost per step: 2 (Euler)
or 4 (midpoint) evaluations forwards, as many evaluations and VJPs backwards.  The error of the Euler
coupling behaves as O(h) + O((1 − ζ) h N): with N < 1/(1 − ζ) it has a floor ∝ (1 − ζ) rather than
order 1 (chapter 07).
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from ..models import call_model
from ..solvers import check_conditions, condition_at
from ..validation import check_noises, check_state

__all__ = [
    "euler_increment",
    "midpoint_increment",
    "reversible_step",
    "reversible_step_inverse",
    "reversible_solve",
    "reversible_unsolve",
    "reversible_sample",
    "coarse_noises",
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


def _prediction(model, form, x, t, z, alpha, sigma):
    """ε_θ(x, z, t) (form "noise") or x_θ = (x − σ ε_θ)/α (form "data").  (b, ...)."""
    eps = call_model(model, x, float(t), z)
    return eps if form == "noise" else (x - sigma * eps) / alpha


def euler_increment(model, schedule, v, s, t, z, noise=None, form="data", sde=False):
    """DDIM / SDE-DPM-Solver++1 (form "data") or DDIM / SDE-DPM-Solver-1 (form "noise", paper eq. 3.6)
    as explicit Euler(–Maruyama) in the form's frame v = x/κ (Lu et al. 2022, 2022b):

        v_t = v_s + (C_t − C_s) G(κ_s v_s, s) + sign(N_s − N_t) sqrt(|N_s − N_t|) ξ   (ξ = ``noise``, SDE only)

    with G = x_θ or ε_θ, returned as the increment v_t − v_s.  Either direction (s > t towards data;
    towards noise ξ enters as −ΔW).  v, ξ: (b, ...).
    """
    (k_s, c_s, n_s, a_s, sg_s), (_, c_t, n_t, _, _) = _frame(schedule, form, sde, s, t)
    out = (c_t - c_s) * _prediction(model, form, k_s * v, s, z, a_s, sg_s)
    if sde:
        if noise is None:
            raise ValueError("an SDE increment needs a noise tensor")
        out = out + math.copysign(math.sqrt(abs(n_s - n_t)), n_s - n_t) * noise
    return out


def midpoint_increment(model, schedule, v, s, t, z, noise=None, form="data", sde=False):
    """DPM-Solver++(2S) (form "data") or DPM-Solver-2 (form "noise"; Lu et al. 2022, Alg. 1, r₁ = ½),
    the exponential midpoint rule with λ_r = (λ_s + λ_t)/2, ODE only, in the form's frame:

        v_r = v_s + (C_r − C_s) G(κ_s v_s, s),   v_t = v_s + (C_t − C_s) G(κ_r v_r, r),

    returned as the increment v_t − v_s.  v: (b, ...).
    """
    lam = schedule.lam(torch.tensor([float(s), float(t)], dtype=torch.float64))
    r = float(schedule.t_of_lam(lam.mean()))
    (k_s, c_s, _, a_s, sg_s), (_, c_t, _, _, _), (k_r, c_r, _, a_r, sg_r) = _frame(schedule, form, False, s, t, r)
    v_r = v + (c_r - c_s) * _prediction(model, form, k_s * v, s, z, a_s, sg_s)
    return (c_t - c_s) * _prediction(model, form, k_r * v_r, r, z, a_r, sg_r)


INCREMENTS = {(1, False): euler_increment, (2, False): midpoint_increment, (1, True): euler_increment}


def reversible_step(increment, model, schedule, v, v_hat, s, t, z, noise, coupling, form="data", sde=False):
    """One McCallum–Foster step s → t (module doc).  Returns (v_t, v̂_t), each (b, ...)."""
    v_new = coupling * v + (1.0 - coupling) * v_hat + increment(model, schedule, v_hat, s, t, z, noise, form, sde)
    return v_new, v_hat - increment(model, schedule, v_new, t, s, z, noise, form, sde)


def reversible_step_inverse(increment, model, schedule, v, v_hat, s, t, z, noise, coupling, form="data", sde=False):
    """The exact inverse of ``reversible_step``: (v_t, v̂_t) → (v_s, v̂_s), each (b, ...)."""
    v_hat_s = v_hat + increment(model, schedule, v, t, s, z, noise, form, sde)
    v_s = (v - (1.0 - coupling) * v_hat_s - increment(model, schedule, v_hat_s, s, t, z, noise, form, sde)) / coupling
    return v_s, v_hat_s


def _checked_increment(x, z, times, order, sde, noises, coupling, form):
    check_state(x)
    steps = len(times) - 1
    check_conditions(z, x, steps)
    if (order, sde) not in INCREMENTS:
        raise ValueError(f"the reversible sampler has orders 1, 2 (ODE) and 1 (SDE); got order={order!r}, sde={sde}")
    if form not in ("data", "noise"):
        raise ValueError(f"form must be 'data' or 'noise', got {form!r}")
    if sde:
        check_noises(noises, steps, x)
    elif noises is not None:
        raise ValueError("noises were given but sde=False")
    if not 0.0 < coupling <= 1.0:
        raise ValueError(f"coupling ζ must lie in (0, 1], got {coupling!r}")
    return INCREMENTS[(order, sde)]


def _scales(schedule, form, sde, times):
    """κ at times[0] and times[-1] (the frame v = x/κ)."""
    (k_T, *_), (k_0, *_) = _frame(schedule, form, sde, times[0], times[-1])
    return k_T, k_0


def reversible_solve(model, schedule, x_T, z, times, *, order=1, sde=False, noises=None, coupling=0.999,
                     form="data"):
    """Run the reversible sampler from x_T along ``times``: the pair (x_0, x̂_0) = κ_0 (v_N, v̂_N).

    order 1: DDIM base (SDE: SDE-DPM-Solver(++)1 with ``noises`` (N, *x_T.shape)), order 2:
    exponential midpoint base; form "data" (default) or "noise" picks the frame (module doc).
    Differentiable by plain autograd unless run under ``torch.no_grad()``.
    x_T: (b, ...); z: None, (b, ...) or one tensor per step.  Returns two (b, ...) tensors.
    """
    increment = _checked_increment(x_T, z, times, order, sde, noises, coupling, form)
    k_T, k_0 = _scales(schedule, form, sde, times)
    v = v_hat = x_T / k_T
    for i in range(len(times) - 1):
        v, v_hat = reversible_step(increment, model, schedule, v, v_hat, times[i], times[i + 1], condition_at(z, i),
                                   noises[i] if sde else None, coupling, form, sde)
    return k_0 * v, k_0 * v_hat


@torch.no_grad()
def reversible_unsolve(model, schedule, x_0, x_hat_0, z, times, *, order=1, sde=False, noises=None, coupling=0.999,
                       form="data"):
    """Invert ``reversible_solve``: the pair (x_T, x̂_T) from (x_0, x̂_0), by exact inverse steps.

    Both returned tensors equal the x_T that produced (x_0, x̂_0), up to round-off.  Shapes (b, ...).
    """
    increment = _checked_increment(x_0, z, times, order, sde, noises, coupling, form)
    k_T, k_0 = _scales(schedule, form, sde, times)
    v, v_hat = x_0 / k_0, x_hat_0 / k_0
    for i in reversed(range(len(times) - 1)):
        v, v_hat = reversible_step_inverse(increment, model, schedule, v, v_hat, times[i], times[i + 1],
                                           condition_at(z, i), noises[i] if sde else None, coupling, form, sde)
    return k_T * v, k_T * v_hat


def _increment_vjp(config, v, s, t, z_i, noise, cotangent, inputs):
    """Ψ(s → t, v) without graph, and the VJPs (cotangentᵀ ∂Ψ/∂v, [cotangentᵀ ∂Ψ/∂p for p in inputs])."""
    with torch.enable_grad():
        v = v.detach().requires_grad_(True)
        out = config["increment"](config["model"], config["schedule"], v, s, t, z_i, noise, config["form"],
                                  config["sde"])
        grads = torch.autograd.grad(out, [v, *inputs], grad_outputs=cotangent, allow_unused=True)
    vjp_v, *v_rest = grads
    return out.detach(), vjp_v, [torch.zeros_like(p) if g is None else g for p, g in zip(inputs, v_rest)]


class _ReversibleSample(torch.autograd.Function):
    """inputs: (config, x_T, *z_tensors, *params) → x_0; backward: exact inverse steps + VJPs."""

    @staticmethod
    def forward(ctx, config, x_T, *tensors):
        with torch.no_grad():
            pair = reversible_solve(config["model"], config["schedule"], x_T.detach(), config["z"], config["times"],
                                    order=config["order"], sde=config["sde"], noises=config["noises"],
                                    coupling=config["coupling"], form=config["form"])
        ctx.config, ctx.pair = config, pair
        return pair[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_x0):
        config = ctx.config
        times, zeta, n_z = config["times"], config["coupling"], config["n_z"]
        leaves = [zi.detach().requires_grad_(True) for zi in config["z_tensors"]]
        z_leaf = (leaves if config["scheduled"] else leaves[0]) if n_z else config["z"]
        grads_z = [torch.zeros_like(leaf) for leaf in leaves]
        grads_params = [torch.zeros_like(p) for p in config["params"]]
        k_T, k_0 = _scales(config["schedule"], config["form"], config["sde"], times)
        v, v_hat = ctx.pair[0] / k_0, ctx.pair[1] / k_0
        a_v, a_v_hat = k_0 * grad_x0, torch.zeros_like(grad_x0)

        def accumulate(step, v_rest, sign):
            if n_z:
                grads_z[step if config["scheduled"] else 0].add_(sign * v_rest[0])
            for g, v in zip(grads_params, v_rest[1 if n_z else 0:]):
                g.add_(sign * v)

        for i in reversed(range(len(times) - 1)):
            s, t = times[i], times[i + 1]
            z_i, noise = condition_at(z_leaf, i), config["noises"][i] if config["sde"] else None
            inputs = ([z_i] if n_z else []) + list(config["params"])
            # v̂_{i+1} = v̂_i − Ψ(t → s, v_{i+1})
            back, vjp_v, v_rest = _increment_vjp(config, v, t, s, z_i, noise, a_v_hat, inputs)
            v_hat_s = v_hat + back
            a_v = a_v - vjp_v
            accumulate(i, v_rest, -1.0)
            # v_{i+1} = ζ v_i + (1 − ζ) v̂_i + Ψ(s → t, v̂_i)
            fwd, vjp_v_hat, v_rest = _increment_vjp(config, v_hat_s, s, t, z_i, noise, a_v, inputs)
            v, v_hat = (v - (1.0 - zeta) * v_hat_s - fwd) / zeta, v_hat_s
            a_v_hat = a_v_hat + (1.0 - zeta) * a_v + vjp_v_hat
            a_v = zeta * a_v
            accumulate(i, v_rest, 1.0)
        return (None, (a_v + a_v_hat) / k_T, *grads_z, *grads_params)


def reversible_sample(model, schedule, x_T, z, times, *, order=1, sde=False, noises=None, params=(), coupling=0.999,
                      form="data"):
    """x_0 of the reversible sampler (``reversible_solve``), differentiable with O(1) memory.

    The backward pass rebuilds (v_i, v̂_i) by ``reversible_step_inverse`` and back-propagates each
    step at once: the exact gradient of the discrete reversible sampler w.r.t. x_T, z (each z_i of a
    per-step schedule) and ``params``.  coupling: ζ (default 0.999, as Rex).  Returns x_0, (b, ...).
    """
    increment = _checked_increment(x_T, z, times, order, sde, noises, coupling, form)
    scheduled = isinstance(z, (list, tuple))
    z_tensors = [] if z is None else (list(z) if scheduled else [z])
    z_tensors = [zi for zi in z_tensors if zi.is_floating_point()]
    if len(z_tensors) and scheduled and len(z_tensors) != len(times) - 1:
        raise TypeError("a per-step z schedule must be all floating tensors")
    config = dict(model=model, schedule=schedule, times=times, order=order, sde=sde, noises=noises, z=z,
                  coupling=float(coupling), form=form, increment=increment, params=tuple(params),
                  z_tensors=z_tensors, n_z=len(z_tensors), scheduled=scheduled)
    return _ReversibleSample.apply(config, x_T, *z_tensors, *config["params"])


def coarse_noises(schedule, fine_times, fine_noises, times, form="data"):
    """The standard normals of a coarse grid that follow the Brownian path of fine-grid noises.

    Fine step k carries ξ_k; a coarse step s → t (a union of fine steps) gets
    ξ = Σ_k sqrt(ΔN_k) ξ_k / sqrt(ΔN) in the form's noise clock N (ν² = e^{−2λ} for "noise", as
    ``BrownianPath``; μ² = e^{2λ} for "data").  fine_noises: (N_fine, ...); times: a subset of
    fine_times.  Returns (N, ...).  The fine grid's own noises serve both clocks to O(fine step).
    """
    fine_times = torch.as_tensor(fine_times, dtype=torch.float64)
    sign = -2.0 if form == "noise" else 2.0
    clock = torch.exp(sign * schedule.lam(fine_times))
    weights = torch.sqrt((clock[1:] - clock[:-1]).abs()).to(fine_noises)
    cumulative = torch.cat([torch.zeros_like(fine_noises[:1]),
                            torch.cumsum(fine_noises * weights.view(-1, *[1] * (fine_noises.dim() - 1)), 0)])
    idx = [int(torch.argmin((fine_times - float(t)).abs())) for t in times]
    if any(abs(float(fine_times[i]) - float(t)) > 1e-9 * max(1.0, abs(float(t))) for i, t in zip(idx, times)):
        raise ValueError("times must be a subset of fine_times")
    return torch.stack([(cumulative[b] - cumulative[a]) / math.sqrt(abs(float(clock[b] - clock[a])))
                        for a, b in zip(idx[:-1], idx[1:])])
